"""The ``cuda`` runtime on a real GPU: fp16/bf16 predictions close to fp32 eager on the CPU.

Marked ``gpu`` and skipped without CUDA (``pytest -m gpu`` selects them on a GPU machine).
"""

import copy

import pytest
import torch

from crossrec.compress import DenseQuantConfig, EmbeddingQuantConfig, compress_
from crossrec.errors import ConfigError
from crossrec.runtime import CudaRuntime, load

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (torch.cuda.is_available() "
                                                                       "is False)")]


@pytest.fixture(scope="module")
def trained(tiny_dlrm):
    return tiny_dlrm  # tests/conftest.py


@pytest.mark.parametrize("dtype", ["bf16", "fp16", "fp32"])
@pytest.mark.parametrize("batch_size", [1, 64])
def test_cuda_matches_cpu_eager(trained, dtype, batch_size):
    model, te = trained
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rt = load(model, device="cuda", dtype=dtype)  # eager on cuda selects the cuda runtime
    assert isinstance(rt, CudaRuntime) and rt.device.type == "cuda"
    batch = te.slice(0, batch_size).to_batch()
    got, ref = rt.predict(batch), model.predict_proba(batch)
    assert got.device.type == "cpu" and got.dtype == torch.float32
    assert float((got - ref).abs().max()) < (1e-4 if dtype == "fp32" else 0.02)
    logits = rt(batch.dense.cuda(), batch.ids.cuda(), batch.offsets.cuda())
    assert logits.device.type == "cuda" and logits.shape == (batch_size,)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items()), "the CPU model is left as it was"
    assert next(model.parameters()).device.type == "cpu"


def test_cuda_runs_half_tables_and_bf16_dense(trained):
    model, te = trained
    q = compress_(copy.deepcopy(model), EmbeddingQuantConfig(precision="fp16"))
    q = compress_(q, DenseQuantConfig(mode="bf16"))
    batch = te.slice(0, 32).to_batch()
    assert float((load(q, "cuda").predict(batch) - model.predict_proba(batch)).abs().max()) < 0.03


def test_cuda_refuses_cpu_only_blocks(trained):
    q = compress_(copy.deepcopy(trained[0]), EmbeddingQuantConfig(precision="int8"))
    with pytest.raises(ConfigError, match="FBGEMM row-wise ops are CPU-only"):
        load(q, "cuda")


def test_cuda_graphs_mode_matches_eager_across_calls(trained):
    model, te = trained
    rt = load(model, device="cuda", dtype="fp32", table_dtype="fp32", compile=True, compile_mode="reduce-overhead")
    assert rt.info["compile_mode"] == "reduce-overhead"
    for start, n in ((0, 64), (64, 64), (128, 64), (0, 8)):  # replays reuse the graph's buffers: answers stay own
        batch = te.slice(start, start + n).to_batch()
        assert float((rt.predict(batch) - model.predict_proba(batch)).abs().max()) < 1e-3


def test_cuda_refuses_an_unknown_compile_mode(trained):
    with pytest.raises(ConfigError, match="compile_mode"):
        load(trained[0], device="cuda", compile=True, compile_mode="fast")
