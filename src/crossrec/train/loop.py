"""Training and evaluation: Adam for dense parameters, a sparse optimizer for the tables,
early stopping on validation AUC, seeded.

The library never prints: pass ``progress`` (a callable taking a :class:`TrainEvent`) to
drive a progress bar, as the CLI does.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from torch import nn

from crossrec.config import Config, check
from crossrec.data.dataset import CTRData
from crossrec.errors import DataError
from crossrec.models.ctr import CTRModel
from crossrec.models.embedding import FusedEmbeddingBag
from crossrec.train.metrics import Metrics, compute


@dataclass(frozen=True, kw_only=True)
class TrainConfig(Config):
    """How to train.

    - ``lr``: Adam learning rate for MLPs/interactions; ``embedding_lr``: for the tables, with
      ``embedding_optimizer`` ``sparse_adam`` (torch SparseAdam) or ``adagrad`` (sparse Adagrad).
    - ``embedding_l2``: L2 penalty on the embeddings *looked up in each batch* (sum of squares
      of the pooled vectors / batch size). Sparse optimizers cannot apply weight decay to whole
      tables cheaply; penalising only the rows a batch touches is the usual CTR practice.
    - ``patience``: stop after this many evaluations without a better validation AUC; the best
      weights are restored. ``evals_per_epoch`` > 1 checks more often on large data.
    - ``eval_first``: also evaluate before the first step, so the starting weights win if training
      only makes them worse (fine-tuning a compressed model).
    - ``freeze_tables``: train only the dense layers; the embedding tables get no gradient and no
      optimizer (fine-tuning after MLP pruning: a second pass over the same rows overfits large tables).
    """

    epochs: int = 10
    batch_size: int = 1024
    lr: float = 1e-3
    embedding_lr: float = 1e-2
    embedding_optimizer: Literal["sparse_adam", "adagrad"] = "sparse_adam"
    weight_decay: float = 0.0
    embedding_l2: float = 0.0
    patience: int = 2
    evals_per_epoch: int = 1
    max_steps: int | None = None
    eval_batch_size: int = 8192
    seed: int = 0
    eval_first: bool = False
    freeze_tables: bool = False

    def __post_init__(self) -> None:
        own = "TrainConfig"
        check(self.epochs >= 1, own, "epochs", self.epochs, ">= 1")
        check(self.batch_size >= 1, own, "batch_size", self.batch_size, ">= 1")
        check(self.lr > 0 and self.embedding_lr > 0, own, "lr/embedding_lr", (self.lr, self.embedding_lr), "> 0")
        check(self.weight_decay >= 0, own, "weight_decay", self.weight_decay, ">= 0")
        check(self.embedding_l2 >= 0, own, "embedding_l2", self.embedding_l2, ">= 0")
        check(self.patience >= 1, own, "patience", self.patience, ">= 1")
        check(self.evals_per_epoch >= 1, own, "evals_per_epoch", self.evals_per_epoch, ">= 1")
        check(self.max_steps is None or self.max_steps >= 1, own, "max_steps", self.max_steps, ">= 1 or null")
        check(self.embedding_optimizer in ("sparse_adam", "adagrad"), own, "embedding_optimizer",
              self.embedding_optimizer, "'sparse_adam' or 'adagrad'")


@dataclass(frozen=True)
class TrainEvent:
    """A progress report: ``kind`` is ``"start"``, ``"step"`` or ``"eval"``."""

    kind: str
    step: int
    total_steps: int
    epoch: int
    loss: float = math.nan
    metrics: Metrics | None = None


@dataclass
class TrainResult:
    """What happened: the best validation metrics, when, and every evaluation."""

    best: Metrics | None
    best_step: int
    steps: int
    seconds: float
    stopped_early: bool
    history: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"best": self.best.to_dict() if self.best else None, "best_step": self.best_step, "steps": self.steps,
                "seconds": round(self.seconds, 3), "stopped_early": self.stopped_early, "history": self.history}


def _optimizers(model: nn.Module, cfg: TrainConfig) -> list[torch.optim.Optimizer]:
    sparse = [p for m in model.modules() if isinstance(m, FusedEmbeddingBag) for p in m.parameters()]
    sparse_ids = {id(p) for p in sparse}
    dense = [p for p in model.parameters() if id(p) not in sparse_ids]
    opts: list[torch.optim.Optimizer] = []
    if dense:
        opts.append(torch.optim.Adam(dense, lr=cfg.lr, weight_decay=cfg.weight_decay))
    if sparse and not cfg.freeze_tables:
        opts.append(torch.optim.SparseAdam(sparse, lr=cfg.embedding_lr) if cfg.embedding_optimizer == "sparse_adam"
                    else torch.optim.Adagrad(sparse, lr=cfg.embedding_lr))
    return opts


def train(model: CTRModel, train_data: CTRData, val_data: CTRData | None = None,
          config: TrainConfig | None = None, *, progress: Callable[[TrainEvent], None] | None = None) -> TrainResult:
    """Train ``model`` in place; with ``val_data``, early-stop on AUC and keep the best weights.

    >>> from crossrec.data.synthetic import SyntheticConfig, generate
    >>> from crossrec.models import ModelSpec, build
    >>> data = generate(SyntheticConfig(rows=2000, num_sparse=4, max_rows=50, seed=1))
    >>> tr, va = data.split((0.8, 0.2))
    >>> model = build(ModelSpec.for_schema(data.schema, embedding_dim=4), seed=0)
    >>> result = train(model, tr, va, TrainConfig(epochs=1, batch_size=256))
    >>> result.steps
    7
    """
    cfg = config or TrainConfig()
    if len(train_data) == 0:
        raise DataError("training data is empty")
    torch.manual_seed(cfg.seed)
    steps_per_epoch = math.ceil(len(train_data) / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs if cfg.max_steps is None else min(cfg.max_steps, steps_per_epoch * cfg.epochs)
    eval_at = {round(steps_per_epoch * (i + 1) / cfg.evals_per_epoch) for i in range(cfg.evals_per_epoch)}
    step = _Stepper(model, cfg)
    stopper = _EarlyStopping(model, cfg.patience)
    start = time.perf_counter()
    if progress:
        progress(TrainEvent("start", 0, total, 0))
    if cfg.eval_first and val_data is not None:
        stopper.record(evaluate(model, val_data, cfg.eval_batch_size), 0, 0)
    try:
        for epoch in range(cfg.epochs):
            model.train()
            for i, batch in enumerate(train_data.batches(cfg.batch_size, shuffle=True, seed=cfg.seed * 1000 + epoch)):
                loss = step(batch)
                if progress:
                    progress(TrainEvent("step", step.count, total, epoch, loss=loss))
                if val_data is not None and (i + 1) in eval_at:
                    metrics = evaluate(model, val_data, cfg.eval_batch_size)
                    stopper.record(metrics, step.count, epoch)
                    if progress:
                        progress(TrainEvent("eval", step.count, total, epoch, metrics=metrics))
                    model.train()
                if stopper.stop or step.count >= total:
                    break
            if stopper.stop or step.count >= total:
                break
    finally:
        step.close()
    stopper.restore_best()
    model.eval()
    return TrainResult(best=stopper.best, best_step=stopper.best_step, steps=step.count,
                       seconds=time.perf_counter() - start, stopped_early=stopper.stop, history=stopper.history)


def _freeze_tables(model: nn.Module, freeze: bool) -> list[torch.Tensor]:
    """Stop gradients to every embedding table of ``model`` (``freeze``); returns the parameters to
    unfreeze afterwards with ``requires_grad_(True)``."""
    frozen = [p for m in model.modules() if isinstance(m, FusedEmbeddingBag) for p in m.parameters()
              if p.requires_grad] if freeze else []
    for p in frozen:
        p.requires_grad_(False)
    return frozen


class _Stepper:
    """One optimization step; owns the optimizers and the embedding-L2 lookup hooks."""

    def __init__(self, model: CTRModel, cfg: TrainConfig):
        self.model, self.cfg, self.count = model, cfg, 0
        self.opts = _optimizers(model, cfg)
        self.frozen = _freeze_tables(model, cfg.freeze_tables)
        self.loss_fn = nn.BCEWithLogitsLoss()
        self.pooled: list[torch.Tensor] = []  # this batch's lookups, for embedding_l2
        self.hooks = [m.register_forward_hook(lambda _m, _i, out: self.pooled.append(out))
                      for m in model.modules() if isinstance(m, nn.EmbeddingBag)] if cfg.embedding_l2 else []

    def __call__(self, batch) -> float:
        for opt in self.opts:
            opt.zero_grad(set_to_none=True)
        self.pooled.clear()
        loss = self.loss_fn(self.model(batch.dense, batch.ids, batch.offsets), batch.labels)
        if self.cfg.embedding_l2:
            loss = loss + self.cfg.embedding_l2 * sum((p * p).sum() for p in self.pooled) / batch.batch_size
        if not torch.isfinite(loss):
            raise DataError(f"loss became {loss.item()} at step {self.count}: lower lr/embedding_lr")
        loss.backward()
        for opt in self.opts:
            opt.step()
        self.count += 1
        return loss.item()

    def close(self) -> None:
        for h in self.hooks:
            h.remove()
        for p in self.frozen:
            p.requires_grad_(True)


class _EarlyStopping:
    """Keeps the best validation AUC's weights; stops after ``patience`` evaluations without a gain."""

    def __init__(self, model: nn.Module, patience: int):
        self.model, self.patience = model, patience
        self.best: Metrics | None = None
        self.best_step, self.bad, self.stop = 0, 0, False
        self.best_state: dict | None = None
        self.history: list[dict] = []

    def record(self, metrics: Metrics, step: int, epoch: int) -> None:
        self.history.append({"step": step, "epoch": epoch, **metrics.to_dict()})
        if self.best is None or metrics.auc > self.best.auc:
            self.best, self.best_step, self.bad = metrics, step, 0
            self.best_state = copy.deepcopy(self.model.state_dict())
        else:
            self.bad += 1
            self.stop = self.bad >= self.patience

    def restore_best(self) -> None:
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)


@torch.no_grad()
def predict(model: nn.Module, data: CTRData, batch_size: int = 8192) -> np.ndarray:
    """Click probabilities for every sample of ``data`` (float64 numpy array)."""
    model.eval()
    out = [torch.sigmoid(model(b.dense, b.ids, b.offsets)).double().numpy() for b in data.batches(batch_size)]
    return np.concatenate(out) if out else np.zeros(0)


def evaluate(model: nn.Module, data: CTRData, batch_size: int = 8192) -> Metrics:
    """AUC, log loss, normalized entropy and calibration of ``model`` on ``data``."""
    if len(data) == 0:
        raise DataError("evaluation data is empty")
    return compute(np.asarray(data.labels), predict(model, data, batch_size))
