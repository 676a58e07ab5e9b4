"""collect(): JSONL latency records, resumable; random_specs(): a diverse, valid, bounded architecture space."""

import json
from itertools import count

import numpy as np
import pytest
import torch

from crossrec.errors import ConfigError, DataError
from crossrec.hardware.collect import (
    DEFAULT_CHOICES,
    ProfileRecord,
    calibration_rows,
    collect,
    random_specs,
    read_records,
    record_key,
    run_profile,
    sample_choices,
    spec_key,
)
from crossrec.hardware.features import CompressionChoice
from crossrec.models import ModelSpec, TableSpec

FP32, INT8_BF16 = CompressionChoice(), CompressionChoice.parse("int8/bf16")


def tiny(name="a", dim=4, top=(8,)):
    return ModelSpec(num_dense=2, tables=(TableSpec(name="t0", num_embeddings=30), TableSpec(name="t1",
                     num_embeddings=7)), embedding_dim=dim, bottom_mlp=(dim,), top_mlp=top, name=name)


def fake_clock(step_s=0.001):
    """Every reading advances 1 ms: each timed call then measures exactly 1 ms."""
    ticks = count()
    return lambda: next(ticks) * step_s


FAST = dict(repeats=3, warmup=0, min_time_s=0.0)


def test_collect_writes_one_record_per_point(tmp_path):
    out = tmp_path / "lat.jsonl"
    recs = collect([tiny("a"), tiny("b", top=(16, 8))], [FP32, INT8_BF16], [1, 4], out=out, threads=1,
                   device_label="dev-cpu", clock=fake_clock(), **FAST)
    assert len(recs) == 8 and len(out.read_text().splitlines()) == 8
    assert {(r.spec.name, r.choice.label, r.batch_size) for r in recs} == \
        {(s, c, b) for s in "ab" for c in ("fp32/fp32", "int8/bf16") for b in (1, 4)}
    r = recs[0]
    assert (r.device, r.threads, r.source, r.repeats) == ("dev-cpu", 1, "measured", 3)
    assert r.p50_ms == pytest.approx(1.0) and r.samples_per_s == pytest.approx(r.batch_size * 1000.0)
    assert r.interleaved_with == ("int8/bf16",)  # the variants of one spec were measured round-robin
    assert read_records(out) == recs  # JSONL round trip, spec and choice included
    assert r.key == record_key(r.spec, r.choice, r.batch_size, "dev-cpu", 1)


def test_collect_resumes_and_only_measures_what_is_missing(tmp_path):
    out = tmp_path / "lat.jsonl"
    collect([tiny("a")], [FP32], [1], out=out, threads=1, **FAST)
    said = []
    again = collect([tiny("a"), tiny("b", dim=8)], [FP32], [1, 2], out=out, threads=1, progress=said.append, **FAST)
    lines = out.read_text().splitlines()
    assert len(again) == 4 and len(lines) == 4  # (a, 1) was reused, three points were new
    assert len({json.loads(line)["key"] for line in lines}) == 4
    assert len(said) == 2  # one line per measured spec
    said.clear()
    assert len(collect([tiny("a"), tiny("b", dim=8)], [FP32], [1, 2], out=out, threads=1, progress=said.append,
                       **FAST)) == 4
    assert said == [] and len(out.read_text().splitlines()) == 4  # nothing left to measure
    # another thread count is another measurement
    collect([tiny("a")], [FP32], [1], out=out, threads=2, **FAST)
    assert len(out.read_text().splitlines()) == 5


def test_collect_skips_choices_a_spec_cannot_take_and_accepts_a_function():
    said = []
    odd = ModelSpec(num_dense=0, tables=(TableSpec(name="x", num_embeddings=9),), embedding_dim=3, bottom_mlp=(),
                    top_mlp=(4,), interaction="concat", name="odd")
    recs = collect([odd], lambda spec: [FP32, CompressionChoice(embedding_precision="int4")], [2],
                   progress=said.append, **FAST)
    assert [r.choice.label for r in recs] == ["fp32/fp32"]
    assert "skip odd int4/fp32" in said[0] and "dim % 2" in said[0]


def test_read_records_names_a_bad_line(tmp_path):
    out = tmp_path / "lat.jsonl"
    collect([tiny()], [FP32], [1], out=out, **FAST)
    with open(out, "a") as f:
        f.write('{"key": "x"}\n')
    with pytest.raises(DataError, match=r"lat.jsonl:2: not a ProfileRecord"):
        read_records(out)
    assert read_records(tmp_path / "absent.jsonl") == []


def test_read_records_reads_gzipped_files_and_collect_refuses_to_append_to_one(tmp_path):
    import gzip

    out = tmp_path / "lat.jsonl"
    recs = collect([tiny()], [FP32], [1, 2], out=out, clock=fake_clock(), **FAST)
    packed = tmp_path / "lat.jsonl.gz"
    packed.write_bytes(gzip.compress(out.read_bytes()))
    assert read_records(packed) == recs
    with pytest.raises(ConfigError, match=r"collect.out .*\.gz files are read-only"):
        collect([tiny()], [FP32], [1], out=packed, **FAST)


def test_collect_off_the_cpu_skips_every_choice_with_a_cpu_only_kernel(monkeypatch):
    import importlib

    collect_mod = importlib.import_module("crossrec.hardware.collect")  # the package exports a function of that name
    # the device checks pass as on a GPU machine; every choice here is skipped before anything is built or moved
    monkeypatch.setattr(collect_mod, "_environment", lambda *_a: ("gpu-x", None, "Some GPU"))
    said = []
    choices = [CompressionChoice.parse(c) for c in ("int8/bf16", "fp32/int8", "int4/fp32", "fp32/int8-static")]
    assert collect([tiny()], choices, [1], device="cuda", progress=said.append, **FAST) == []
    assert len(said) == 4 and all("CPU kernels only, not on cuda" in m for m in said)
    assert "table t0 (int8 row-wise)" in said[0] and "dense int8" in said[1] and "dense int8-static" in said[3]


def test_record_checks_its_fields():
    good = collect([tiny()], [FP32], [1], **FAST)[0]
    assert ProfileRecord.from_json(good.to_json()) == good
    with pytest.raises(ConfigError, match="p50_ms"):
        ProfileRecord.from_dict({**good.to_dict(), "p50_ms": 0.0})
    with pytest.raises(ConfigError, match="ModelSpec"):
        ProfileRecord(**{**{k: getattr(good, k) for k in good.to_dict()}, "spec": "dlrm"})


def test_spec_key_ignores_name_and_dropout():
    a = tiny("a")
    assert spec_key(a) == spec_key(ModelSpec.from_dict({**a.to_dict(), "name": "other", "dropout": 0.5}))
    assert spec_key(a) != spec_key(tiny("a", top=(16,)))


def test_random_specs_are_deterministic_diverse_valid_and_bounded():
    specs = list(random_specs(40, seed=3, max_rows=50_000, max_table_bytes=8 * 2**20))
    assert [s.to_dict() for s in specs] == [s.to_dict() for s in random_specs(40, seed=3, max_rows=50_000,
                                                                              max_table_bytes=8 * 2**20)]
    assert {s.interaction for s in specs} == {"dot", "cross", "fm", "concat"}
    assert len({spec_key(s) for s in specs}) == 40
    assert any(any(t.dim for t in s.tables) for s in specs)  # per-table dims occur
    assert any(s.interaction == "fm" and not s.top_mlp for s in specs)  # plain FM occurs
    for s in specs:
        assert sum(t.num_embeddings * (t.dim or s.embedding_dim) * 4 for t in s.tables) <= 8 * 2**20
        assert all(t.num_embeddings <= 50_000 for t in s.tables)
        assert all(d % 4 == 0 for d in s.dims())  # every table can take every precision, int2 included
    assert next(random_specs(5, seed=3)).to_dict() != next(random_specs(5, seed=4)).to_dict()


def test_random_specs_follow_a_schema():
    from crossrec.data.synthetic import SyntheticConfig

    schema = SyntheticConfig(num_sparse=5, num_dense=3, max_rows=1000).schema()
    for s in random_specs(6, schema_like=schema, max_rows=500):
        assert s.num_dense == 3 and [t.num_embeddings for t in s.tables] == [min(n, 500) for n in
                                                                               schema.cardinalities]


def test_sample_choices_always_include_the_fp32_baseline():
    spec = next(random_specs(1, seed=0))
    for i in range(20):
        picked = sample_choices(spec, np.random.default_rng(i), k=3)
        assert picked[0] == FP32 and len(picked) == 3 and len(set(c.label for c in picked)) == 3
    assert {CompressionChoice.parse(c).label for c in DEFAULT_CHOICES} == set(DEFAULT_CHOICES)


def test_run_profile_is_resumable(tmp_path):
    out = tmp_path / "p.jsonl"
    kw = dict(n=2, batch_sizes=(1, 2), choices=["fp32/fp32", "int8/int8"], max_rows=200, max_table_bytes=2**16,
              threads=1, repeats=2, warmup=0, min_time_s=0.0, device_label="dev-cpu")
    first = run_profile(out, **kw)
    assert len(first) == 8 and {r.device for r in first} == {"dev-cpu"}
    assert run_profile(out, **kw) == first and len(out.read_text().splitlines()) == 8


def test_collect_rejects_bad_arguments():
    with pytest.raises(ConfigError, match="batch_sizes"):
        collect([tiny()], [FP32], [0])
    with pytest.raises(ConfigError, match="catalog"):
        collect([tiny()], [FP32], [1], catalog_device="no-such-device")


def test_int8_static_choices_are_calibrated_on_synthetic_rows_and_measured(monkeypatch):
    from crossrec.models.static_int8 import Int8StaticMLP

    seen = _spy_profile_many(monkeypatch)
    static = CompressionChoice.parse("int8/int8-static")
    recs = collect([tiny()], [FP32, static], [2], clock=fake_clock(), **FAST)
    assert [(r.choice.label, r.p50_ms) for r in recs] == [("fp32/fp32", pytest.approx(1.0)),
                                                          ("int8/int8-static", pytest.approx(1.0))]
    assert isinstance(seen["int8/int8-static"].top, Int8StaticMLP) and not isinstance(seen["fp32/fp32"].top,
                                                                                        Int8StaticMLP)
    said = []
    lr = ModelSpec(num_dense=2, tables=(TableSpec(name="x", num_embeddings=9),), embedding_dim=4, bottom_mlp=(),
                   top_mlp=(), interaction="lr", name="lr")
    assert [r.choice.label for r in collect([lr], [FP32, static], [2], progress=said.append, **FAST)] == ["fp32/fp32"]
    assert "skip lr int8/int8-static" in said[0] and "no MLP" in said[0]
    assert {"fp32/int8-static", "int8/int8-static"} <= set(DEFAULT_CHOICES)


def test_calibration_rows_fit_the_spec():
    batches = calibration_rows(tiny(), rows=600, seed=3)
    assert [b.dense.shape for b in batches] == [(512, 2), (88, 2)] and all(b.num_sparse == 2 for b in batches)
    assert all(int(b.ids[b.offsets[1:-1:2]].max()) < 7 for b in batches)  # bags of the 2nd table (7 rows)
    again = calibration_rows(tiny(), rows=600, seed=3)
    assert all(bool((a.ids == b.ids).all()) for a, b in zip(batches, again))


# -- runtimes (issue #4: profiles on the runtime the search times CPU candidates on) -----------------------------


def _spy_profile_many(monkeypatch):
    """Record what profile_many was asked to time (and time it for real)."""
    import importlib

    prof = importlib.import_module("crossrec.hardware.profile")  # the package exports a function of that name
    seen, real = {}, prof.profile_many

    def spy(models, *args, **kwargs):
        seen.update(models)
        return real(models, *args, **kwargs)

    monkeypatch.setattr(prof, "profile_many", spy)
    return seen


def test_collect_times_variants_on_the_script_runtime(tmp_path, monkeypatch):
    from crossrec.runtime import ScriptRuntime, load

    seen = _spy_profile_many(monkeypatch)
    out = tmp_path / "lat.jsonl"
    said = []
    recs = collect([tiny()], [FP32, INT8_BF16], [1, 4], out=out, threads=1, device_label="dev-cpu",
                   clock=fake_clock(), runtime="script", loader=load, progress=said.append, **FAST)
    assert [(r.runtime, r.fallback) for r in recs] == [("script", "")] * 4
    assert all(isinstance(m, ScriptRuntime) for m in seen.values()) and set(seen) == {"fp32/fp32", "int8/bf16"}
    assert recs[0].p50_ms == pytest.approx(1.0) and "on script" in said[0]
    assert read_records(out) == recs
    # the key names the runtime asked for; an eager key is what it was before runtimes were recorded
    r = recs[0]
    assert r.key == record_key(r.spec, r.choice, r.batch_size, "dev-cpu", 1, "script")
    assert r.key != record_key(r.spec, r.choice, r.batch_size, "dev-cpu", 1)
    assert record_key(r.spec, r.choice, 1, "d", 1, "eager") == record_key(r.spec, r.choice, 1, "d", 1)


def test_a_variant_the_runtime_cannot_run_is_timed_on_eager_and_says_so(tmp_path):
    from crossrec.errors import BackendError
    from crossrec.runtime import load

    def picky(model, runtime, device):  # as a trace that fails on compressed variants would
        if any(b.dtype == torch.uint8 for b in model.buffers()):  # int8 row-wise tables
            raise BackendError("TorchScript could not trace 'a': boom")
        return load(model, runtime, device)

    out, said = tmp_path / "lat.jsonl", []
    recs = collect([tiny()], [FP32, INT8_BF16], [2], out=out, threads=1, runtime="script", loader=picky,
                   progress=said.append, **FAST)
    by = {r.choice.label: r for r in recs}
    assert (by["fp32/fp32"].runtime, by["fp32/fp32"].fallback) == ("script", "")
    assert by["int8/bf16"].runtime == "eager"
    assert "script could not run it (BackendError: TorchScript could not trace" in by["int8/bf16"].fallback
    assert any(line.startswith("fallback a int8/bf16: script could not run it") for line in said)
    # keyed by the runtime asked for: a resumed script run does not retry it, an eager run measures it anew
    said.clear()
    assert collect([tiny()], [FP32, INT8_BF16], [2], out=out, threads=1, runtime="script", loader=picky,
                   progress=said.append, **FAST) == recs and said == []
    collect([tiny()], [INT8_BF16], [2], out=out, threads=1, **FAST)
    assert [(r.runtime, bool(r.fallback)) for r in read_records(out)] == [("script", False), ("eager", True),
                                                                          ("eager", False)]
    with pytest.raises(ConfigError, match="fallback"):  # a fallback is always an eager timing
        ProfileRecord.from_dict({**by["int8/bf16"].to_dict(), "runtime": "script"})


def test_onnx_refuses_compressed_variants_which_fall_back_to_eager():
    pytest.importorskip("onnxruntime")
    from crossrec.runtime import load

    recs = collect([tiny()], [FP32, INT8_BF16], [2], threads=1, runtime="onnx", loader=load, **FAST)
    by = {r.choice.label: r for r in recs}
    assert (by["fp32/fp32"].runtime, by["fp32/fp32"].fallback) == ("onnx", "")
    assert by["int8/bf16"].runtime == "eager" and "onnx could not run it (ConfigError: cannot export" in \
        by["int8/bf16"].fallback


def test_eager_and_script_records_share_a_file_and_old_lines_still_resume(tmp_path):
    from crossrec.runtime import load

    out = tmp_path / "lat.jsonl"
    eager = collect([tiny()], [FP32], [1, 2], out=out, threads=1, **FAST)
    # a file written before runtimes were recorded: the same lines without the two new fields
    old = [{k: v for k, v in json.loads(line).items() if k not in ("runtime", "fallback")}
           for line in out.read_text().splitlines()]
    out.write_text("".join(json.dumps(d) + "\n" for d in old))
    assert read_records(out) == eager and {r.runtime for r in read_records(out)} == {"eager"}
    said = []
    assert collect([tiny()], [FP32], [1, 2], out=out, threads=1, progress=said.append, **FAST) == eager
    assert said == []  # the old points were skipped: eager keys did not change
    script = collect([tiny()], [FP32], [1, 2], out=out, threads=1, runtime="script", loader=load, **FAST)
    recs = read_records(out)
    assert len(recs) == 4 and [r.runtime for r in recs] == ["eager", "eager", "script", "script"]
    assert {r.key for r in script}.isdisjoint(r.key for r in eager)


def test_collect_checks_the_runtime_once_before_measuring():
    from crossrec.runtime import load

    with pytest.raises(ConfigError, match="needs loader=crossrec.runtime.load"):
        collect([tiny()], [FP32], [1], runtime="script", **FAST)
    with pytest.raises(ConfigError, match="collect.runtime = 'scrpit' cannot run even a tiny fp32 model.*unknown "
                                          "runtime"):
        collect([tiny()], [FP32], [1], runtime="scrpit", loader=load, **FAST)


def test_run_profile_passes_the_runtime_through(tmp_path):
    from crossrec.runtime import load

    out = tmp_path / "p.jsonl"
    kw = dict(n=1, batch_sizes=(1,), choices=["fp32/fp32"], max_rows=50, max_table_bytes=2**14, threads=1, repeats=2,
              warmup=0, min_time_s=0.0)
    recs = run_profile(out, runtime="script", loader=load, **kw)
    assert [(r.runtime, r.fallback) for r in recs] == [("script", "")]
    assert run_profile(out, runtime="script", loader=load, **kw) == recs and len(out.read_text().splitlines()) == 1
