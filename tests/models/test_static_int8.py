"""Static int8 MLPs: close to the float model, round-trip through artifacts, clear errors."""

import copy

import pytest
import torch

from crossrec.artifact import load_artifact, save_artifact
from crossrec.compress import CompressContext, DenseQuantConfig, compress_
from crossrec.data.synthetic import SyntheticConfig, generate
from crossrec.errors import ConfigError
from crossrec.models import ModelSpec, build
from crossrec.models.interactions import mlp
from crossrec.models.static_int8 import Int8StaticMLP, quantize_mlps_static_


def test_mlp_matches_float_and_keeps_an_fp32_logit_layer():
    torch.manual_seed(0)
    seq = mlp(20, (64, 32), final=1).eval()
    x = torch.randn(256, 20)
    q = Int8StaticMLP.from_float(seq, [x[:128], x[128:]])
    assert q.fp32_tail and q.n_int8 == 2
    ref = seq(x)
    err = (q(x) - ref).abs().max()
    assert err < 0.02 * ref.abs().max()
    assert q.w0.dtype == torch.int8 and q.act.shape == (3, 2)


def test_relu_outputs_get_zero_point_zero_and_ranges_cover_calibration():
    seq = mlp(4, (8,)).eval()  # Linear + ReLU only: no fp32 tail
    x = torch.randn(64, 4) * 3
    q = Int8StaticMLP.from_float(seq, [x])
    assert not q.fp32_tail
    assert q.act[1, 1] == 0  # ReLU output: non-negative
    lo = -q.act[0, 1] * q.act[0, 0]
    hi = (255 - q.act[0, 1]) * q.act[0, 0]
    assert lo <= x.min() + q.act[0, 0] and hi >= x.max() - q.act[0, 0]  # zero point rounds by <= 1 step


@pytest.mark.parametrize("qmax", [255, 127])
def test_both_activation_ranges_track_float_on_any_host(qmax, monkeypatch):
    # 127 is what a host without AVX512-VNNI runs (saturating int16 pairs); both must stay close to float
    # wherever the test runs: with 127 the kernels cannot saturate, with 255 only VNNI hosts run it.
    import crossrec.models.static_int8 as mod

    if qmax == 255 and mod.activation_qmax() != 255:
        pytest.skip("full-range activations saturate this CPU's int8 kernels (no AVX512-VNNI); the 127 case runs")
    monkeypatch.setattr(mod, "activation_qmax", lambda: qmax)
    torch.manual_seed(0)
    seq = mlp(20, (64, 32), final=1).eval()
    x = torch.randn(256, 20)
    q = Int8StaticMLP.from_float(seq, [x])
    ref = seq(x)
    assert (q(x) - ref).abs().max() < 0.02 * ref.abs().max()
    assert q.act[:, 1].max() <= 255  # the stored qparams stay full-range: one artifact for both hosts


def test_narrowed_qparams_keep_the_float_range():
    from crossrec.models.static_int8 import narrowed

    act = torch.tensor([[0.05, 0.0], [0.02, 100.0]])
    for (s, z), (s2, z2) in zip(act.tolist(), narrowed(act, 127)):
        assert 0 <= z2 <= 127
        assert abs((127 - z2) * s2 - (255 - z) * s) < s2 and abs(z2 * s2 - z * s) < s2  # same [lo, hi] to a step
    assert narrowed(act, 255) == act.tolist()


@pytest.mark.parametrize("interaction", ["dot", "cross"])
def test_compressed_model_tracks_float_and_round_trips(interaction, tmp_path):
    data = generate(SyntheticConfig(rows=3000, num_sparse=4, max_rows=30, seed=1))
    model = build(ModelSpec.for_schema(data.schema, interaction=interaction, embedding_dim=8, bottom_mlp=(16, 8),
                                       top_mlp=(32, 16)), seed=0).eval()
    variant = compress_(copy.deepcopy(model), DenseQuantConfig(mode="int8-static"), CompressContext(train_data=data))
    kinds = {type(m).__name__ for m in variant.modules()}
    assert "Int8StaticMLP" in kinds and "Linear" not in kinds
    batch = next(data.batches(512))
    with torch.no_grad():
        ref, got = torch.sigmoid(model(batch.dense, batch.ids, batch.offsets)), \
            torch.sigmoid(variant(batch.dense, batch.ids, batch.offsets))
    assert (got - ref).abs().max() < 0.03
    back = load_artifact(save_artifact(tmp_path / "v", variant, data.schema)).model
    with torch.no_grad():
        torch.testing.assert_close(back(batch.dense, batch.ids, batch.offsets),
                                   variant(batch.dense, batch.ids, batch.offsets))


def test_static_int8_without_data_says_how_to_fix():
    data = generate(SyntheticConfig(rows=100, num_sparse=2, max_rows=10, seed=1))
    model = build(ModelSpec.for_schema(data.schema, embedding_dim=4, bottom_mlp=(4,), top_mlp=(8,)), seed=0)
    with pytest.raises(ConfigError, match="train_data"):
        compress_(model, DenseQuantConfig(mode="int8-static"))
    with pytest.raises(ConfigError, match="calibration"):
        quantize_mlps_static_(model, None)
