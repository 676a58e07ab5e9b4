"""Latency features and the LatencyPredictor: physics-shaped features, recovery of a known latency law,
transfer to a new device, the modeled fallback, JSON round trip and held-out evaluation."""

import itertools
import json

import numpy as np
import pytest
from torch import nn

from crossrec.errors import ConfigError
from crossrec.hardware import estimate, get_device, model_flops
from crossrec.hardware.collect import random_specs, spec_key
from crossrec.hardware.features import (
    FEATURE_NAMES,
    TERMS,
    CompressionChoice,
    features,
    linear_layers,
)
from crossrec.hardware.predictor import (
    BLOCKS,
    LatencyPrediction,
    LatencyPredictor,
    evaluate_predictor,
    nnls,
    split_by_spec,
    synthetic_record,
)
from crossrec.models import ModelSpec, TableSpec, build

CPU = "epyc-zen5-2vcpu"
CHOICES = [CompressionChoice.parse(c) for c in ("fp32/fp32", "int8/bf16", "int4/int8", "fp16/fp32")]
SPECS = list(random_specs(48, seed=11, max_rows=50_000, max_table_bytes=2**24))


def spec(top=(64, 32), tables=6, dim=16, **kw):
    base = dict(num_dense=13, tables=tuple(TableSpec(name=f"C{i}", num_embeddings=1000) for i in range(tables)),
                embedding_dim=dim, bottom_mlp=(64, dim), top_mlp=top)
    base.update(kw)
    return ModelSpec(**base)


# A known latency law (ms per unit): per-op overheads, compute at precision-dependent rates, memory traffic.
LAW = {"calls": 0.04, "linear_fp32": 0.008, "linear_bf16": 0.010, "linear_int8": 0.015, "lookup_groups": 0.012,
       "inter_dot": 0.02, "inter_cross": 0.01, "inter_fm": 0.03, "flops_fp32": 1 / 150e6, "flops_bf16": 1 / 400e6,
       "flops_int8": 1 / 600e6, "emb_bytes_fp32": 1 / 8e6, "emb_bytes_fp16": 1 / 8e6, "emb_bytes_int8": 1 / 6e6,
       "emb_rows_int4": 4e-6, "emb_bytes_int4": 1 / 5e6, "weight_bytes_fp32": 1 / 20e6, "weight_bytes_bf16": 1 / 20e6,
       "weight_bytes_int8": 1 / 15e6, "act_fp32": 1 / 2e6, "act_bf16": 1 / 2e6, "act_int8": 1 / 1e6}


def law_latency(s, c, b, law=LAW):
    f = features(s, c, b)
    return sum(w * f[t] for t, w in law.items())


def law_records(specs, device, law=LAW, noise=0.0, seed=0, batch_sizes=(1, 64, 512), catalog_device=None):
    rng = np.random.default_rng(seed)
    return [synthetic_record(s, c, b, device, law_latency(s, c, b, law) * (1 + noise * rng.standard_normal()),
                             catalog_device=catalog_device)
            for s in specs for c in CHOICES for b in batch_sizes]


# -- features -------------------------------------------------------------------------------------------------


def test_features_are_deterministic_complete_and_non_negative():
    for s, c in itertools.product(SPECS[:10], CHOICES):
        f = features(s, c, 64)
        assert list(f) == list(FEATURE_NAMES) and f == features(s, c, 64)
        assert all(v >= 0 for v in f.values())
    assert set(TERMS) == {t for terms in BLOCKS.values() for t in terms}


@pytest.mark.parametrize("s", [*SPECS[:16], spec(interaction="lr", bottom_mlp=()),
                               spec(interaction="fm", top_mlp=()),
                               spec(tables=0, num_dense=4, bottom_mlp=(8,), interaction="concat"),
                               spec(interaction="dot", tables=3, dim=8, bottom_mlp=(8,), top_mlp=(4,)).__class__(
                                   num_dense=2, tables=(TableSpec(name="a", num_embeddings=9, dim=4),
                                                        TableSpec(name="b", num_embeddings=9)),
                                   embedding_dim=8, bottom_mlp=(8,), top_mlp=(4,))],
                         ids=lambda s: s.name)
def test_linear_layers_match_the_built_model(s):
    model = build(s)
    built = sorted((m.in_features, m.out_features) for m in model.modules() if isinstance(m, nn.Linear))
    assert sorted((i, o) for i, o, _ in linear_layers(s)) == built


def test_matmul_flops_agree_with_model_flops():
    for s in SPECS[:20]:
        f = features(s, CompressionChoice(), 1)
        extra = {"dot": f["dot_flops_fp32"], "cross": 2 * s.cross_layers * (
            (s.bottom_mlp[-1] if s.bottom_mlp else s.num_dense) + sum(s.dims())), "fm": 3 * (len(s.tables) + 1)
                 * s.embedding_dim, "concat": 0}[s.interaction]
        assert f["flops_fp32"] + extra == pytest.approx(sum(model_flops(s).values())), s.name


def test_features_grow_with_the_work():
    small, wide = features(spec(top=(64, 32)), CompressionChoice(), 64), features(spec(top=(256, 32)),
                                                                                 CompressionChoice(), 64)
    assert wide["flops_fp32"] > small["flops_fp32"] and wide["weight_bytes_fp32"] > small["weight_bytes_fp32"]
    assert all(wide[t] >= small[t] for t in TERMS)
    more = features(spec(tables=12), CompressionChoice(), 64)
    assert more["emb_bytes_fp32"] == 2 * small["emb_bytes_fp32"] and more["dot_flops_fp32"] > small["dot_flops_fp32"]
    big_batch = features(spec(), CompressionChoice(), 512)
    assert big_batch["flops_fp32"] == 8 * small["flops_fp32"] and big_batch["calls"] == small["calls"]


def test_compression_moves_work_between_precisions():
    fp32 = features(spec(), CompressionChoice(), 64)
    q = features(spec(), CompressionChoice.parse("int8/bf16"), 64)
    assert q["emb_bytes_int8"] == 64 * 6 * (16 + 8) and q["emb_bytes_fp32"] == 0
    assert fp32["emb_bytes_fp32"] == 64 * 6 * 64
    assert q["flops_bf16"] == fp32["flops_fp32"] and q["flops_fp32"] == 0
    assert q["weight_bytes_bf16"] < fp32["weight_bytes_fp32"] and q["dot_flops_bf16"] == fp32["dot_flops_fp32"]
    mixed = features(spec(), CompressionChoice(embedding_precision={"C0": "int4"}), 64)
    assert mixed["lookup_groups"] == 2 and mixed["multi_group"] == 1 and mixed["emb_rows_int4"] == 64


def test_roofline_prior_is_the_estimate():
    s, c = spec(), CompressionChoice.parse("int8/bf16")
    f = features(s, c, 64, device=get_device(CPU))
    assert f["roofline_ms"] == estimate(s, get_device(CPU), 64, embedding_precision="int8",
                                        dense_precision="bf16").latency_ms > 0
    assert features(s, c, 64)["roofline_ms"] == 0


# -- CompressionChoice ----------------------------------------------------------------------------------------


def test_choice_round_trips_and_checks():
    c = CompressionChoice(embedding_precision={"C1": "int4", "C2": "int8"}, dense_precision="int8")
    assert CompressionChoice.from_json(c.to_json()) == c and c.label == "mixed(C1=int4,C2=int8)/int8"
    assert CompressionChoice.parse("int8") == CompressionChoice(embedding_precision="int8")
    with pytest.raises(ConfigError, match="dense_precision"):
        CompressionChoice(dense_precision="fp16")
    with pytest.raises(ConfigError, match="embedding_precision"):
        CompressionChoice(embedding_precision="int3")
    with pytest.raises(ConfigError, match="table names"):
        CompressionChoice(embedding_precision={"nope": "int8"}).precisions_for(spec())
    with pytest.raises(ConfigError, match="dim % 4"):
        CompressionChoice(embedding_precision="int2").precisions_for(spec(dim=6, bottom_mlp=(6,)))


def test_choice_configs_build_the_same_model_as_apply():
    from crossrec.compress import DenseQuantConfig, EmbeddingQuantConfig, compress_

    for c in (*CHOICES, CompressionChoice(embedding_precision={"C0": "int4"}, dense_precision="bf16")):
        configs = c.to_configs()
        assert all(isinstance(x, (EmbeddingQuantConfig, DenseQuantConfig)) for x in configs)
        via_compress = build(spec(), seed=0)
        for cfg in configs:
            compress_(via_compress, cfg)
        direct = c.apply_(build(spec(), seed=0))
        assert [type(m).__name__ for m in direct.modules()] == [type(m).__name__ for m in via_compress.modules()]
        assert direct.compute_dtype == via_compress.compute_dtype
    assert CompressionChoice().to_configs() == []


# -- nnls -----------------------------------------------------------------------------------------------------


def test_nnls_matches_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(30):
        a, b = rng.standard_normal((8, 4)), rng.standard_normal(8)
        best = min((np.linalg.norm(a[:, list(s)] @ x - b), s) for k in range(5) for s in itertools.combinations(
            range(4), k) for x in [np.linalg.lstsq(a[:, list(s)], b, rcond=None)[0] if s else np.zeros(0)]
            if (x >= 0).all())
        x = nnls(a, b)
        assert (x >= 0).all() and np.linalg.norm(a @ x - b) == pytest.approx(best[0], abs=1e-9)


# -- fitting a known law --------------------------------------------------------------------------------------


def test_fit_recovers_a_known_law_on_unseen_architectures():
    train, test = SPECS[:36], SPECS[36:]
    pred = LatencyPredictor().fit(law_records(train, "toy", noise=0.02))
    ev = evaluate_predictor(pred, law_records(test, "toy"))
    assert ev["within_10pct"] >= 0.95 and ev["mape"] < 0.04, ev
    assert set(ev["per_batch_size"]) == {"1", "64", "512"} and ev["sources"] == {"predicted": ev["n"]}
    w = pred.models["toy"].weights
    for term in ("flops_fp32", "flops_bf16", "flops_int8"):  # dominant, well-identified terms come back
        assert w.get(term, 0) == pytest.approx(LAW[term], rel=0.15), term
    for kind in ("dot", "cross", "fm"):  # the fixed cost of a call (calls and inter_* sum to it: one-hot kinds)
        fixed = w.get("calls", 0) + w.get(f"inter_{kind}", 0)
        assert fixed == pytest.approx(LAW["calls"] + LAW[f"inter_{kind}"], rel=0.25), kind
    m = pred.models["toy"]
    assert (m.method, m.records, m.specs, m.sources) == ("fit", 36 * 4 * 3, 36, ("synthetic",))


def test_predictions_are_monotone_in_the_work():
    pred = LatencyPredictor().fit(law_records(SPECS[:36], "toy", noise=0.02))

    def lat(s, b=64):
        return pred.predict(s, CompressionChoice(), "toy", b).latency_ms

    assert lat(spec(top=(64, 32))) < lat(spec(top=(256, 32))) < lat(spec(top=(256, 256, 32)))
    assert lat(spec(tables=6)) < lat(spec(tables=12))
    assert lat(spec(), 1) < lat(spec(), 64) < lat(spec(), 512)
    p = pred.predict(spec(), CompressionChoice(), "toy", 64)
    assert p.samples_per_s == pytest.approx(64 / p.latency_ms * 1e3) and p.source == "predicted"


def test_transfer_with_a_few_points_beats_the_unadapted_model():
    # Device B: per-op overheads halve, compute is 3x slower, memory 1.5x slower than on A.
    law_b = {t: w * (0.5 if t in BLOCKS["overhead"] else 3.0 if t in BLOCKS["compute"] else 1.5)
             for t, w in LAW.items()}
    few = law_records(SPECS[36:38], "dev-b", law_b)[:8]
    pred = LatencyPredictor().fit(law_records(SPECS[:30], "dev-a") + few)
    m = pred.models["dev-b"]
    assert (m.method, m.base, m.records) == ("transfer", "dev-a", 8)
    held_out = law_records(SPECS[40:], "dev-b", law_b)
    transfer = evaluate_predictor(pred, held_out)
    as_a = [synthetic_record(r.spec, r.choice, r.batch_size, "dev-a", r.p50_ms) for r in held_out]
    unadapted = evaluate_predictor(pred, as_a)
    assert transfer["mape"] < 0.5 * unadapted["mape"] and transfer["within_10pct"] > unadapted["within_10pct"]
    assert pred.predict(SPECS[40], CHOICES[0], "dev-b", 64).method == "transfer from dev-a"
    # adapt() brings in a device without touching the fitted ones
    before = pred.models["dev-a"]
    pred.adapt(law_records(SPECS[38:40], "dev-c", law_b)[:4])
    assert pred.models["dev-a"] == before and pred.models["dev-c"].method == "transfer"


def test_transfer_to_a_device_without_catalog_entry_keeps_the_roofline_term():
    dev = get_device(CPU)

    def y(s, c, b, k=1.0):
        return k * (0.02 + 3.0 * features(s, c, b, device=dev)["roofline_ms"])

    base = [synthetic_record(s, c, b, "a", y(s, c, b), catalog_device=CPU) for s in SPECS[:12] for c in CHOICES
            for b in (1, 64, 512)]
    few = [synthetic_record(s, c, b, "b", y(s, c, b, 2.0)) for s in SPECS[12:14] for c in CHOICES[:2] for b in (1, 512)]
    pred = LatencyPredictor().fit(base + few)
    assert pred.models["b"].method == "transfer" and pred.models["b"].prior_device == CPU
    for s in SPECS[40:44]:
        assert pred.predict(s, CHOICES[1], "b", 64).latency_ms == pytest.approx(y(s, CHOICES[1], 64, 2.0), rel=0.05)


def test_few_records_and_nothing_to_transfer_from_calibrate_the_roofline():
    dev = get_device(CPU)

    def y(s, c, b):
        return 0.03 + 2.5 * features(s, c, b, device=dev)["roofline_ms"]

    recs = [synthetic_record(s, c, b, "cpu-x", y(s, c, b), catalog_device=CPU)
            for s in SPECS[:3] for c in CHOICES[:2] for b in (1, 512)]
    pred = LatencyPredictor().fit(recs)
    assert pred.models["cpu-x"].method == "calibrated roofline"
    s, c = SPECS[5], CHOICES[1]
    p = pred.predict(s, c, "cpu-x", 64)
    assert p.source == "predicted" and p.latency_ms == pytest.approx(y(s, c, 64), rel=0.01)
    with pytest.raises(ConfigError, match="no catalog entry"):
        LatencyPredictor().fit([synthetic_record(s, c, 1, "mystery", 1.0)])


def test_no_records_falls_back_to_the_roofline_labelled_modeled():
    pred = LatencyPredictor().fit(law_records(SPECS[:6], "toy", batch_sizes=(1, 64)))
    s, c = spec(), CompressionChoice.parse("int8/bf16")
    p = pred.predict(s, c, "a100-sxm-80gb", 256)
    e = estimate(s, get_device("a100-sxm-80gb"), 256, embedding_precision="int8", dense_precision="bf16")
    assert (p.source, p.method, p.latency_ms) == ("modeled", "roofline", e.latency_ms)
    with pytest.raises(ConfigError, match="learned devices: \\['toy'\\]"):
        pred.predict(s, c, "no-such-device", 1)


def test_target_min_learns_the_fastest_call():
    import dataclasses

    recs = [dataclasses.replace(r, min_ms=r.p50_ms / 2) for r in law_records(SPECS[:30], "toy")]
    fast = LatencyPredictor(target="min_ms").fit(recs)
    median = LatencyPredictor().fit(recs)
    p, q = fast.predict(SPECS[40], CHOICES[0], "toy", 64), median.predict(SPECS[40], CHOICES[0], "toy", 64)
    assert p.latency_ms == pytest.approx(q.latency_ms / 2, rel=0.05) and p.statistic == "min_ms"
    assert evaluate_predictor(fast, recs)["within_10pct"] == 1.0
    assert LatencyPredictor.from_dict(fast.to_dict()).target == "min_ms"
    with pytest.raises(ConfigError, match="target"):
        LatencyPredictor(target="p90_ms")


def test_records_of_one_device_must_share_a_thread_count():
    recs = law_records(SPECS[:2], "toy", batch_sizes=(1,))
    other = [synthetic_record(r.spec, r.choice, 2, "toy", 1.0, threads=2) for r in recs[:1]]
    with pytest.raises(ConfigError, match="one thread count per device label"):
        LatencyPredictor().fit(recs + other)


# -- persistence and evaluation -------------------------------------------------------------------------------


def test_save_load_round_trip(tmp_path):
    few = law_records(SPECS[36:37], "dev-b")[:6]
    pred = LatencyPredictor().fit(law_records(SPECS[:30], "dev-a") + few)
    path = pred.save(tmp_path / "pred.json")
    loaded = LatencyPredictor.load(path)
    assert loaded.models == pred.models and loaded.to_dict() == pred.to_dict()
    for s, dev in itertools.product(SPECS[40:44], ("dev-a", "dev-b", CPU)):
        assert loaded.predict(s, CHOICES[1], dev, 64) == pred.predict(s, CHOICES[1], dev, 64)
    assert LatencyPrediction.from_json(pred.predict(s, CHOICES[1], "dev-a", 8).to_json()).device == "dev-a"
    data = json.loads(path.read_text())
    with pytest.raises(ConfigError, match=r"unknown terms \['flops_int3'\]\); refit"):
        LatencyPredictor.from_dict({**data, "terms": [*data["terms"], "flops_int3"]})
    with pytest.raises(ConfigError, match="version 0.*refit"):
        LatencyPredictor.from_dict({**data, "version": 0})
    with pytest.raises(ConfigError, match="not a saved LatencyPredictor"):
        LatencyPredictor.from_dict({"devices": {}})
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ConfigError, match="not JSON"):
        LatencyPredictor.load(tmp_path / "bad.json")
    with pytest.raises(ConfigError, match="does not exist"):
        LatencyPredictor.load(tmp_path / "absent.json")


def test_split_by_spec_never_shares_an_architecture():
    recs = law_records(SPECS[:20], "toy", batch_sizes=(1, 8))
    train, test = split_by_spec(recs, 0.25, seed=1)
    assert len(train) + len(test) == len(recs)
    assert not {spec_key(r.spec) for r in train} & {spec_key(r.spec) for r in test}
    assert len({spec_key(r.spec) for r in test}) == 5
    assert split_by_spec(recs, 0.25, seed=1) == (train, test)


def test_evaluate_counts_within_ten_percent():
    s = spec()
    pred = LatencyPredictor(min_fit_records=2, min_fit_specs=1).fit(
        [synthetic_record(s, CompressionChoice(), b, "toy", 1.0 + 0.01 * b) for b in (1, 100)])
    truth = pred.predict(s, CompressionChoice(), "toy", 50).latency_ms
    recs = [synthetic_record(s, CompressionChoice(), 50, "toy", truth * k) for k in (1.0, 1.05, 0.8, 1.5)]
    ev = evaluate_predictor(pred, recs)
    assert ev["within_10pct"] == 0.5 and ev["n"] == 4
    assert ev["mape"] == pytest.approx(np.mean([0, 1 - 1 / 1.05, 0.25, 1 - 1 / 1.5]))


# -- int8-static (issue #4) ----------------------------------------------------------------------------------

STATIC = CompressionChoice.parse("int8/int8-static")
LAW_STATIC = {**LAW, "linear_int8_static": 0.006, "flops_int8_static": 1 / 1200e6, "act_int8_static": 1 / 4e6,
              "weight_bytes_int8_static": 1 / 15e6}


def test_a_fit_without_int8_static_records_models_it_instead_of_calling_it_free():
    pred = LatencyPredictor().fit(law_records(SPECS[:30], "toy", catalog_device=CPU))
    assert pred.models["toy"].dense_precisions == ("fp32", "bf16", "int8")
    p = pred.predict(SPECS[40], STATIC, "toy", 64)
    e = estimate(SPECS[40], get_device(CPU), 64, embedding_precision="int8", dense_precision="int8-static")
    assert (p.source, p.method, p.latency_ms) == ("modeled", "roofline (no int8-static measurements)", e.latency_ms)
    assert pred.predict(SPECS[40], CHOICES[2], "toy", 64).source == "predicted"
    blind = LatencyPredictor().fit(law_records(SPECS[:6], "toy"))  # no catalog entry: nothing to model it with
    with pytest.raises(ConfigError, match="fitted without 'int8-static'.*collect records with int8-static"):
        blind.predict(SPECS[40], STATIC, "toy", 64)


def test_int8_static_records_teach_the_predictor_its_terms():
    def recs(specs):
        return [synthetic_record(s, c, b, "toy", law_latency(s, c, b, LAW_STATIC))
                for s in specs for c in (*CHOICES, STATIC) for b in (1, 64, 512)]

    pred = LatencyPredictor().fit(recs(SPECS[:30]))
    assert "int8-static" in pred.models["toy"].dense_precisions
    ev = evaluate_predictor(pred, [r for r in recs(SPECS[40:]) if r.choice == STATIC])
    assert ev["sources"] == {"predicted": ev["n"]} and ev["within_10pct"] >= 0.9, ev
    assert pred.models["toy"].weights.get("flops_int8_static", 0) == pytest.approx(LAW_STATIC["flops_int8_static"],
                                                                                  rel=0.25)


def test_a_predictor_saved_before_int8_static_still_loads(tmp_path):
    pred = LatencyPredictor().fit(law_records(SPECS[:30], "toy", catalog_device=CPU))
    old = pred.to_dict()
    # what crossrec wrote before issue #4's int8-static: its term list, no dense_precisions per device
    old["terms"] = [t for t in old["terms"] if "int8_static" not in t]
    for m in old["devices"].values():
        del m["dense_precisions"]
    (tmp_path / "old.json").write_text(json.dumps(old))
    loaded = LatencyPredictor.load(tmp_path / "old.json")
    for c in CHOICES:
        assert loaded.predict(SPECS[40], c, "toy", 64) == pred.predict(SPECS[40], c, "toy", 64)
    p = loaded.predict(SPECS[40], STATIC, "toy", 64)
    assert p.source == "modeled" and "no int8-static" in p.method
    assert loaded.to_dict()["terms"] == old["terms"]  # saved again, it still says what it was fitted with
    assert loaded.fit(law_records(SPECS[:6], "toy")).terms == TERMS  # a refit uses every term


# -- runtimes: eager and script records are fitted apart --------------------------------------------------------

# TorchScript drops most per-op Python dispatch: the same machine with a third of the overheads.
LAW_SCRIPT = {t: w / 3 if t in BLOCKS["overhead"] else w for t, w in LAW.items()}


def runtime_records(specs, device, runtime, law, batch_sizes=(1, 64, 512), catalog_device=None):
    return [synthetic_record(s, c, b, device, law_latency(s, c, b, law), runtime=runtime,
                             catalog_device=catalog_device) for s in specs for c in CHOICES for b in batch_sizes]


def test_each_runtime_gets_its_own_fit_on_one_device():
    eager = runtime_records(SPECS[:30], "toy", "eager", LAW)
    script = runtime_records(SPECS[:30], "toy", "script", LAW_SCRIPT)
    pred = LatencyPredictor().fit(eager + script)
    assert set(pred.models) == {"toy", "toy@script"}
    m = pred.models["toy@script"]
    assert (m.device, m.runtime, m.method, m.records) == ("toy", "script", "fit", len(script))
    assert pred.models["toy"].runtime == "eager"
    # each recovers its own law, where one fit over both records misses at least one of them
    mixed = LatencyPredictor().fit(eager + [synthetic_record(r.spec, r.choice, r.batch_size, "toy", r.p50_ms)
                                            for r in script])
    for runtime, law in (("eager", LAW), ("script", LAW_SCRIPT)):
        ev = evaluate_predictor(pred, runtime_records(SPECS[40:], "toy", runtime, law))
        assert ev["within_10pct"] >= 0.9 and ev["sources"] == {"predicted": ev["n"]}, (runtime, ev)
    assert min(evaluate_predictor(mixed, runtime_records(SPECS[40:], "toy", "eager", law))["within_10pct"]
               for law in (LAW, LAW_SCRIPT)) < 0.7
    s, c = SPECS[40], CHOICES[0]
    p_eager, p_script = pred.predict(s, c, "toy", 1), pred.predict(s, c, "toy", 1, runtime="script")
    assert p_script.latency_ms < p_eager.latency_ms and (p_script.runtime, p_eager.runtime) == ("script", "eager")
    assert pred.predict(s, c, "toy", 1, runtime="eager") == p_eager  # the default runtime is eager
    # a predictor fitted on the eager records alone predicts eager exactly as before
    assert LatencyPredictor().fit(eager).predict(s, c, "toy", 1) == p_eager
    # thread counts are checked per device and runtime, not across them
    other = [synthetic_record(r.spec, r.choice, r.batch_size, "toy", r.p50_ms, threads=2, runtime="script")
             for r in script]
    assert set(LatencyPredictor().fit(eager + other).models) == {"toy", "toy@script"}


def test_a_runtime_without_records_falls_back_to_the_roofline_labelled():
    pred = LatencyPredictor().fit(runtime_records(SPECS[:8], CPU, "eager", LAW, batch_sizes=(1, 64)))
    s, c = spec(), CompressionChoice.parse("int8/bf16")
    p = pred.predict(s, c, CPU, 64, runtime="script")
    e = estimate(s, get_device(CPU), 64, embedding_precision="int8", dense_precision="bf16")
    assert (p.source, p.method, p.latency_ms, p.runtime) == ("modeled", "roofline (no script measurements)",
                                                             e.latency_ms, "script")
    assert pred.predict(s, c, CPU, 64).source == "predicted"
    # a device measured on nothing: the roofline, exactly as for eager
    q = pred.predict(s, c, "a100-sxm-80gb", 64, runtime="script")
    assert (q.source, q.method) == ("modeled", "roofline")
    # a label that is no catalog name takes the catalog entry its eager records named
    mine = LatencyPredictor().fit(runtime_records(SPECS[:8], "my-box", "eager", LAW, batch_sizes=(1, 64),
                                                  catalog_device=CPU))
    assert mine.predict(s, c, "my-box", 64, runtime="script").latency_ms == e.latency_ms
    bare = LatencyPredictor().fit(runtime_records(SPECS[:8], "toy", "eager", LAW, batch_sizes=(1, 64)))
    with pytest.raises(ConfigError, match=r"no script measurements .*'toy' \(measured on \['eager'\] only\).*"
                                          r"--runtime script"):
        bare.predict(s, c, "toy", 64, runtime="script")


def test_few_script_records_transfer_from_the_eager_fit():
    few = runtime_records(SPECS[36:38], "toy", "script", LAW_SCRIPT)[:8]
    pred = LatencyPredictor().fit(runtime_records(SPECS[:30], "toy", "eager", LAW) + few)
    m = pred.models["toy@script"]
    assert (m.method, m.base, m.runtime, m.records) == ("transfer", "toy", "script", 8)
    assert m.scales["overhead"] < m.scales["compute"]  # what the runtime changes is the per-op overhead
    held_out = runtime_records(SPECS[40:], "toy", "script", LAW_SCRIPT)
    transfer = evaluate_predictor(pred, held_out)
    as_eager = evaluate_predictor(pred, [synthetic_record(r.spec, r.choice, r.batch_size, "toy", r.p50_ms)
                                         for r in held_out])
    assert transfer["mape"] < 0.5 * as_eager["mape"]
    assert pred.predict(SPECS[40], CHOICES[0], "toy", 64, runtime="script").method == "transfer from toy"
    before = pred.models["toy"]  # adapt() by runtime leaves the eager fit alone
    pred.adapt(runtime_records(SPECS[38:40], "toy", "script", LAW_SCRIPT)[:6])
    assert pred.models["toy"] == before and pred.models["toy@script"].records == 6


def test_runtimes_survive_save_and_a_predictor_saved_before_them_loads(tmp_path):
    recs = runtime_records(SPECS[:30], "toy", "eager", LAW) + runtime_records(SPECS[:30], "toy", "script",
                                                                              LAW_SCRIPT)
    pred = LatencyPredictor().fit(recs)
    loaded = LatencyPredictor.load(pred.save(tmp_path / "pred.json"))
    assert loaded.models == pred.models
    for runtime in ("eager", "script"):
        assert loaded.predict(SPECS[41], CHOICES[1], "toy", 64, runtime=runtime) == \
            pred.predict(SPECS[41], CHOICES[1], "toy", 64, runtime=runtime)
    # what crossrec wrote before runtimes were recorded: devices keyed by label, no runtime per device
    eager = LatencyPredictor().fit(recs[: len(recs) // 2])
    old = eager.to_dict()
    for m in old["devices"].values():
        del m["runtime"]
    (tmp_path / "old.json").write_text(json.dumps(old))
    was = LatencyPredictor.load(tmp_path / "old.json")
    assert was.models["toy"].runtime == "eager" and was.models == eager.models
    assert was.predict(SPECS[41], CHOICES[1], "toy", 64) == eager.predict(SPECS[41], CHOICES[1], "toy", 64)
    with pytest.raises(ConfigError, match="no script measurements"):
        was.predict(SPECS[41], CHOICES[1], "toy", 64, runtime="script")
