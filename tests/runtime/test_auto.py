"""The ``auto`` runtime: script on a CPU, eager where the trace fails (and says why), cuda on a GPU."""

import pytest
import torch

import crossrec.runtime.auto as auto_mod
from crossrec.data import Batch
from crossrec.errors import BackendError
from crossrec.models import ModelSpec, TableSpec, build
from crossrec.runtime import load


def _model():
    tables = (TableSpec(name="a", num_embeddings=20), TableSpec(name="b", num_embeddings=9))
    spec = ModelSpec(num_dense=3, tables=tables, embedding_dim=4, bottom_mlp=(8, 4), top_mlp=(8,))
    return build(spec, seed=1)


def _batch():
    return Batch.from_one_hot(torch.randn(6, 3, generator=torch.Generator().manual_seed(0)),
                              torch.tensor([[0, 1], [19, 8], [3, 3], [5, 0], [7, 2], [11, 6]]))


def test_cpu_picks_script_and_matches_eager():
    model, batch = _model(), _batch()
    rt = load(model, "auto")
    assert (rt.name, rt.info["chosen"], rt.info["fallback"]) == ("auto", "script", None)
    assert rt.info["one_hot_graph"] is True  # the script runtime's own info is kept
    torch.testing.assert_close(rt.predict(batch), load(model, "eager").predict(batch), atol=1e-5, rtol=0)
    assert rt(batch.dense, batch.ids, batch.offsets).shape == (6,)


def test_falls_back_to_eager_and_says_why(monkeypatch):
    def no_trace(*args, **kwargs):
        raise BackendError("the traced graph differs from eager by 0.3 on the probe batch")

    monkeypatch.setattr(auto_mod, "ScriptRuntime", no_trace)
    model, batch = _model(), _batch()
    rt = load(model, "auto")
    assert rt.info["chosen"] == "eager"
    assert "differs from eager by 0.3" in rt.info["fallback"]
    assert torch.equal(rt.predict(batch), model.predict_proba(batch))


def test_hugepages_option_is_accepted_and_reported():
    rt = load(_model(), "auto", hugepages=True)
    assert rt.info["hugepages_bytes"] == 0  # tables under 32 MiB never move
    with pytest.raises(Exception, match="no option"):
        load(_model(), "auto", one_hot=False)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
def test_cuda_device_without_a_gpu_is_a_clear_error():
    with pytest.raises(BackendError):
        load(_model(), "auto", "cuda")
