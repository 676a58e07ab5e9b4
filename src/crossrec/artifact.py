"""Artifacts: a trained (later: compressed) model as a directory anyone can load safely.

Layout::

    ARTIFACT/
      manifest.json         spec, feature schema + preprocessing, compression recipe, metrics, versions,
                            sha256 of every file
      weights.safetensors   the model's tensors (no pickle; compressed variants keep them packed)
      extra.safetensors     optional named arrays (e.g. a categorical vocabulary for preprocessing)

Loading checks every file's sha256 *before* parsing it and checks the tensor table against
the spec, so a truncated, corrupted or tampered file fails with :class:`IntegrityError`
instead of producing a silently wrong model. Nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from crossrec.compress.base import recipe_from_dicts, recipe_to_dicts, restore_
from crossrec.data.schema import FeatureSchema
from crossrec.errors import ArtifactError, ConfigError, IntegrityError
from crossrec.models.ctr import CTRModel, build
from crossrec.models.spec import ModelSpec

FORMAT, VERSION = "crossrec-artifact", 1
WEIGHTS, EXTRA, MANIFEST = "weights.safetensors", "extra.safetensors", "manifest.json"


@dataclass
class Artifact:
    """A loaded artifact: the model (eval mode) plus everything its manifest records."""

    model: CTRModel
    spec: ModelSpec
    schema: FeatureSchema
    manifest: dict[str, Any]
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    path: Path | None = None

    @property
    def metrics(self) -> dict[str, Any]:
        return self.manifest.get("metrics", {})


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _versions() -> dict[str, str]:
    import safetensors

    from crossrec import __version__

    return {"crossrec": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "safetensors": safetensors.__version__, "python": platform.python_version()}


def save_artifact(path: str | Path, model: CTRModel, schema: FeatureSchema, *, metrics: dict | None = None,
                  info: dict | None = None, extra: dict[str, np.ndarray] | None = None,
                  overwrite: bool = False) -> Path:
    """Write ``model`` as an artifact directory (atomically: a temp dir renamed into place).

    >>> import tempfile
    >>> from crossrec.data.synthetic import SyntheticConfig
    >>> schema = SyntheticConfig(num_sparse=2, max_rows=10).schema()
    >>> model = build(ModelSpec.for_schema(schema, embedding_dim=4))
    >>> d = save_artifact(Path(tempfile.mkdtemp()) / "a", model, schema, metrics={"test": {"auc": 0.7}})
    >>> load_artifact(d).metrics["test"]["auc"]
    0.7
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise ArtifactError(f"{path} already exists; choose another path or pass overwrite=True (--force)")
    if not model.spec.matches(schema):
        rows = [t.num_embeddings for t in model.spec.tables]
        raise ConfigError(f"model spec ({model.spec.num_dense} dense, tables {rows}) does not fit the schema "
                          f"({schema.num_dense} dense, tables {list(schema.cardinalities)})")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        save_file(state, tmp / WEIGHTS)
        files = {WEIGHTS: _file_entry(tmp / WEIGHTS)}
        if extra:
            save_file({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in extra.items()}, tmp / EXTRA)
            files[EXTRA] = _file_entry(tmp / EXTRA)
        manifest = {"format": FORMAT, "version": VERSION, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "model_spec": model.spec.to_dict(), "schema": schema.to_dict(), "metrics": metrics or {},
                    "compression": recipe_to_dicts(getattr(model, "compression_recipe", [])),
                    "info": info or {}, "versions": _versions(), "files": files}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True, default=_json_default))
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _file_entry(p: Path) -> dict[str, Any]:
    return {"sha256": sha256_file(p), "bytes": p.stat().st_size}


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def read_manifest(path: str | Path) -> dict[str, Any]:
    """Parse and sanity-check ``manifest.json`` without loading weights."""
    path = Path(path)
    mpath = path / MANIFEST
    if not path.is_dir():
        raise ArtifactError(f"{path} is not an artifact directory (train one with `crossrec train`)")
    if not mpath.is_file():
        raise ArtifactError(f"{path} has no {MANIFEST}; it is not a crossrec artifact")
    try:
        manifest = json.loads(mpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IntegrityError(f"{mpath} is not valid JSON ({exc}); the artifact is corrupted") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArtifactError(f"{mpath} is not a crossrec artifact manifest")
    if manifest.get("version") != VERSION:
        raise ArtifactError(f"{mpath}: artifact version {manifest.get('version')} is not supported "
                            f"(this crossrec reads version {VERSION}); re-export it with a matching crossrec")
    return manifest


def verify(path: str | Path) -> dict[str, Any]:
    """Check every listed file's size and sha256; returns the manifest."""
    path = Path(path)
    manifest = read_manifest(path)
    files = manifest.get("files") or {}
    if WEIGHTS not in files:
        raise IntegrityError(f"{path}/{MANIFEST} lists no {WEIGHTS}")
    for name, entry in files.items():
        p = path / name
        if Path(name).name != name or not p.is_file():
            raise IntegrityError(f"{path}: file {name!r} listed in the manifest is missing")
        if p.stat().st_size != entry.get("bytes") or sha256_file(p) != entry.get("sha256"):
            raise IntegrityError(f"{p}: sha256/size does not match the manifest; the file is corrupted or was "
                                 "modified after saving. Restore it from the original artifact")
    return manifest


def load_artifact(path: str | Path) -> Artifact:
    """Verify and load an artifact; the model comes back in eval mode."""
    path = Path(path)
    manifest = verify(path)
    try:
        spec = ModelSpec.from_dict(manifest["model_spec"])
        schema = FeatureSchema.from_dict(manifest["schema"])
    except (KeyError, ConfigError) as exc:
        raise IntegrityError(f"{path}/{MANIFEST}: invalid model spec or schema: {exc}") from None
    model = build(spec)
    try:
        restore_(model, recipe_from_dicts(manifest.get("compression", [])))
    except ConfigError as exc:
        raise ArtifactError(f"{path}/{MANIFEST}: cannot rebuild the compressed variant: {exc}") from None
    try:
        state = load_file(path / WEIGHTS)
    except Exception as exc:  # safetensors raises its own error types on a bad header
        raise IntegrityError(f"{path / WEIGHTS}: cannot be parsed as safetensors ({exc})") from None
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        raise IntegrityError(f"{path / WEIGHTS} does not match the spec: missing {missing}, unexpected "
                             f"{unexpected}, wrong shape {wrong}")
    model.load_state_dict(state)
    model.eval()
    extra = {}
    if EXTRA in manifest["files"]:
        extra = {k: v.numpy() for k, v in load_file(path / EXTRA).items()}
    return Artifact(model=model, spec=spec, schema=schema, manifest=manifest, extra=extra, path=path)
