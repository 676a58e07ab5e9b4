"""Runtimes: every CPU runtime predicts like eager on a small trained model; options, errors, layouts.

ONNX tests skip without the optional ``onnx`` extra (``pip install -e '.[onnx]'``).
"""

import copy
import sys

import numpy as np
import pytest
import torch

from crossrec.compress import DenseQuantConfig, EmbeddingQuantConfig, compress_
from crossrec.data import Batch
from crossrec.data.synthetic import SyntheticConfig
from crossrec.errors import ConfigError, DataError
from crossrec.hardware import profile_many
from crossrec.models import ModelSpec, build
from crossrec.runtime import RUNTIMES, BackendError, get_runtime, load
from crossrec.train import evaluate

try:
    import onnx  # noqa: F401
    import onnxruntime  # noqa: F401

    HAS_ORT = True
except ImportError:
    HAS_ORT = False
needs_ort = pytest.mark.skipif(not HAS_ORT, reason="onnx/onnxruntime not installed: the optional 'onnx' extra "
                                                  "(pip install -e '.[onnx]') is needed for the ONNX runtimes")
# (runtime, options, absolute tolerance on probabilities vs eager)
CPU_CASES = {
    "eager": ("eager", {}, 0.0),
    "compiled": ("compiled", {}, 1e-5),
    "script": ("script", {}, 1e-5),
    "onnx": ("onnx", {}, 1e-5),
    "onnx-jagged": ("onnx", {"layout": "jagged"}, 1e-5),
    "onnx-int8": ("onnx-int8", {}, 0.03),
}


@pytest.fixture(scope="module")
def trained(tiny_dlrm):
    return tiny_dlrm  # tests/conftest.py


@pytest.fixture(scope="module")
def runtimes(trained):
    made = {}

    def get(case):
        if case not in made:
            name, options, _ = CPU_CASES[case]
            if name.startswith("onnx") and not HAS_ORT:
                pytest.skip("onnx/onnxruntime not installed (optional 'onnx' extra)")
            made[case] = load(trained[0], name, **options)
        return made[case]

    yield get
    for rt in made.values():
        rt.close()


@pytest.mark.parametrize("batch_size", [1, 64])
@pytest.mark.parametrize("case", list(CPU_CASES))
def test_cpu_runtimes_match_eager(trained, runtimes, case, batch_size):
    model, te = trained
    batch = te.slice(0, batch_size).to_batch()
    rt = runtimes(case)
    got, ref = rt.predict(batch), model.predict_proba(batch)
    assert got.shape == (batch_size,) and got.dtype == torch.float32 and got.device.type == "cpu"
    assert float((got - ref).abs().max()) <= CPU_CASES[case][2]
    logits = rt(batch.dense, batch.ids, batch.offsets)  # the profile_many call: logits
    assert torch.allclose(torch.sigmoid(logits), got)


@needs_ort
def test_onnx_int8_keeps_auc(trained, runtimes):
    model, te = trained
    base, q = evaluate(model, te).auc, evaluate(runtimes("onnx-int8"), te).auc
    assert abs(base - q) < 0.01, (base, q)


def _multi_hot(num_dense=13, num_sparse=6, rows=20, seed=0):
    """Bags of 0-3 ids below `rows` (empty bags included), sample-major."""
    g = torch.Generator().manual_seed(seed)
    b = 5
    lengths = torch.randint(0, 4, (b * num_sparse,), generator=g)
    lengths[0] = 0  # an empty first and last bag
    lengths[-1] = 0
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
    ids = torch.randint(0, rows, (int(offsets[-1]),), generator=g)
    return Batch(dense=torch.randn(b, num_dense, generator=g), ids=ids, offsets=offsets, num_sparse=num_sparse)


@needs_ort
def test_jagged_layout_pools_multi_hot_and_empty_bags(trained, runtimes):
    model, _ = trained
    batch = _multi_hot()
    assert torch.allclose(runtimes("onnx-jagged").predict(batch), model.predict_proba(batch), atol=1e-6)
    with pytest.raises(DataError, match="layout='jagged'"):
        runtimes("onnx").predict(batch)


@needs_ort
@pytest.mark.parametrize("interaction", ["cross", "fm", "lr", "concat", "dot"])
@pytest.mark.parametrize("layout", ["one_hot", "jagged"])
def test_onnx_exports_every_interaction_and_mixed_dims(interaction, layout):
    schema = SyntheticConfig(num_sparse=4, max_rows=30).schema()
    dims = {"C2": 4} if interaction in ("dot", "cross", "concat") else None  # two lookup groups, projected
    model = build(ModelSpec.for_schema(schema, interaction=interaction, embedding_dim=8, table_dims=dims,
                                       bottom_mlp=(16, 8) if interaction in ("dot", "fm") else None, top_mlp=(16,)),
                  seed=1)
    batch = _multi_hot(num_sparse=4, seed=2) if layout == "jagged" else \
        Batch.from_one_hot(torch.randn(7, 13), torch.randint(0, 30, (7, 4)))
    rt = load(model, "onnx", layout=layout)
    try:
        assert torch.allclose(rt.predict(batch), model.predict_proba(batch), atol=1e-6)
    finally:
        rt.close()


@needs_ort
@pytest.mark.parametrize("name", ["onnx", "onnx-int8"])
def test_external_data_path(trained, tmp_path, name):
    model, te = trained
    rt = load(model, name, path=tmp_path, external_data_threshold_bytes=1)
    try:
        assert rt.info["external_data"] is True
        assert rt.model_path.with_name(rt.model_path.name + ".data").stat().st_size > 0
        assert rt.model_path.stat().st_size < 200_000  # the graph only; weights are in the .data file
        batch = te.slice(0, 8).to_batch()
        assert torch.allclose(rt.predict(batch), model.predict_proba(batch), atol=0.03 if "int8" in name else 1e-6)
    finally:
        rt.close()
    assert rt.model_path.exists(), "a caller's path is kept on close"


@needs_ort
def test_session_options(trained):
    model, _ = trained
    rt = load(model, "onnx", intra_op_num_threads=1, inter_op_num_threads=1)
    spin = load(model, "onnx", allow_spinning=True)
    try:
        so = rt.session_options
        assert so.get_session_config_entry("session.intra_op.allow_spinning") == "0"
        assert so.get_session_config_entry("session.inter_op.allow_spinning") == "0"
        assert so.intra_op_num_threads == 1 and so.inter_op_num_threads == 1
        assert rt.info["intra_op_num_threads"] == 1 and rt.info["allow_spinning"] is False
        assert spin.session_options.get_session_config_entry("session.intra_op.allow_spinning") == "1"
        assert spin.session_options.intra_op_num_threads == torch.get_num_threads()
    finally:
        rt.close()
        spin.close()
    assert not rt.dir.exists(), "a temporary export directory is removed on close"


@needs_ort
@pytest.mark.parametrize("config,blocker", [
    (EmbeddingQuantConfig(precision="int4"), "QuantizedEmbeddingBag int4"),
    (EmbeddingQuantConfig(precision="fp16"), "QuantizedEmbeddingBag fp16"),
    (DenseQuantConfig(mode="int8"), "Int8DynamicLinear"),
    (DenseQuantConfig(mode="bf16"), "BF16Linear"),
])
@pytest.mark.parametrize("name", ["onnx", "onnx-int8"])
def test_compressed_models_refuse_to_export(trained, tmp_path, config, blocker, name):
    model = compress_(copy.deepcopy(trained[0]), config)
    with pytest.raises(ConfigError, match=blocker) as err:
        load(model, name, path=tmp_path / "x")
    assert "runtime='eager', 'script' or 'compiled'" in str(err.value)
    assert not (tmp_path / "x").exists(), "nothing is written before the check"


@needs_ort
@pytest.mark.parametrize("layout", ["one_hot", "jagged"])
def test_int8_tables_export_packed_and_match_eager(tmp_path, layout):
    # crossrec's row-wise int8 tables on ONNX Runtime: uint8 codes in the file, dequantized after the Gather
    schema = SyntheticConfig(num_sparse=4, max_rows=3000).schema()
    model = build(ModelSpec.for_schema(schema, embedding_dim=32, table_dims={"C2": 16}, bottom_mlp=(16, 32),
                                       top_mlp=(16,)), seed=1)
    q = compress_(copy.deepcopy(model), EmbeddingQuantConfig(precision="int8"))
    rows = min(t.num_embeddings for t in model.spec.tables)
    batch = _multi_hot(num_sparse=4, rows=rows, seed=2) if layout == "jagged" else \
        Batch.from_one_hot(torch.randn(7, 13), torch.randint(0, rows, (7, 4)))
    fp32, int8 = load(model, "onnx", layout=layout, path=tmp_path / "f"), load(q, "onnx", layout=layout,
                                                                              path=tmp_path / "q")
    both = load(q, "onnx-int8", layout=layout, path=tmp_path / "b")
    try:
        assert torch.allclose(int8.predict(batch), q.predict_proba(batch), atol=1e-6)
        assert torch.allclose(both.predict(batch), q.predict_proba(batch), atol=0.03)
        assert int8.model_path.stat().st_size < 0.4 * fp32.model_path.stat().st_size  # the codes stay uint8
    finally:
        for rt in (fp32, int8, both):
            rt.close()


def test_int8_and_other_precisions_in_one_dim_do_not_export(trained):
    from crossrec.runtime.onnx_export import export_blockers

    model = compress_(copy.deepcopy(trained[0]), EmbeddingQuantConfig(precision="int8"))
    assert export_blockers(model) == []
    names = [t.name for t in model.spec.tables]
    mixed = compress_(copy.deepcopy(trained[0]), EmbeddingQuantConfig(
        precision="int8", per_table={names[0]: "int4"}))
    assert any("several precisions" in b for b in export_blockers(mixed))


def test_compressed_models_run_eager(trained):
    model, te = trained
    q = compress_(copy.deepcopy(model), EmbeddingQuantConfig(precision="int8"))
    q = compress_(q, DenseQuantConfig(mode="bf16"))
    batch = te.slice(0, 16).to_batch()
    assert torch.allclose(load(q, "eager").predict(batch), model.predict_proba(batch), atol=0.05)


def test_unknown_runtime_lists_known(trained):
    with pytest.raises(ConfigError, match="unknown runtime 'trt'; known runtimes: auto, compiled, cuda, eager, onnx"):
        load(trained[0], "trt")
    assert get_runtime("eager") is RUNTIMES["eager"]


def test_unknown_option_and_wrong_device(trained):
    with pytest.raises(ConfigError, match=r"runtime 'eager' has no option\(s\) \['layout'\]"):
        load(trained[0], "eager", layout="jagged")
    with pytest.raises(ConfigError, match=r"runtime 'onnx' runs on \('cpu',\), not on 'cuda'"):
        load(trained[0], "onnx", device="cuda")
    with pytest.raises(ConfigError, match="CTRModel"):
        load(torch.nn.Linear(2, 1), "eager")


def test_predict_checks_the_feature_count(trained):
    rt = load(trained[0], "eager")
    with pytest.raises(ConfigError, match="2 sparse features, the model has 6"):
        rt.predict(Batch.from_one_hot(torch.zeros(1, 13), torch.zeros(1, 2, dtype=torch.int64)))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without a GPU")
def test_cuda_without_gpu_raises(trained):
    with pytest.raises(BackendError, match="needs a CUDA device"):
        load(trained[0], device="cuda")  # eager on cuda selects the cuda runtime


def test_missing_onnxruntime_raises_with_install_hint(trained, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    with pytest.raises(BackendError, match=r"pip install 'crossrec\[onnx\]'"):
        load(trained[0], "onnx")


def test_compiled_falls_back_to_eager_when_inductor_fails(trained, monkeypatch):
    import crossrec.runtime.compiled as compiled

    def broken(*args, **kwargs):
        raise RuntimeError("InductorError: no working C++ compiler found")

    monkeypatch.setattr(compiled.torch, "compile", lambda model, **kw: broken)
    model, te = trained
    batch = te.slice(0, 4).to_batch()
    with pytest.warns(RuntimeWarning, match="running eager instead"):
        rt = load(model, "compiled", warmup_batch_sizes=(4,))
    assert "no working C++ compiler" in rt.info["fallback"]
    assert torch.equal(rt.predict(batch), model.predict_proba(batch))
    with pytest.raises(BackendError, match="fallback=True"):
        load(model, "compiled", fallback=False)(batch.dense, batch.ids, batch.offsets)


def test_runtimes_profile_like_models(trained):
    model, te = trained
    rows = te.to_batch()

    def make(b):
        return Batch.from_one_hot(rows.dense[:b], rows.ids.view(-1, 6)[:b])

    runtimes = {"model": model, "eager": load(model, "eager")}
    if HAS_ORT:
        runtimes["onnx"] = load(model, "onnx")
    out = profile_many(runtimes, make, batch_sizes=(1, 8), warmup=1, repeats=2)
    assert set(out) == set(runtimes) and all(p.at(8).samples_per_s > 0 for p in out.values())
    assert np.isfinite(out["eager"].at(1).p50_ms)
