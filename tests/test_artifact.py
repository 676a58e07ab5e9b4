"""Artifacts round-trip exactly and refuse corrupted or tampered files."""

import json

import numpy as np
import pytest
import torch

from crossrec.artifact import load_artifact, save_artifact, verify
from crossrec.data.synthetic import SyntheticConfig, generate
from crossrec.errors import ArtifactError, IntegrityError
from crossrec.models import ModelSpec, build
from crossrec.train import predict


@pytest.fixture
def saved(tmp_path):
    data = generate(SyntheticConfig(rows=300, num_sparse=4, max_rows=30, seed=2))
    model = build(ModelSpec.for_schema(data.schema, interaction="cross", embedding_dim=4), seed=1)
    path = save_artifact(tmp_path / "art", model, data.schema, metrics={"test": {"auc": 0.5}},
                         extra={"vocab/C1": np.arange(5, dtype=np.uint32)})
    return path, model, data


def test_round_trip_is_exact(saved):
    path, model, data = saved
    art = load_artifact(path)
    assert art.spec == model.spec and art.schema == data.schema
    np.testing.assert_array_equal(predict(art.model, data), predict(model, data))
    np.testing.assert_array_equal(art.extra["vocab/C1"], np.arange(5))
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["versions"]["torch"] == torch.__version__
    assert set(manifest["files"]) == {"weights.safetensors", "extra.safetensors"}


def test_flipped_byte_is_detected(saved):
    path = saved[0]
    raw = bytearray((path / "weights.safetensors").read_bytes())
    raw[-3] ^= 0xFF
    (path / "weights.safetensors").write_bytes(bytes(raw))
    with pytest.raises(IntegrityError, match="sha256"):
        load_artifact(path)


def test_tampered_weights_with_updated_checksum_still_fail_on_shape(saved, tmp_path):
    path, _, _ = saved
    from safetensors.torch import save_file

    from crossrec.artifact import sha256_file

    save_file({"bogus": torch.zeros(3)}, path / "weights.safetensors")
    manifest = json.loads((path / "manifest.json").read_text())
    p = path / "weights.safetensors"
    manifest["files"]["weights.safetensors"] = {"sha256": sha256_file(p), "bytes": p.stat().st_size}
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IntegrityError, match="does not match the spec"):
        load_artifact(path)


def test_pickle_file_is_never_loaded(saved):
    path = saved[0]
    torch.save({"x": 1}, path / "weights.safetensors")  # a pickle in disguise
    with pytest.raises(IntegrityError):
        load_artifact(path)


def test_missing_and_broken_manifest(saved, tmp_path):
    path = saved[0]
    with pytest.raises(ArtifactError, match="not an artifact directory"):
        load_artifact(tmp_path / "nope")
    (path / "manifest.json").write_text("{not json")
    with pytest.raises(IntegrityError, match="not valid JSON"):
        verify(path)
    (path / "manifest.json").unlink()
    with pytest.raises(ArtifactError, match="no manifest.json"):
        verify(path)


def test_existing_path_is_not_overwritten_without_asking(saved):
    path, model, data = saved
    with pytest.raises(ArtifactError, match="already exists"):
        save_artifact(path, model, data.schema)
    save_artifact(path, model, data.schema, overwrite=True)
    assert load_artifact(path).metrics == {}
