"""`EagerRuntime`: the model as it is, in eval mode under ``torch.inference_mode`` — the baseline.

Compressed models run here unchanged (FBGEMM row-wise tables, bf16 / int8 Linear layers).
``hugepages=True`` first moves the model's large tables into transparent huge pages, in place
(:func:`crossrec.models.hugepages.advise_tables_`: 1.3-1.7x faster random lookups measured here).
"""

from __future__ import annotations

import torch
from torch import nn

from crossrec.models.hugepages import advise_tables_
from crossrec.runtime.base import Runtime, register_runtime


@register_runtime
class EagerRuntime(Runtime):
    """PyTorch eager on the CPU. ``load`` puts the model (not a copy) in eval mode.

    >>> import torch
    >>> from crossrec.data import Batch
    >>> from crossrec.models import ModelSpec, TableSpec, build
    >>> spec = ModelSpec(num_dense=2, tables=(TableSpec(name="a", num_embeddings=5),), embedding_dim=4,
    ...                  bottom_mlp=(4,), top_mlp=(8,))
    >>> model = build(spec, seed=0)
    >>> rt = EagerRuntime(model, torch.device("cpu"))
    >>> batch = Batch.from_one_hot(torch.zeros(2, 2), torch.tensor([[0], [3]]))
    >>> torch.equal(rt.predict(batch), model.predict_proba(batch))
    True
    """

    name = "eager"

    def __init__(self, model: nn.Module, device: torch.device, *, hugepages: bool = False):
        super().__init__(model, device)
        model.eval()
        self.info["hugepages_bytes"] = advise_tables_(model) if hugepages else 0

    def __call__(self, dense: torch.Tensor, ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.model(dense, ids, offsets)
