"""Runtimes: one interface to run a (compressed) CTRModel with an engine on a device.

``load(model, runtime, device, **options) -> Runtime``; ``runtime.predict(batch)`` gives
probabilities, ``runtime(dense, ids, offsets)`` logits (so ``crossrec.hardware.profile_many``
times runtimes like models). Registered runtimes (:data:`RUNTIMES`):

- ``"eager"``: PyTorch eager under ``inference_mode`` (any model, compressed or not);
- ``"compiled"``: ``torch.compile`` with inductor (any model);
- ``"script"``: TorchScript trace + freeze, checked against eager at load (any CTRModel; the
  fastest small-batch CPU path measured here);
- ``"onnx"`` / ``"onnx-int8"``: ONNX Runtime fp32 / ORT dynamic int8 (fp32 models only; needs
  the ``onnx`` extra);
- ``"cuda"``: fp16/bf16 on a CUDA GPU, picked by ``load(model, device="cuda")``;
- ``"auto"``: ``script`` on a CPU (``eager`` where the model does not trace, recorded), ``cuda`` on a GPU.

Importing this package imports torch but not onnx/onnxruntime (loaded on first ONNX use).
"""

from crossrec.errors import BackendError
from crossrec.runtime.auto import AutoRuntime
from crossrec.runtime.base import RUNTIMES, Runtime, get_runtime, load, options_of, register_runtime
from crossrec.runtime.compiled import CompiledRuntime
from crossrec.runtime.cuda import CudaRuntime
from crossrec.runtime.eager import EagerRuntime
from crossrec.runtime.onnx import OnnxInt8Runtime, OnnxRuntime
from crossrec.runtime.onnx_export import export_blockers, export_onnx
from crossrec.runtime.script import ScriptRuntime

__all__ = ["RUNTIMES", "AutoRuntime", "BackendError", "CompiledRuntime", "CudaRuntime", "EagerRuntime",
           "OnnxInt8Runtime", "OnnxRuntime", "Runtime", "ScriptRuntime", "export_blockers", "export_onnx",
           "get_runtime", "load", "options_of", "register_runtime"]
