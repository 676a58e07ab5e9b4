"""`AutoRuntime` (``load(model, "auto")``): the fastest runtime measured here that runs the model.

On a CPU that is ``script`` (TorchScript trace + freeze): 1.3-4x faster than eager for the
compressed DLRM variants at serving batch sizes (BENCHMARKS.md §4; 25-35% at 100-700 rows, 4x at
batch 1). A model the trace cannot reproduce (``BackendError`` from the script runtime's load-time
check) runs eager instead, and ``info["fallback"]`` says why: never silently. On a CUDA device it
is the ``cuda`` runtime (fp16 tables, bf16 dense), where ``hugepages`` does not apply and is ignored
(``info["hugepages_ignored"]``). ``info["chosen"]`` names the runtime that runs the model.

Serving replicas use it by default (:class:`crossrec.serve.plan.ReplicaSpec`).

>>> from crossrec.models import ModelSpec, TableSpec, build
>>> from crossrec.runtime import load
>>> spec = ModelSpec(num_dense=2, tables=(TableSpec(name="a", num_embeddings=5),), embedding_dim=4,
...                  bottom_mlp=(4,), top_mlp=(8,))
>>> rt = load(build(spec, seed=0), "auto")
>>> rt.info["chosen"], rt.info["fallback"]
('script', None)
"""

from __future__ import annotations

import torch
from torch import nn

from crossrec.data.batch import Batch
from crossrec.errors import BackendError
from crossrec.models.hugepages import advise_tables_
from crossrec.runtime.base import Runtime, register_runtime
from crossrec.runtime.cuda import CudaRuntime
from crossrec.runtime.eager import EagerRuntime
from crossrec.runtime.script import ScriptRuntime


@register_runtime
class AutoRuntime(Runtime):
    """``script`` on a CPU (``eager`` where the model does not trace), ``cuda`` on a GPU; see the module docstring."""

    name = "auto"
    devices = ("cpu", "cuda")

    def __init__(self, model: nn.Module, device: torch.device, *, hugepages: bool = False):
        super().__init__(model, device)
        fallback, moved = None, 0
        if device.type == "cuda":
            inner: Runtime = CudaRuntime(model, device)
        else:
            # tables move once, here, so a fallback after a failed trace does not copy them again
            moved = advise_tables_(model) if hugepages else 0
            try:
                inner = ScriptRuntime(model, device)
            except BackendError as exc:
                fallback = f"script: {exc}"[:2000]
                inner = EagerRuntime(model, device)
        self.inner = inner
        self.info = {**inner.info, "runtime": self.name, "chosen": inner.name, "fallback": fallback,
                     "hugepages_bytes": moved}
        if device.type == "cuda" and hugepages:
            self.info["hugepages_ignored"] = "huge pages apply to CPU tables; the cuda runtime holds a GPU copy"

    def __call__(self, dense: torch.Tensor, ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        return self.inner(dense, ids, offsets)

    def predict(self, batch: Batch) -> torch.Tensor:
        return self.inner.predict(batch)

    def close(self) -> None:
        self.inner.close()

