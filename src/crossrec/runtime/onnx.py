"""ONNX Runtime peers: ``"onnx"`` (fp32) and ``"onnx-int8"`` (ORT dynamic int8 of the fp32 export).

The model is exported with :func:`~crossrec.runtime.onnx_export.export_onnx` (fused
EmbeddingBag rewritten as Gather + segment sum; ``layout="one_hot"`` or ``"jagged"``, see
there) into ``path`` (a temporary directory, removed by :meth:`OnnxRuntime.close`, when not given)
and run by an ``InferenceSession`` on the CPU execution provider. Session options:

- ``intra_op_num_threads`` (default: ``torch.get_num_threads()``, so ORT and torch use the same
  cores), ``inter_op_num_threads=1`` and sequential execution (the graph is a chain);
- ``session.intra_op.allow_spinning = "0"`` unless ``allow_spinning=True``: ORT's pool threads spin
  after a call and starve the next torch call on 2 cores (DESIGN.md §5).

``"onnx-int8"`` runs ``onnxruntime.quantization.quantize_dynamic`` on the fp32 export: every
Linear becomes ``MatMulInteger`` with int8 weights (per output channel by default; 7-bit on CPUs without
AVX512-VNNI, whose u8 x s8 kernels would saturate) and uint8
activations quantized per call. The exporter writes Linear as ``Gemm``, which ORT's dynamic
quantizer skips, so Gemms are rewritten as MatMul + Add first. Embedding ``Gather``s are **not**
quantized unless ``quantize_embeddings=True``: ORT quantizes a table per *tensor* (one scale for
every row of every fused table), which costs accuracy (DESIGN.md §5); MatMuls between two
activations (the DLRM dot interaction) stay fp32 (ORT's ``MatMulConstBOnly``).
"""

from __future__ import annotations

import logging
import tempfile
import time
import weakref
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn

from crossrec.config import check
from crossrec.errors import BackendError, DataError
from crossrec.models.ctr import parameter_bytes
from crossrec.models.static_int8 import has_vnni
from crossrec.runtime.base import Runtime, register_runtime
from crossrec.runtime.onnx_export import (
    EXTERNAL_DATA_THRESHOLD_BYTES,
    LAYOUTS,
    OPSET,
    check_exportable,
    export_onnx,
    save_onnx,
)

OPT_LEVELS = ("disable", "basic", "extended", "all")


def _ort():
    try:
        import onnxruntime
    except ImportError as exc:
        raise BackendError("ONNX Runtime is not installed: pip install 'crossrec[onnx]' "
                           "(onnx and onnxruntime)") from exc
    return onnxruntime


def session_options(*, intra_op_num_threads: int, inter_op_num_threads: int = 1, allow_spinning: bool = False,
                    graph_optimization_level: str = "all"):
    """``onnxruntime.SessionOptions`` as crossrec runs them (see the module docstring)."""
    ort = _ort()
    so = ort.SessionOptions()
    so.intra_op_num_threads = intra_op_num_threads
    so.inter_op_num_threads = inter_op_num_threads
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL, "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[graph_optimization_level]
    spin = "1" if allow_spinning else "0"
    so.add_session_config_entry("session.intra_op.allow_spinning", spin)
    so.add_session_config_entry("session.inter_op.allow_spinning", spin)
    return so


@register_runtime
class OnnxRuntime(Runtime):
    """An fp32 CTRModel exported to ONNX and run by ONNX Runtime on the CPU (module docstring).

    >>> import pytest; _ = pytest.importorskip("onnxruntime")  # the optional 'onnx' extra
    >>> import torch
    >>> from crossrec.data import Batch
    >>> from crossrec.models import ModelSpec, TableSpec, build
    >>> spec = ModelSpec(num_dense=2, tables=(TableSpec(name="a", num_embeddings=5),), embedding_dim=4,
    ...                  bottom_mlp=(4,), top_mlp=(8,))
    >>> model = build(spec, seed=0)
    >>> rt = OnnxRuntime(model, torch.device("cpu"))
    >>> batch = Batch.from_one_hot(torch.zeros(2, 2), torch.tensor([[0], [3]]))
    >>> bool(torch.allclose(rt.predict(batch), model.predict_proba(batch), atol=1e-6))
    True
    >>> rt.session_options.get_session_config_entry("session.intra_op.allow_spinning")
    '0'
    >>> rt.close()
    """

    name = "onnx"

    def __init__(self, model: nn.Module, device: torch.device, *, layout: str = "one_hot",
                 path: str | Path | None = None, intra_op_num_threads: int | None = None,
                 inter_op_num_threads: int = 1, allow_spinning: bool = False, graph_optimization_level: str = "all",
                 external_data_threshold_bytes: int = EXTERNAL_DATA_THRESHOLD_BYTES, opset: int = OPSET):
        super().__init__(model, device)
        ort = _ort()
        own = type(self).__name__
        check(layout in LAYOUTS, own, "layout", layout, f"one of {LAYOUTS}")
        check(graph_optimization_level in OPT_LEVELS, own, "graph_optimization_level", graph_optimization_level,
              f"one of {OPT_LEVELS}")
        threads = torch.get_num_threads() if intra_op_num_threads is None else intra_op_num_threads
        check(threads >= 1 and inter_op_num_threads >= 1, own, "intra_op_num_threads/inter_op_num_threads",
              (intra_op_num_threads, inter_op_num_threads), ">= 1")
        check_exportable(model)  # before any file is written
        self.layout, self.num_features = layout, len(self.spec.tables)
        self._tmp = None
        if path is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="crossrec-onnx-")
            self._cleanup = weakref.finalize(self, self._tmp.cleanup)
            path = self._tmp.name
        self.dir = Path(path)
        self.dir.mkdir(parents=True, exist_ok=True)
        external = parameter_bytes(model) > external_data_threshold_bytes
        t0 = time.perf_counter()
        fp32 = export_onnx(model, self.dir / "model.onnx", layout=layout, opset=opset,
                           external_data_threshold_bytes=external_data_threshold_bytes)
        self.info["export_s"] = round(time.perf_counter() - t0, 3)
        self.model_path = self._prepare(fp32, external)
        self.session_options = session_options(intra_op_num_threads=threads,
                                               inter_op_num_threads=inter_op_num_threads,
                                               allow_spinning=allow_spinning,
                                               graph_optimization_level=graph_optimization_level)
        t0 = time.perf_counter()
        self.session = ort.InferenceSession(str(self.model_path), self.session_options,
                                            providers=["CPUExecutionProvider"])
        self.info.update(session_s=round(time.perf_counter() - t0, 3), layout=layout, path=str(self.model_path),
                         external_data=external, intra_op_num_threads=threads,
                         inter_op_num_threads=inter_op_num_threads, allow_spinning=allow_spinning,
                         graph_optimization_level=graph_optimization_level, onnxruntime=ort.__version__)
        self._arange: dict[int, torch.Tensor] = {}

    def _prepare(self, fp32: Path, external: bool) -> Path:
        """The file the session runs (the fp32 export here; a quantized copy in ``onnx-int8``)."""
        return fp32

    def __call__(self, dense: torch.Tensor, ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        b = int(dense.shape[0])
        feeds = {"dense": dense.detach().float().contiguous().numpy()}
        if self.layout == "one_hot":
            self._check_one_hot(b, ids, offsets)
            feeds["ids"] = ids.detach().long().reshape(b, self.num_features).numpy()
        else:
            feeds["ids"], feeds["offsets"] = ids.detach().long().numpy(), offsets.detach().long().numpy()
        (logits,) = self.session.run(["logits"], feeds)
        return torch.from_numpy(np.ascontiguousarray(logits))

    def _check_one_hot(self, b: int, ids: torch.Tensor, offsets: torch.Tensor) -> None:
        n = b * self.num_features
        ref = self._arange.get(n)
        if ref is None:
            ref = torch.arange(n + 1, dtype=offsets.dtype)
            if len(self._arange) < 64:  # a few batch sizes recur; don't grow without bound
                self._arange[n] = ref
        if ids.numel() != n or not torch.equal(offsets, ref):
            raise DataError(f"runtime {self.name!r} was exported with layout='one_hot' (one id per feature), but this "
                            f"batch of {b} has {ids.numel()} ids for {n} bags (multi-hot or missing values); "
                            "load it with layout='jagged'")

    def close(self) -> None:
        self.session = None
        if self._tmp is not None:
            self._cleanup()


@register_runtime
class OnnxInt8Runtime(OnnxRuntime):
    """``"onnx"`` plus ORT's ``quantize_dynamic`` (int8 MatMul weights; see the module docstring).

    Options beyond ``"onnx"``'s: ``per_channel`` (one weight scale per output column, default
    True) and ``quantize_embeddings`` (also quantize the table Gathers per tensor; default False).

    >>> import pytest; _ = pytest.importorskip("onnxruntime")  # the optional 'onnx' extra
    >>> import onnx, torch
    >>> from crossrec.models import ModelSpec, TableSpec, build
    >>> spec = ModelSpec(num_dense=2, tables=(TableSpec(name="a", num_embeddings=5),), embedding_dim=4,
    ...                  bottom_mlp=(8, 4), top_mlp=(8,))
    >>> rt = OnnxInt8Runtime(build(spec, seed=0), torch.device("cpu"))
    >>> sorted({n.op_type for n in onnx.load(str(rt.model_path)).graph.node} & {"Gemm", "MatMulInteger"})
    ['MatMulInteger']
    >>> rt.close()
    """

    name = "onnx-int8"

    def __init__(self, model: nn.Module, device: torch.device, *, per_channel: bool = True,
                 quantize_embeddings: bool = False, **options):
        self.per_channel, self.quantize_embeddings = per_channel, quantize_embeddings
        super().__init__(model, device, **options)
        self.info.update(per_channel=per_channel, quantize_embeddings=quantize_embeddings)

    def _prepare(self, fp32: Path, external: bool) -> Path:
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic

        t0 = time.perf_counter()
        prep = fp32.with_name("model.matmul.onnx")  # a file, not a proto: quantize_dynamic copes with > 2 GB then
        save_onnx(gemm_to_matmul(onnx.load(str(fp32))), prep, external=external)
        out = fp32.with_name("model.int8.onnx")
        ops = ["MatMul", "Gather"] if self.quantize_embeddings else ["MatMul"]
        # Without AVX512-VNNI, ORT's u8 x s8 kernels add product pairs into a saturating int16
        # (vpmaddubsw); 7-bit weights keep them exact (ORT's documented remedy), as static int8 does.
        reduce_range = not has_vnni()
        self.info["reduce_range"] = reduce_range
        with _quiet_quantizer():
            quantize_dynamic(prep, out, op_types_to_quantize=ops, per_channel=self.per_channel,
                             reduce_range=reduce_range, weight_type=QuantType.QInt8,
                             use_external_data_format=external)
        for f in (prep, prep.with_name(prep.name + ".data")):
            f.unlink(missing_ok=True)
        self.info["quantize_s"] = round(time.perf_counter() - t0, 3)
        return out


class _DropPreprocessHint(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Please consider to run pre-processing")


@contextmanager
def _quiet_quantizer():
    # quantize_dynamic logs this hint on the root logger every time; the pre-processing it suggests
    # (shape inference + graph optimization) is what the session does at load anyway.
    f = _DropPreprocessHint()
    root = logging.getLogger()
    root.addFilter(f)
    try:
        yield
    finally:
        root.removeFilter(f)


def gemm_to_matmul(proto):
    """Rewrite ``Gemm(A, B, C)`` with a constant B as ``MatMul(A, B') + C``, in place; returns ``proto``.

    ORT's dynamic quantizer handles MatMul but not Gemm (``IntegerOpsRegistry``).
    """
    from onnx import helper, numpy_helper

    graph = proto.graph
    inits = {t.name: t for t in graph.initializer}
    nodes = []
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if (node.op_type != "Gemm" or node.input[1] not in inits or attrs.get("transA", 0)
                or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0):
            nodes.append(node)
            continue
        w = numpy_helper.to_array(inits[node.input[1]])
        w_name = node.input[1] + "_kn"
        graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(w.T if attrs.get("transB", 0) else w),
                                                         w_name))
        if len(node.input) > 2 and node.input[2]:
            mm = node.output[0] + "_mm"
            nodes.append(helper.make_node("MatMul", [node.input[0], w_name], [mm], name=node.name + "_matmul"))
            nodes.append(helper.make_node("Add", [mm, node.input[2]], list(node.output), name=node.name + "_add"))
        else:
            nodes.append(helper.make_node("MatMul", [node.input[0], w_name], list(node.output), name=node.name))
    used = {i for n in nodes for i in n.input}
    keep = [t for t in graph.initializer if t.name in used]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.initializer[:]
    graph.initializer.extend(keep)
    return proto
