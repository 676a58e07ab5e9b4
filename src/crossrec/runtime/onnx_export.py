"""Export a :class:`~crossrec.models.CTRModel` to ONNX, with the fused EmbeddingBag rewritten.

ONNX has no EmbeddingBag, and the TorchScript exporter used here (``dynamo=False``: it needs
no ``onnxscript``) lowers ``embedding_bag`` to a Loop that ONNX Runtime runs slowly, if at all
(DESIGN.md §5). So an export-only stand-in, :class:`GatherBags`, replaces every
:class:`~crossrec.models.FusedEmbeddingBag` in a shallow copy of the model before tracing;
the rest of ``CTRModel.forward`` is traced unchanged. Two input layouts:

- ``"one_hot"`` (default; Criteo/Avazu): inputs ``dense (B, num_dense)`` float32 and
  ``ids (B, F)`` int64, one id per feature. The lookup is a single ``Gather`` of
  ``weight[ids + base]`` ``(B, F, D)`` — no pooling needed.
- ``"jagged"`` (multi-hot or missing values): inputs ``dense``, ``ids (nnz,)``, ``offsets (B*F+1,)``
  exactly as in :class:`~crossrec.data.Batch`. Each id's bag is found with a scatter-add of
  ones at the bag starts and a ``CumSum`` (so empty bags work), rows are gathered and summed
  per bag with ``ScatterElements(reduction="add")`` (opset >= 16).

Tables export in fp32 or in FBGEMM's **row-wise int8** layout (``dim`` uint8 codes, fp32 scale, fp32
bias per row): the int8 codes stay uint8 in the ONNX file, and each looked-up row is dequantized after
the ``Gather`` (``codes * scale + bias``), so a crossrec int8-table variant keeps its size on ONNX
Runtime. Every table of one embedding dim must share that precision. The other blocks crossrec's
compression swaps in (int4/int2 and fp16/bf16 tables, :class:`~crossrec.models.BF16Linear`,
:class:`~crossrec.models.Int8DynamicLinear`, a bf16 ``compute_dtype``) have no ONNX form here, and
:func:`export_blockers` names them. ONNX Runtime's own int8 for the MLPs is the ``"onnx-int8"``
runtime, applied to the export.

Models larger than ``external_data_threshold_bytes`` (default just under protobuf's 2 GiB
limit) are written as ``model.onnx`` + one ``model.onnx.data`` file of weights.
"""

from __future__ import annotations

import copy
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

from crossrec.config import check
from crossrec.errors import BackendError, ConfigError
from crossrec.models.ctr import CTRModel, parameter_bytes
from crossrec.models.embedding import FusedEmbeddingBag
from crossrec.models.interactions import CrossNetwork, DotInteraction
from crossrec.models.quantized import QuantizedEmbeddingBag

LAYOUTS = ("one_hot", "jagged")
EXPORTABLE_TABLE_PRECISIONS = ("int8",)  # FBGEMM row-wise int8: uint8 codes + fp32 scale and bias per row
OPSET = 17  # ScatterElements(reduction="add") needs >= 16
EXTERNAL_DATA_THRESHOLD_BYTES = 2**31 - 64 * 2**20  # protobuf's 2 GiB limit, less room for the graph
# Modules the exporter traces as they are (plus FusedEmbeddingBag, replaced by GatherBags).
_EXPORTABLE = (CTRModel, FusedEmbeddingBag, nn.EmbeddingBag, nn.Linear, nn.ReLU, nn.Dropout, nn.Identity,
               nn.Sequential, nn.ModuleList, DotInteraction, CrossNetwork)


def export_blockers(model: nn.Module) -> list[str]:
    """``"name (why)"`` for every part of ``model`` that keeps it from exporting; empty if it exports.

    >>> from crossrec.models import ModelSpec, TableSpec, build, quantize_dense_
    >>> spec = ModelSpec(num_dense=2, tables=(TableSpec(name="a", num_embeddings=5),), embedding_dim=4,
    ...                  bottom_mlp=(4,), top_mlp=(8,))
    >>> export_blockers(build(spec))
    []
    >>> export_blockers(quantize_dense_(build(spec), "int8"))[:1]
    ['bottom.0 (Int8DynamicLinear)']
    """
    if not isinstance(model, CTRModel):
        return [f"<model> ({type(model).__name__} is not a crossrec CTRModel)"]
    out = []
    if model.compute_dtype != torch.float32:
        out.append(f"compute_dtype ({model.compute_dtype}: only float32 compute exports)")
    for name, m in model.named_modules():
        if isinstance(m, FusedEmbeddingBag):
            out += [f"{name} (tables of dim {dim} in several precisions: only one per dim exports)"
                    for dim, members in zip(m.group_dims, m.dim_members) if len(members) > 1]
        if isinstance(m, QuantizedEmbeddingBag) and m.precision in EXPORTABLE_TABLE_PRECISIONS:
            continue
        if not isinstance(m, _EXPORTABLE):
            extra = f" {m.precision}" if isinstance(m, QuantizedEmbeddingBag) else ""
            out.append(f"{name} ({type(m).__name__}{extra})")
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        if t.is_floating_point() and t.dtype != torch.float32 and not any(name.startswith(b.split(" ")[0] + ".")
                                                                          for b in out):
            out.append(f"{name} ({t.dtype}: only float32 weights export)")
    return out


def check_exportable(model: nn.Module) -> None:
    """Raise :class:`ConfigError` listing every module that blocks ONNX export."""
    blockers = export_blockers(model)
    if blockers:
        raise ConfigError(
            f"cannot export {getattr(getattr(model, 'spec', None), 'name', 'model')!r} to ONNX: only fp32 CTRModels "
            f"(tables fp32 or row-wise int8) export, and these parts have no ONNX form: {'; '.join(blockers)}. "
            "Export the uncompressed or int8-table model (runtime='onnx', or 'onnx-int8' for ONNX Runtime's own "
            "int8 MLPs), or run this compressed variant with runtime='eager', 'script' or 'compiled'")


class GatherBags(nn.Module):
    """Export-only stand-in for a :class:`FusedEmbeddingBag` of fp32 or row-wise int8 tables: Gather
    (+ dequantize) + (segment) sum.

    Shares fp32 weights (no copy); an int8 group's packed rows are split into uint8 codes and fp32
    scale / bias columns. Same ``forward`` / ``forward_groups`` / ``inverse`` interface, so
    ``CTRModel.forward`` traces unchanged; in ``"one_hot"`` layout ``offsets`` is ignored.

    >>> fused = FusedEmbeddingBag([10, 20], [4, 4])
    >>> ids, offsets = torch.tensor([1, 2, 19, 3]), torch.tensor([0, 1, 3, 3, 4])  # 2 samples, one empty bag
    >>> bool(torch.allclose(GatherBags(fused, "jagged")(ids, offsets, 2), fused(ids, offsets, 2)))
    True
    >>> q = FusedEmbeddingBag([10, 20], [4, 4], precisions=["int8", "int8"])
    >>> bool(torch.allclose(GatherBags(q, "jagged")(ids, offsets, 2), q(ids, offsets, 2), atol=1e-5))
    True
    """

    def __init__(self, fused: FusedEmbeddingBag, layout: str):
        super().__init__()
        check(layout in LAYOUTS, "GatherBags", "layout", layout, f"one of {LAYOUTS}")
        self.layout, self.num_features, self.group_dims = layout, fused.num_features, fused.group_dims
        # fp32 tables give one lookup group per dim (check_exportable guarantees fp32).
        self.groups = [fused.group_features[members[0]] for members in fused.dim_members]
        self.register_buffer("inverse", fused.inverse, persistent=False)
        self.int8 = []
        for g, feats in enumerate(self.groups):
            bag = fused.bags[fused.dim_members[g][0]]
            if isinstance(bag, QuantizedEmbeddingBag):  # row-wise int8 (export_blockers refuses the rest)
                dim, packed = bag.dim, bag.weight
                self.register_buffer(f"weight_{g}", packed[:, :dim].contiguous())  # uint8 codes
                self.register_buffer(f"scale_{g}", packed[:, dim:dim + 4].contiguous().view(torch.float32))
                self.register_buffer(f"bias_{g}", packed[:, dim + 4:dim + 8].contiguous().view(torch.float32))
                self.int8.append(True)
            else:
                self.register_parameter(f"weight_{g}", bag.weight)  # shared, no copy
                self.int8.append(False)
            base = getattr(fused, f"base_{fused.dim_members[g][0]}")
            full = torch.zeros(self.num_features, dtype=torch.int64)
            full[feats] = base  # first row of each feature's table in this group, 0 for other features
            self.register_buffer(f"base_{g}", full, persistent=False)
            self.register_buffer(f"feats_{g}", torch.tensor(feats, dtype=torch.int64), persistent=False)
            inside = torch.zeros(self.num_features, dtype=torch.bool)
            inside[feats] = True
            self.register_buffer(f"inside_{g}", inside, persistent=False)

    def _rows(self, g: int, rows: torch.Tensor) -> torch.Tensor:
        """Float rows ``rows`` (any shape) of group ``g``'s table: Gather, and for int8 codes * scale + bias."""
        weight = getattr(self, f"weight_{g}")
        if not self.int8[g]:
            return weight[rows]
        return weight[rows].float() * getattr(self, f"scale_{g}")[rows] + getattr(self, f"bias_{g}")[rows]

    def forward_groups(self, ids: torch.Tensor, offsets: torch.Tensor | None, batch_size: int) -> list[torch.Tensor]:
        if self.layout == "one_hot":
            return self._one_hot(ids.view(batch_size, self.num_features))
        return self._jagged(ids, offsets, batch_size)

    def forward(self, ids: torch.Tensor, offsets: torch.Tensor | None, batch_size: int) -> torch.Tensor:
        return self.forward_groups(ids, offsets, batch_size)[0]

    def _one_hot(self, ids: torch.Tensor) -> list[torch.Tensor]:  # ids (B, F)
        out = []
        for g, feats in enumerate(self.groups):
            base = getattr(self, f"base_{g}")
            if len(feats) == self.num_features:
                out.append(self._rows(g, ids + base))  # (B, F, D)
            else:
                sel = getattr(self, f"feats_{g}")
                out.append(self._rows(g, ids.index_select(1, sel) + base.index_select(0, sel)))  # (B, F_g, D_g)
        return out

    def _jagged(self, ids: torch.Tensor, offsets: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
        n_bags = offsets.shape[0] - 1  # B * F
        starts = offsets[1:-1]  # where bags 1 .. B*F-1 start
        marks = torch.zeros(ids.shape[0] + 1, dtype=torch.int64).scatter_add(0, starts, torch.ones_like(starts))
        seg = marks.cumsum(0)[:-1]  # (nnz,) bag of every id; repeated starts (empty bags) skip bags
        feat = seg % self.num_features
        out = []
        for g, feats in enumerate(self.groups):
            rows = ids + getattr(self, f"base_{g}")[feat]
            if len(feats) != self.num_features:  # ids of other groups' features gather row 0, times 0
                keep = getattr(self, f"inside_{g}")[feat]
                vecs = self._rows(g, torch.where(keep, rows, torch.zeros_like(rows))) * keep.unsqueeze(1).float()
            else:
                vecs = self._rows(g, rows)  # (nnz, D)
            d = vecs.shape[1]
            pooled = torch.zeros(n_bags, d, dtype=vecs.dtype).scatter_add(0, seg.unsqueeze(1).expand(-1, d), vecs)
            pooled = pooled.view(batch_size, self.num_features, d)  # (B, F, D)
            if len(feats) != self.num_features:
                pooled = pooled.index_select(1, getattr(self, f"feats_{g}"))  # (B, F_g, D_g)
            out.append(pooled)
        return out


class GatherTriangle(nn.Module):
    """Export-only :class:`DotInteraction`: the same pairs, gathered as rows of the transposed product.

    ORT's Gather along axis 1 copies one float per index (0.7 ms at batch 512 x 351 pairs here);
    along axis 0 of the ``(n*n, B)`` transpose it copies whole rows.

    >>> dot = DotInteraction(4)
    >>> x = torch.randn(3, 4, 8)
    >>> torch.equal(GatherTriangle(dot)(x), dot(x))
    True
    """

    def __init__(self, dot: DotInteraction):
        super().__init__()
        self.register_buffer("flat", dot.flat, persistent=False)
        self.out_dim = dot.out_dim

    def forward(self, fields: torch.Tensor, out_dtype: torch.dtype | None = None) -> torch.Tensor:
        z = torch.bmm(fields, fields.transpose(1, 2))  # (B, n, n) -> (B, n(n-1)/2)
        out = z.flatten(1).t().index_select(0, self.flat).t()  # (P, B) rows -> (B, P)
        return out if out_dtype is None else out.to(out_dtype)


class _ExportCTR(nn.Module):
    """The traced module: the model with GatherBags, and the inputs of one layout."""

    def __init__(self, model: CTRModel, layout: str):
        super().__init__()
        m = copy.copy(model)
        m._modules = dict(model._modules)  # a shallow copy shares the module dict: never touch the original's
        for attr in ("embedding", "first_order"):
            if getattr(model, attr) is not None:
                setattr(m, attr, GatherBags(getattr(model, attr), layout))
        if model.dot is not None:
            m.dot = GatherTriangle(model.dot)
        self.model, self.layout = m, layout

    def forward(self, dense: torch.Tensor, ids: torch.Tensor, offsets: torch.Tensor | None = None) -> torch.Tensor:
        if self.layout == "one_hot":
            return self.model(dense, ids.reshape(-1), None)  # ids (B, F)
        return self.model(dense, ids, offsets)


def input_names(layout: str) -> list[str]:
    return ["dense", "ids"] if layout == "one_hot" else ["dense", "ids", "offsets"]


def export_onnx(model: nn.Module, path: str | Path, *, layout: str = "one_hot", opset: int = OPSET,
                external_data_threshold_bytes: int = EXTERNAL_DATA_THRESHOLD_BYTES) -> Path:
    """Write ``model`` (an fp32 CTRModel) as ONNX at ``path`` (a ``.onnx`` file); returns ``path``.

    The graph outputs ``logits (B,)``; the batch size (and, for ``"jagged"``, the id count) is
    dynamic. See the module docstring for layouts and external data.

    >>> import pytest; _ = pytest.importorskip("onnx")  # the optional 'onnx' extra
    >>> import tempfile
    >>> from crossrec.models import ModelSpec, TableSpec, build
    >>> spec = ModelSpec(num_dense=2, tables=(TableSpec(name="a", num_embeddings=5),), embedding_dim=4,
    ...                  bottom_mlp=(4,), top_mlp=(8,))
    >>> p = export_onnx(build(spec, seed=0), Path(tempfile.mkdtemp()) / "m.onnx")
    >>> p.name, p.stat().st_size > 0
    ('m.onnx', True)
    """
    onnx = _onnx()
    check(layout in LAYOUTS, "export_onnx", "layout", layout, f"one of {LAYOUTS}")
    check(opset >= 16, "export_onnx", "opset", opset, ">= 16 (ScatterElements with reduction='add')")
    check_exportable(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    spec, was = model.spec, model.training
    b = 2
    dense = torch.zeros(b, spec.num_dense)
    if layout == "one_hot":
        args: tuple = (dense, torch.zeros(b, len(spec.tables), dtype=torch.int64))
        axes = {"dense": {0: "batch"}, "ids": {0: "batch"}, "logits": {0: "batch"}}
    else:
        n = b * len(spec.tables)
        args = (dense, torch.zeros(n, dtype=torch.int64), torch.arange(n + 1, dtype=torch.int64))
        axes = {"dense": {0: "batch"}, "ids": {0: "nnz"}, "offsets": {0: "bags_plus_1"}, "logits": {0: "batch"}}
    external = parameter_bytes(model) > external_data_threshold_bytes
    model.eval()
    try:
        with tempfile.TemporaryDirectory(dir=path.parent, prefix=".export-") as tmp, warnings.catch_warnings():
            # The TorchScript exporter is deprecated in favour of dynamo=True, which needs onnxscript.
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            # Small models go straight to `path`; large ones via a scratch file (where the exporter
            # itself spills weights past 2 GiB, one file per tensor) re-saved with one data file.
            raw = Path(tmp) / "model.onnx" if external else path
            _remove(path)
            torch.onnx.export(_ExportCTR(model, layout), args, str(raw), dynamo=False, opset_version=opset,
                              input_names=input_names(layout), output_names=["logits"], dynamic_axes=axes)
            if external:
                save_onnx(onnx.load(str(raw)), path, external=True)  # onnx.load reads spilled weights too
    finally:
        model.train(was)
    return path


def _onnx():
    try:  # the optional "onnx" extra; imported on first use so `crossrec.runtime` imports without it
        import onnx
    except ImportError as exc:
        raise BackendError("the onnx package is not installed: pip install 'crossrec[onnx]' "
                           "(onnx and onnxruntime)") from exc
    return onnx


def _remove(path: Path) -> None:
    for f in (path, path.with_name(path.name + ".data")):
        f.unlink(missing_ok=True)  # a stale data file would be appended to, or read with a new graph


def save_onnx(proto, path: Path, *, external: bool) -> None:
    """Write ``proto`` at ``path``; with ``external``, its weights go to one ``<path>.data`` file."""
    onnx = _onnx()

    _remove(path)
    if external:
        onnx.save_model(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=path.name + ".data", size_threshold=1024)
    else:
        onnx.save_model(proto, str(path))
