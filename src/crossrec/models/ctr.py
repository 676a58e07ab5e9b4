"""`CTRModel` and `build(spec)`: one module for every interaction family in :class:`ModelSpec`."""

from __future__ import annotations

import torch
from torch import nn

from crossrec.data.batch import Batch
from crossrec.models.embedding import FusedEmbeddingBag
from crossrec.models.interactions import CrossNetwork, DotInteraction, fm_second_order, mlp
from crossrec.models.spec import ModelSpec


class CTRModel(nn.Module):
    """Embeddings -> interaction -> over arch; ``forward(dense, ids, offsets)`` returns logits ``(B,)``.

    The tensor signature (not a Batch) keeps the model traceable and exportable.

    >>> from crossrec.models.spec import TableSpec
    >>> spec = ModelSpec(num_dense=2, tables=(TableSpec(name="a", num_embeddings=5),), embedding_dim=4,
    ...                  bottom_mlp=(4,), top_mlp=(8,))
    >>> model = build(spec)
    >>> b = Batch.from_one_hot(torch.zeros(3, 2), torch.tensor([[0], [1], [4]]))
    >>> model.predict_proba(b).shape
    torch.Size([3])
    """

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.spec = spec
        # dtype of the dense compute (MLPs, interaction); bf16 compression sets it (DESIGN §5: oneDNN
        # AVX512-BF16 GEMMs and bmm are 2-3x faster than fp32 here). Lookups and the output stay fp32.
        self.compute_dtype = torch.float32
        d, dims = spec.embedding_dim, list(spec.dims())
        n_tab, has_dense = len(spec.tables), spec.num_dense > 0
        second_order = spec.interaction != "lr"  # LR uses only the first-order terms below
        self.embedding = FusedEmbeddingBag([t.num_embeddings for t in spec.tables], dims) \
            if n_tab and second_order else None
        self.bottom = mlp(spec.num_dense, spec.bottom_mlp) if has_dense and second_order else None
        dense_out = (spec.bottom_mlp[-1] if spec.bottom_mlp else spec.num_dense) if has_dense else 0
        equal_dims = spec.interaction in ("dot", "fm")
        groups = self.embedding.group_dims if self.embedding is not None else []
        # Project groups whose dim differs from embedding_dim, where the interaction needs equal dims.
        self.project = nn.ModuleList(nn.Linear(g, d, bias=False) if equal_dims and g != d else nn.Identity()
                                     for g in groups)
        emb_flat = n_tab * d if equal_dims else sum(dims)
        inter = spec.interaction
        self.cross = self.dot = None
        self.first_order = self.first_dense = None
        if inter == "dot":
            self.dot = DotInteraction(n_tab + has_dense)
            top_in = self.dot.out_dim + dense_out
        elif inter == "cross":
            top_in = dense_out + emb_flat
            self.cross = CrossNetwork(top_in, spec.cross_layers, spec.cross_rank)
        else:  # fm, concat, lr
            top_in = dense_out + emb_flat
        if inter in ("fm", "lr"):  # first-order (linear) terms
            self.first_order = FusedEmbeddingBag([t.num_embeddings for t in spec.tables], [1] * n_tab) if n_tab \
                else None
            self.first_dense = nn.Linear(spec.num_dense, 1) if has_dense else None
        deep = inter not in ("lr",) and not (inter == "fm" and not spec.top_mlp)
        self.top = mlp(top_in, spec.top_mlp, final=1, dropout=spec.dropout) if deep else None
        if self.first_dense is None and self.first_order is not None:
            self.bias = nn.Parameter(torch.zeros(1))
        else:
            self.bias = None

    def _embed(self, ids: torch.Tensor, offsets: torch.Tensor, b: int) -> torch.Tensor | None:
        if self.embedding is None:
            return None
        parts = [proj(t) for proj, t in zip(self.project, self.embedding.forward_groups(ids, offsets, b))]
        if len(parts) == 1:
            return parts[0]  # (B, F, D)
        if self.spec.interaction in ("dot", "fm"):
            return torch.cat(parts, dim=1)[:, self.embedding.inverse]  # (B, F, D) in feature order
        flat = torch.cat([p.flatten(1) for p in parts], dim=1)  # mixed dims: only used flattened
        return flat

    def forward(self, dense: torch.Tensor, ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        b = dense.shape[0]
        inter = self.spec.interaction
        first = self.table_first_order(ids, offsets, b) if inter in ("fm", "lr") else None
        emb = None if inter == "lr" else self._embed(ids, offsets, b)  # (B, F, D), or (B, sum dims) mixed dims
        return self.dense_forward(dense, emb, first)

    def dense_forward(self, dense: torch.Tensor, emb: torch.Tensor | None,
                      first_order: torch.Tensor | None = None) -> torch.Tensor:
        """The dense half of :meth:`forward` — bottom MLP, interaction, top MLP — on the looked-up
        embeddings ``emb`` and, for FM/LR, the tables' first-order terms (:meth:`table_first_order`).
        Partitioned serving runs the two halves in different processes (crossrec.serve.partition)."""
        b = dense.shape[0]
        inter = self.spec.interaction
        if inter == "lr":
            return self._first_order_logit(dense, first_order, b).squeeze(1)
        if self.compute_dtype != torch.float32:  # e.g. bf16: MLPs *and* the interaction run in it
            dense = dense.to(self.compute_dtype)
            emb = emb.to(self.compute_dtype) if emb is not None else None
        x = self.bottom(dense) if self.bottom is not None else (dense if self.spec.num_dense else None)
        if x is not None and x.dtype != self.compute_dtype:  # an int8 bottom MLP returns fp32
            x = x.to(self.compute_dtype)
        logit = self._first_order_logit(dense, first_order, b) if inter == "fm" else None
        fields = [] if x is None else [x.unsqueeze(1)]
        if emb is not None:
            fields.append(emb if emb.dim() == 3 else emb.unsqueeze(1))
        if inter == "dot":
            t = torch.cat(fields, dim=1)  # (B, n, D)
            # A top MLP that quantizes from fp32 (static int8) takes the fp32 pairs the gather makes,
            # saving a round trip through the compute dtype (2 of the 7 casts of the int8-static forward).
            fp32_top = self.compute_dtype != torch.float32 and getattr(self.top, "input_dtype", None) == torch.float32
            z = self.dot(t, torch.float32 if fp32_top else None)
            if x is not None and fp32_top:
                x = x.float()
            top_in = torch.cat([x, z], dim=1) if x is not None else z
        else:
            flat = [f.flatten(1) for f in fields]
            top_in = torch.cat(flat, dim=1) if len(flat) > 1 else flat[0]
            if inter == "cross":
                top_in = self.cross(top_in)
            if inter == "fm":
                logit = logit + fm_second_order(torch.cat(fields, dim=1))
        out = self.top(top_in) if self.top is not None else 0.0
        return (out + logit if logit is not None else out).squeeze(1).float()

    def table_first_order(self, ids: torch.Tensor, offsets: torch.Tensor, b: int) -> torch.Tensor | None:
        """``(B, 1)`` sum of the tables' first-order weights (FM/LR), or None without such tables."""
        return self.first_order(ids, offsets, b).sum(dim=1) if self.first_order is not None else None

    def _first_order_logit(self, dense: torch.Tensor, table_terms: torch.Tensor | None, b: int) -> torch.Tensor:
        # bias lives in first_dense when there are dense features, else in self.bias
        logit = self.first_dense(dense) if self.first_dense is not None else self.bias.expand(b, 1)
        return logit + table_terms if table_terms is not None else logit  # (B, 1)

    @torch.no_grad()
    def predict_proba(self, batch: Batch) -> torch.Tensor:
        """Click probabilities ``(B,)`` for a batch (eval mode, no grad)."""
        was = self.training
        self.eval()
        try:
            return torch.sigmoid(self(batch.dense, batch.ids, batch.offsets))
        finally:
            self.train(was)


def build(spec: ModelSpec, *, seed: int | None = None) -> CTRModel:
    """Build a freshly initialised model from its spec (seeded if ``seed`` is given)."""
    if seed is None:
        return CTRModel(spec)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return CTRModel(spec)


def parameter_bytes(model: nn.Module) -> int:
    """Bytes held by parameters and persistent buffers."""
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())
