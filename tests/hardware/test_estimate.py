"""estimate(): a roofline model, checked by hand on tiny specs and for the directions that must hold."""

import dataclasses

import pytest
from torch import nn

from crossrec.errors import ConfigError
from crossrec.hardware import DeviceSpec, Estimate, dense_stages, estimate, get_device, model_flops, row_bytes
from crossrec.models import ModelSpec, TableSpec, build

TABLES = (TableSpec(name="a", num_embeddings=5), TableSpec(name="b", num_embeddings=5))


def tiny(**kw):
    base = dict(num_dense=2, tables=TABLES, embedding_dim=4, bottom_mlp=(4,), top_mlp=(8,))
    base.update(kw)
    return ModelSpec(**base)


def criteo(rows=1_000_000):
    return ModelSpec(num_dense=13, tables=tuple(TableSpec(name=f"C{i}", num_embeddings=rows) for i in range(26)),
                     embedding_dim=64, bottom_mlp=(512, 256, 64), top_mlp=(512, 256))


def toy_device(**over):
    d = dict(name="toy", kind="cpu", peak_tops={"fp32": 1.0, "int8": 4.0}, memory_bandwidth_gbps=1.0,
             memory_bandwidth_source="measured", memory_bytes=10**9, power_w=100.0, price_per_hour_usd=1.0,
             price_basis="amortized", embedding_precisions=("fp32", "int8"))
    d.update(over)
    return DeviceSpec(**d)


def test_flops_by_hand():
    # dot: bottom 2*2*4; bmm over n=3 fields 2*3*3*4; top (3 pairs + 4 dense = 7) 2*7*8 + 2*8*1
    assert model_flops(tiny()) == {"bottom_mlp": 16, "interaction": 72, "top_mlp": 128}
    # cross on x = [dense(2) ; emb(2*4)] = 10 wide, 2 layers: 2*10*10 + 2*10 each; top 2*10*8 + 2*8
    assert model_flops(tiny(interaction="cross", bottom_mlp=(), cross_layers=2)) == \
        {"interaction": 2 * (200 + 20), "top_mlp": 160 + 16}
    # low-rank cross, rank 3: 2*10*3 + 2*3*10 + 2*10 per layer
    assert model_flops(tiny(interaction="cross", bottom_mlp=(), cross_layers=1, cross_rank=3))["interaction"] == 140
    # DeepFM: first order 2*2*1; bottom 16; FM 3*n*D with n=3; top over dense_out 4 + 2*4 = 12
    assert model_flops(tiny(interaction="fm")) == \
        {"first_order": 4, "bottom_mlp": 16, "interaction": 36, "top_mlp": 2 * 12 * 8 + 16}
    assert model_flops(tiny(interaction="fm", top_mlp=())) == {"first_order": 4, "bottom_mlp": 16, "interaction": 36}
    assert model_flops(tiny(interaction="lr", bottom_mlp=())) == {"first_order": 4}
    # mixed dims: table b of dim 2 is projected to 4 (2*2*4, no bias)
    mixed = tiny(tables=(TABLES[0], TableSpec(name="b", num_embeddings=5, dim=2)))
    assert model_flops(mixed)["projection"] == 16


@pytest.mark.parametrize("kw", [
    {}, {"interaction": "cross", "bottom_mlp": (), "cross_layers": 2}, {"interaction": "cross", "cross_rank": 3},
    {"interaction": "fm"}, {"interaction": "fm", "top_mlp": ()}, {"interaction": "concat", "bottom_mlp": ()},
    {"interaction": "lr", "bottom_mlp": ()}, {"interaction": "lr", "bottom_mlp": (), "num_dense": 0},
    {"tables": (TABLES[0], TableSpec(name="b", num_embeddings=5, dim=2))},
])
def test_dense_parameter_count_matches_the_built_model(kw):
    spec = tiny(**kw)
    model = build(spec)
    dense = sum(p.numel() for m in model.modules() if not isinstance(m, nn.EmbeddingBag)
                for p in m.parameters(recurse=False))
    assert sum(p for _, p in dense_stages(spec).values()) == dense


def test_latency_by_hand_on_a_toy_device():
    spec = tiny()
    e = estimate(spec, toy_device(), 10, compute_efficiency=1.0, gather_efficiency=1.0)
    # embedding: 10 samples x 2 tables x (16 B row + 8 B id + 8 B offset) = 640 B at 1 GB/s
    emb = e.stages[0]
    assert (emb.name, emb.bytes, emb.bound) == ("embedding", 640, "memory")
    assert emb.time_ms == pytest.approx(640 / 1e9 * 1e3)
    bottom = e.stages[1]  # 12 fp32 params = 48 B -> 48 ns; 160 FLOPs at 1 TFLOP/s -> 0.16 ns
    assert (bottom.bytes, bottom.flops, bottom.bound) == (48, 160, "memory")
    inter = e.stages[2]
    assert (inter.bytes, inter.flops, inter.bound) == (0, 720, "compute")
    assert inter.time_ms == pytest.approx(720 / 1e12 * 1e3)
    assert e.latency_ms == pytest.approx(sum(s.time_ms for s in e.stages))
    assert e.transfer_ms == 0 and e.overhead_ms == 0
    assert e.samples_per_s == pytest.approx(10 / (e.latency_ms / 1e3))
    assert e.energy_per_1k_j == pytest.approx(100.0 * e.latency_ms / 1e3 / 10 * 1000)
    assert e.source == "modeled"


def test_modeled_never_measured():
    e = estimate(tiny(), toy_device(), 4)
    assert e.source == "modeled"
    with pytest.raises(ConfigError, match="never measured"):
        dataclasses.replace(e, source="measured")
    assert Estimate.from_json(e.to_json()) == e


def test_monotonic_in_batch_size():
    dev = get_device("epyc-zen5-2vcpu")
    lat = [estimate(criteo(), dev, b).latency_ms for b in (1, 8, 64, 512, 4096)]
    assert lat == sorted(lat) and lat[0] < lat[-1]
    thr = [estimate(criteo(), get_device("a100-sxm-80gb"), b).samples_per_s for b in (1, 64, 4096)]
    assert thr == sorted(thr)


def test_narrow_tables_move_fewer_bytes():
    dev = get_device("h100-sxm")
    emb = {p: estimate(criteo(), dev, 512, embedding_precision=p).stages[0].bytes
           for p in ("fp32", "fp16", "int8", "int4", "int2")}
    assert emb["fp32"] > emb["fp16"] > emb["int8"] > emb["int4"] > emb["int2"]
    assert estimate(criteo(), dev, 512, embedding_precision="int8").model_bytes < \
        estimate(criteo(), dev, 512).model_bytes
    mixed = estimate(criteo(), dev, 512, embedding_precision={"C0": "int8"})
    assert mixed.embedding_precision["C0"] == "int8" and mixed.embedding_precision["C1"] == "fp32"
    assert emb["int8"] < mixed.stages[0].bytes < emb["fp32"]


def test_more_bandwidth_lowers_latency():
    dev = get_device("epyc-zen5-2vcpu")
    fast = dataclasses.replace(dev, memory_bandwidth_gbps=dev.memory_bandwidth_gbps * 4)
    spec = ModelSpec(num_dense=0, tables=criteo().tables, embedding_dim=64, bottom_mlp=(), top_mlp=(),
                     interaction="concat")
    assert estimate(spec, fast, 256).latency_ms < estimate(spec, dev, 256).latency_ms


def test_peak_bandwidth_is_derated_but_measured_is_not():
    spec = tiny()
    measured = estimate(spec, toy_device(), 10)
    peak = estimate(spec, toy_device(memory_bandwidth_source="peak"), 10, bandwidth_efficiency=0.5)
    assert measured.bandwidth_efficiency == 1.0 and peak.bandwidth_efficiency == 0.5
    assert peak.stages[0].time_ms == pytest.approx(2 * measured.stages[0].time_ms)


def test_gather_efficiency_argument_then_device_then_default():
    spec = tiny()
    default = estimate(spec, toy_device(), 10)
    assert default.gather_efficiency == 0.5
    assert estimate(spec, toy_device(gather_efficiency=0.25), 10).gather_efficiency == 0.25
    explicit = estimate(spec, toy_device(gather_efficiency=0.25), 10, gather_efficiency=1.0)
    assert explicit.gather_efficiency == 1.0
    assert default.stages[0].time_ms == pytest.approx(2 * explicit.stages[0].time_ms)
    assert default.stages[1].time_ms == explicit.stages[1].time_ms  # dense weights stream: no gather penalty
    assert get_device("epyc-zen5-2vcpu").gather_efficiency is not None  # measured on the dev machine
    with pytest.raises(ConfigError, match="gather_efficiency"):
        estimate(spec, toy_device(), 10, gather_efficiency=1.5)


def test_accelerators_pay_transfer_and_launch():
    dev = toy_device(kind="gpu", host_link_gbps=1.0, launch_overhead_us=10.0)
    e = estimate(tiny(), dev, 10)
    # in: 10 x (2 dense x 4 B + 2 ids x 8 B) + (20 + 1) offsets x 8 B; out: 10 x 4 B
    assert e.transfer_ms == pytest.approx((10 * 24 + 21 * 8 + 40) / 1e9 * 1e3)
    assert e.overhead_ms == pytest.approx(0.01)
    assert e.latency_ms == pytest.approx(sum(s.time_ms for s in e.stages) + e.transfer_ms + e.overhead_ms)


def test_int8_dense_uses_the_int8_peak():
    spec = criteo(rows=100)
    dev = get_device("epyc-zen5-2vcpu")
    fp32, int8 = estimate(spec, dev, 4096), estimate(spec, dev, 4096, dense_precision="int8")
    assert int8.stages[-1].bound == "compute" and int8.stages[-1].time_ms < fp32.stages[-1].time_ms


def test_memory_fit():
    assert estimate(criteo(), get_device("h100-sxm"), 1).fits_memory
    assert not estimate(criteo(rows=10_000_000), get_device("alveo-u280"), 1, dense_precision="int8").fits_memory


def test_unsupported_precisions_raise():
    with pytest.raises(ConfigError, match="'tpu-v4' does not support 'fp32'"):
        estimate(tiny(), get_device("tpu-v4"), 8)
    with pytest.raises(ConfigError, match="no 'int4' embedding kernels"):
        estimate(tiny(), get_device("tpu-v4"), 8, embedding_precision="int4", dense_precision="bf16")
    with pytest.raises(ConfigError, match="int4"):
        estimate(tiny(), get_device("h100-sxm"), 8, dense_precision="int4")
    with pytest.raises(ConfigError, match="dense_precision = 'fp64'"):
        estimate(tiny(), get_device("h100-sxm"), 8, dense_precision="fp64")
    with pytest.raises(ConfigError, match=r"embedding_precision = \['zz'\]"):
        estimate(tiny(), get_device("h100-sxm"), 8, embedding_precision={"zz": "int8"})
    with pytest.raises(ConfigError, match="batch_size"):
        estimate(tiny(), get_device("h100-sxm"), 0)


def test_row_bytes():
    assert [row_bytes(16, p) for p in ("fp32", "bf16", "int8", "int4", "int2")] == [64, 32, 24, 12, 8]
    with pytest.raises(ConfigError):
        row_bytes(16, "int3")


def test_int8_static_is_modeled_as_int8_where_int8_runs():
    for name in ("epyc-zen5-2vcpu", "h100-sxm", "tpu-v4", "alveo-u280"):
        dev = get_device(name)
        static = estimate(criteo(rows=100), dev, 512, dense_precision="int8-static")
        dynamic = estimate(criteo(rows=100), dev, 512, dense_precision="int8")
        assert static.dense_precision == "int8-static" and static.source == "modeled"
        assert (static.latency_ms, static.model_bytes, static.stages) == (dynamic.latency_ms, dynamic.model_bytes,
                                                                           dynamic.stages)
    with pytest.raises(ConfigError, match="does not support 'int8'"):
        estimate(tiny(), toy_device(peak_tops={"fp32": 1.0}), 8, dense_precision="int8-static")
    with pytest.raises(ConfigError, match="int8-static"):  # the message lists it among the allowed values
        estimate(tiny(), get_device("h100-sxm"), 8, dense_precision="int8_static")
