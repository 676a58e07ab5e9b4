"""`Batch`: one mini-batch of CTR samples in the layout every crossrec model consumes.

Sparse features are *jagged*: one flat ``ids`` tensor of per-table (local) row ids and an
``offsets`` tensor of length ``B * F + 1``. Bags are ordered sample-major — bag ``b * F + f``
is feature ``f`` of sample ``b`` and holds ``ids[offsets[b*F+f] : offsets[b*F+f+1]]`` — so the
output of one fused ``embedding_bag`` call reshapes straight to ``(B, F, D)``. A bag may hold
several ids (multi-hot, pooled by sum) or none (missing: a zero vector).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from crossrec.errors import DataError


@dataclass
class Batch:
    """A mini-batch.

    >>> b = Batch.from_one_hot(torch.zeros(2, 13), torch.zeros(2, 26, dtype=torch.long))
    >>> b.batch_size, b.num_sparse, tuple(b.offsets.shape)
    (2, 26, (53,))
    """

    dense: torch.Tensor  # (B, num_dense) float32
    ids: torch.Tensor  # (nnz,) int64, row ids local to each feature's table
    offsets: torch.Tensor  # (B * F + 1,) int64, sample-major bags
    num_sparse: int
    labels: torch.Tensor | None = None  # (B,) float32

    @property
    def batch_size(self) -> int:
        return int(self.dense.shape[0])

    @property
    def lengths(self) -> torch.Tensor:
        """(B, F) number of ids in each bag."""
        return (self.offsets[1:] - self.offsets[:-1]).view(self.batch_size, self.num_sparse)

    @staticmethod
    def from_one_hot(dense: torch.Tensor, ids: torch.Tensor, labels: torch.Tensor | None = None) -> Batch:
        """Build from one id per feature: ``ids`` is ``(B, F)``."""
        b, f = ids.shape
        offsets = torch.arange(0, b * f + 1, dtype=torch.int64)
        return Batch(dense=dense.float(), ids=ids.reshape(-1).long(), offsets=offsets, num_sparse=f, labels=labels)

    def validate(self, cardinalities: tuple[int, ...], num_dense: int) -> None:
        """Raise DataError if shapes or id ranges do not match a schema."""
        b, f = self.batch_size, self.num_sparse
        if f != len(cardinalities):
            raise DataError(f"batch has {f} sparse features, the schema has {len(cardinalities)}")
        if self.dense.shape != (b, num_dense):
            raise DataError(f"dense features have shape {tuple(self.dense.shape)}, expected ({b}, {num_dense})")
        if self.offsets.shape != (b * f + 1,) or int(self.offsets[-1]) != self.ids.numel() or int(self.offsets[0]) != 0:
            raise DataError(f"offsets must have {b * f + 1} entries from 0 to len(ids)={self.ids.numel()}")
        if self.ids.numel():
            feature = torch.arange(f).repeat(b).repeat_interleave(self.lengths.reshape(-1))
            limit = torch.tensor(cardinalities)[feature]
            bad = (self.ids < 0) | (self.ids >= limit)
            if bool(bad.any()):
                i = int(bad.nonzero()[0])
                raise DataError(f"sparse id {int(self.ids[i])} of feature #{int(feature[i])} is outside "
                                f"[0, {int(limit[i])}); re-prepare the data with the model's schema")

    def to(self, device: torch.device | str) -> Batch:
        return Batch(dense=self.dense.to(device), ids=self.ids.to(device), offsets=self.offsets.to(device),
                     num_sparse=self.num_sparse, labels=None if self.labels is None else self.labels.to(device))
