"""TorchRec peer for the compression benchmark (issue #3): what a TorchRec user deploys for CPU inference.

Issue #3 asks for "TorchRec's quantized EmbeddingBagCollection (optional extra)" as a peer that crossrec's selected
variant must beat. The peer built here from a crossrec fp32 :class:`~crossrec.models.CTRModel`:

- one TorchRec ``EmbeddingBagConfig`` per crossrec table (sum pooling, the same fp32 rows), collected in a
  ``torchrec.modules.embedding_modules.EmbeddingBagCollection`` built on the meta device (TorchRec's own pattern for
  loading a checkpoint: no random init of tables that are overwritten anyway);
- quantized with TorchRec's inference quantization, ``torchrec.quant.embedding_modules.EmbeddingBagCollection
  .from_float`` under a ``QuantConfig`` whose weight dtype is ``torch.qint8`` (what ``torchrec.inference.modules
  .quantize_embeddings(m, torch.qint8, ...)`` does). FBGEMM stores every row as int8 codes with an fp16 scale and
  bias in front (row-wise int8) and serves all tables from one ``IntNBitTableBatchedEmbeddingBagsCodegen`` (TBE);
- the crossrec model's own dense half (bottom MLP, interaction, top MLP) in FP32 eager (``CTRModel.dense_forward``).

``forward(dense, ids, offsets)`` takes crossrec's Batch tensors (sample-major bags: bag ``b * F + f`` is sample b,
feature f) and builds TorchRec's ``KeyedJaggedTensor`` (feature-major) with FBGEMM's ``permute_1D_sparse_data``:
that conversion is part of the peer's cost, as it is for a user whose request arrives sample by sample.

TorchRec is an optional extra, installed with ``--no-deps`` so pip never touches the pinned torch (see INSTALL).

Example (with TorchRec installed)::

    from crossrec.models import ModelSpec, TableSpec, build
    model = build(ModelSpec(num_dense=2, tables=(TableSpec(name="a", num_embeddings=50),), embedding_dim=8,
                            bottom_mlp=(8,), top_mlp=(8,)))
    peer = torchrec_int8_peer(model)          # nn.Module: peer(dense, ids, offsets) -> logits (B,)
    state_bytes(peer)                         # int8 tables (with FBGEMM's row padding) + fp32 dense weights
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from crossrec.errors import ConfigError
from crossrec.models import CTRModel

# What worked with torch 2.13.0+cpu (DESIGN.md §5); every package --no-deps so torch stays pinned. tensordict and the
# rest are needed by `import torchrec` itself (torchrec/__init__ imports its distributed package).
INSTALL = (".venv/bin/pip install --no-deps fbgemm-gpu-cpu==1.8.0 torchrec==1.8.0 tensordict==0.15.3 "
           "pyvers==0.2.3 cloudpickle==3.1.3 pyre-extensions==0.0.32 typing-inspect==0.9.0 mypy-extensions==1.1.0")

# weights= choices: "int8" is the peer; "fp32" is TorchRec's unquantized EBC (checks the conversion exactly).
WEIGHTS = ("int8", "fp32")


def torchrec_available() -> bool:
    """True when TorchRec's quantized EBC and FBGEMM's CPU ops import (False when absent or built for another torch)."""
    try:
        import fbgemm_gpu  # noqa: F401  (registers torch.ops.fbgemm)
        import torchrec.quant.embedding_modules  # noqa: F401
    except (ImportError, OSError, RuntimeError):  # an fbgemm .so built against another torch raises OSError
        return False
    return True


def _check(model: nn.Module) -> None:
    if not isinstance(model, CTRModel):
        raise ConfigError(f"the TorchRec peer is built from a crossrec CTRModel, got {type(model).__name__}; "
                          "pass the fp32 model (crossrec.models.build or an artifact's .model)")
    inter = model.spec.interaction
    if model.embedding is None or model.first_order is not None:
        raise ConfigError(f"the TorchRec peer covers models whose tables feed the interaction only (dot, cross, "
                          f"concat); interaction {inter!r} also has first-order tables (or none at all): "
                          "benchmark it against crossrec's own variants instead")


def _float_ebc(model: CTRModel, *, clone: bool) -> nn.Module:
    """TorchRec's float EBC holding the model's tables: table ``t{f}`` serves feature ``f{f}``."""
    from torchrec.modules.embedding_configs import EmbeddingBagConfig, PoolingType
    from torchrec.modules.embedding_modules import EmbeddingBagCollection

    emb = model.embedding
    configs = [EmbeddingBagConfig(name=f"t{f}", embedding_dim=d, num_embeddings=n, feature_names=[f"f{f}"],
                                  pooling=PoolingType.SUM)
               for f, (n, d) in enumerate(zip(emb.num_embeddings, emb.dims))]
    ebc = EmbeddingBagCollection(tables=configs, device=torch.device("meta"))  # no init: weights come next
    for f, cfg in enumerate(configs):
        w = emb.table_weight(f)  # (rows, D) fp32; a view of the fused fp32 table (no 1.4 GB copy to quantize)
        ebc.embedding_bags[cfg.name].weight = nn.Parameter(w.clone() if clone else w, requires_grad=False)
    return ebc


def _int8_ebc(model: CTRModel) -> nn.Module:
    from torch.ao.quantization import PlaceholderObserver
    from torchrec.modules.embedding_configs import QuantConfig
    from torchrec.quant.embedding_modules import EmbeddingBagCollection as QuantEmbeddingBagCollection

    ebc = _float_ebc(model, clone=False)
    # TorchRec reads the table dtype from the qconfig's weight observer and the pooled output dtype from the
    # activation one (fp32 here: the dense half is fp32).
    ebc.qconfig = QuantConfig(activation=PlaceholderObserver.with_args(dtype=torch.float),
                              weight=PlaceholderObserver.with_args(dtype=torch.qint8))
    return QuantEmbeddingBagCollection.from_float(ebc)


class TorchRecPeer(nn.Module):
    """TorchRec EBC lookups + a crossrec model's dense half; ``forward(dense, ids, offsets)`` -> logits ``(B,)``.

    Build it with :func:`torchrec_peer` / :func:`torchrec_int8_peer` (see the module docstring for an example).
    """

    def __init__(self, ebc: nn.Module, model: CTRModel):
        super().__init__()
        self.ebc = ebc
        # The dense half: a copy of the model without its tables (memo maps them to None, so deepcopy skips them).
        self.dense = copy.deepcopy(model, memo={id(model.embedding): None}).eval()
        emb = model.embedding
        self.num_features = emb.num_features
        self.keys = [f"f{f}" for f in range(self.num_features)]
        self.dims = list(emb.dims)
        self.group_dims = list(emb.group_dims)
        # Pooled output columns of each dim group (features ascending), as FusedEmbeddingBag.forward_groups orders
        # them; with a single dim and no projection the output is one view.
        starts = torch.tensor([0, *self.dims[:-1]]).cumsum(0).tolist()
        for i, d in enumerate(self.group_dims):
            cols = [starts[f] + c for f in range(self.num_features) if self.dims[f] == d for c in range(d)]
            self.register_buffer(f"cols_{i}", torch.tensor(cols, dtype=torch.int64), persistent=False)
        self.register_buffer("inverse", emb.inverse.clone(), persistent=False)
        self.single = len(self.group_dims) == 1 and isinstance(self.dense.project[0], nn.Identity)

    def kjt(self, ids: torch.Tensor, offsets: torch.Tensor, batch_size: int):
        """crossrec's sample-major bags as TorchRec's feature-major ``KeyedJaggedTensor`` (tensor ops only)."""
        from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

        f = self.num_features
        lengths = offsets[1:] - offsets[:-1]  # (B*F,) sample-major
        # Position f*B + b of the feature-major order takes sample-major bag b*F + f.
        perm = torch.arange(batch_size * f, dtype=torch.int32).view(batch_size, f).t().reshape(-1)
        lengths, values, _ = torch.ops.fbgemm.permute_1D_sparse_data(perm, lengths, ids, None, ids.numel())
        return KeyedJaggedTensor(keys=self.keys, values=values, lengths=lengths, stride=batch_size)

    def _embed(self, pooled: torch.Tensor, b: int) -> torch.Tensor:
        # pooled: (B, sum of dims), features in order. Mirrors CTRModel._embed on FusedEmbeddingBag's groups.
        if self.single:
            return pooled.view(b, self.num_features, self.dims[0])  # (B, F, D)
        parts = [proj(pooled.index_select(1, getattr(self, f"cols_{i}")).view(b, -1, d))
                 for i, (proj, d) in enumerate(zip(self.dense.project, self.group_dims))]
        if len(parts) == 1:
            return parts[0]
        if self.dense.spec.interaction in ("dot", "fm"):
            return torch.cat(parts, dim=1)[:, self.inverse]  # (B, F, D) in feature order
        return torch.cat([p.flatten(1) for p in parts], dim=1)  # mixed dims: only used flattened

    def forward(self, dense: torch.Tensor, ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        b = dense.shape[0]
        pooled = self.ebc(self.kjt(ids, offsets, b)).values()  # KeyedTensor -> (B, sum of dims)
        return self.dense.dense_forward(dense, self._embed(pooled, b))


def torchrec_peer(model: nn.Module, *, weights: str = "int8") -> TorchRecPeer:
    """A :class:`TorchRecPeer` for a crossrec fp32 ``CTRModel``; ``model`` is left unchanged.

    ``weights="int8"``: TorchRec's quantized EBC (row-wise int8, FBGEMM TBE) — the benchmark peer.
    ``weights="fp32"``: TorchRec's unquantized EBC (one ``nn.EmbeddingBag`` per table, copied weights): it must
    reproduce the crossrec model's logits, which checks the KJT conversion and the table mapping.
    """
    if weights not in WEIGHTS:
        raise ConfigError(f"torchrec_peer: weights={weights!r} is not one of {WEIGHTS}")
    if not torchrec_available():
        raise ImportError(f"TorchRec with FBGEMM's CPU ops is not installed; install it with: {INSTALL}")
    _check(model)
    ebc = _int8_ebc(model) if weights == "int8" else _float_ebc(model, clone=True)
    return TorchRecPeer(ebc, model).eval()


def torchrec_int8_peer(model: nn.Module) -> TorchRecPeer:
    """TorchRec's int8 EBC + the model's FP32 dense half (see :func:`torchrec_peer`)."""
    return torchrec_peer(model, weights="int8")


def state_bytes(module: nn.Module) -> int:
    """Bytes of the distinct storages behind ``module``'s state_dict.

    For the int8 peer that is FBGEMM's table buffer as allocated (int8 codes, fp16 scale + bias per row, rows padded
    to 16 bytes: what ``torch.save`` of the state writes) plus the fp32 dense weights.
    """
    seen: dict[int, int] = {}
    for t in module.state_dict().values():
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())
