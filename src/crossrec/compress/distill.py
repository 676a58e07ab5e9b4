"""Knowledge distillation (issue #3): train a smaller student on the teacher's soft targets, in place.

The student is described by :class:`StudentSpec` — overrides of the teacher's :class:`ModelSpec`
(``embedding_dim``, MLP widths, interaction, cross layers) — so its architecture follows from the
config alone, which is what loading an artifact needs (it never sees the teacher).

*In place* here means the model object *becomes* the student: the handler builds and trains a
student ``CTRModel``, then moves the student's whole module state (``__dict__``: parameters,
buffers, submodules, ``spec``) into the teacher's object, keeping only its ``compression_recipe``.
Hooks registered on the teacher are dropped with its modules. Afterwards ``model.spec`` is the
student spec, so ``save_artifact`` records the student; on load, ``restore`` resolves the overrides
against that spec again — the overrides are idempotent (``resolve(resolve(t)) == resolve(t)``) —
and leaves a freshly built student alone, or rebuilds the student when earlier steps of the recipe
changed the structure (distillation replaces the whole model, so earlier compression is gone).

Loss (Hinton et al. 2015, "Distilling the Knowledge in a Neural Network")::

    (1 - alpha) * BCE(s, y) + alpha * T^2 * BCE(sigmoid(s / T), sigmoid(t / T))
      + feature_weight * MSE(P h_s, h_t)

with logits ``s`` (student) and ``t`` (teacher), labels ``y``. The soft term is a binary
cross-entropy against the teacher's tempered probability (its gradient equals the KL divergence's);
``T^2`` keeps its gradient scale independent of the temperature. ``h`` is the over-arch input (what
the interaction produces, the FitNets-style "hint"), and ``P`` a learned linear map when the widths
differ (trained with the student and discarded).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from crossrec.compress.base import CompressContext, CompressionConfig, register
from crossrec.config import Config, check
from crossrec.data.dataset import CTRData
from crossrec.errors import ConfigError, DataError
from crossrec.models.ctr import CTRModel, build
from crossrec.models.spec import INTERACTIONS, ModelSpec
from crossrec.train.loop import TrainConfig, _EarlyStopping, _freeze_tables, _optimizers, evaluate

_FAMILY = {"dot": "dlrm", "cross": "dcnv2", "fm": "deepfm", "concat": "deep", "lr": "lr"}


@dataclass(frozen=True, kw_only=True)
class StudentSpec(Config):
    """The student, as overrides of the teacher's spec (``None`` keeps the teacher's value).

    - ``embedding_dim``: when given, every table uses it (per-table dims of the teacher are reset).
    - ``bottom_mlp``: when not given but the interaction needs the bottom output to match the
      embedding dim (``dot``, ``fm``), the teacher's widths are kept with the last one set to
      ``embedding_dim``.
    - ``cross_rank``: ``0`` means full rank (``ModelSpec.cross_rank=None``).

    >>> from crossrec.data.synthetic import SyntheticConfig
    >>> teacher = ModelSpec.for_schema(SyntheticConfig(num_sparse=2, max_rows=10).schema(), embedding_dim=8,
    ...                                bottom_mlp=(16, 8), top_mlp=(32,))
    >>> s = StudentSpec(embedding_dim=4, top_mlp=(8,)).resolve(teacher)
    >>> s.embedding_dim, s.bottom_mlp, s.top_mlp
    (4, (16, 4), (8,))
    """

    embedding_dim: int | None = None
    bottom_mlp: tuple[int, ...] | None = None
    top_mlp: tuple[int, ...] | None = None
    interaction: str | None = None
    cross_layers: int | None = None
    cross_rank: int | None = None
    dropout: float | None = None

    def __post_init__(self) -> None:
        own = "StudentSpec"
        check(self.embedding_dim is None or self.embedding_dim >= 1, own, "embedding_dim", self.embedding_dim,
              ">= 1 or null (keep the teacher's)")
        for name in ("bottom_mlp", "top_mlp"):
            widths = getattr(self, name)
            check(widths is None or all(w >= 1 for w in widths), own, name, widths,
                  "widths >= 1, or null (keep the teacher's)")
        check(self.interaction is None or self.interaction in INTERACTIONS, own, "interaction", self.interaction,
              f"one of {INTERACTIONS} or null")
        check(self.cross_layers is None or self.cross_layers >= 0, own, "cross_layers", self.cross_layers,
              ">= 0 or null")
        check(self.cross_rank is None or self.cross_rank >= 0, own, "cross_rank", self.cross_rank,
              ">= 1 (low rank), 0 (full rank) or null (keep the teacher's)")
        check(self.dropout is None or 0.0 <= self.dropout < 1.0, own, "dropout", self.dropout, "in [0, 1) or null")

    def resolve(self, teacher: ModelSpec) -> ModelSpec:
        """The student's full spec; idempotent, so resolving against the student again returns it."""
        changes = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None}
        if "cross_rank" in changes:
            changes["cross_rank"] = changes["cross_rank"] or None
        dim = changes.get("embedding_dim", teacher.embedding_dim)
        if "embedding_dim" in changes:
            changes["tables"] = tuple(dataclasses.replace(t, dim=None) for t in teacher.tables)
        inter = changes.get("interaction", teacher.interaction)
        if inter != teacher.interaction:
            changes["name"] = _FAMILY[inter]
        bottom = changes.get("bottom_mlp", teacher.bottom_mlp)
        if "bottom_mlp" not in changes and inter in ("dot", "fm") and bottom and bottom[-1] != dim:
            changes["bottom_mlp"] = (*bottom[:-1], dim)
        try:
            return dataclasses.replace(teacher, **changes)
        except ConfigError as exc:
            raise ConfigError(f"DistillConfig.student = {self!r} gives no valid student for this teacher: {exc}") \
                from None


@dataclass(frozen=True, kw_only=True)
class DistillConfig(CompressionConfig):
    """Replace the model by a smaller ``student`` trained on the teacher's soft targets (in place).

    ``alpha`` weighs the soft-target loss against the label loss, ``temperature`` softens both
    sides' probabilities, ``feature_weight`` adds the over-arch-input MSE (see the module docstring).
    ``init_from_teacher`` starts every student table whose dim equals the teacher's from the
    teacher's weights (first-order FM/LR weights too); with ``project_tables`` too, every table of a
    *smaller* dim starts from the teacher's rows projected onto their top principal directions
    (:func:`project_tables`). Off by default: on the planted Criteo-shaped data (1.43 GB teacher, dim
    64 -> 8, one epoch) projected tables reached test AUC 0.6845 against 0.7015 from a fresh start. Needs
    ``ctx.train_data``; ``ctx.val_data`` enables early stopping on validation AUC (best weights
    kept). Optimizers are the training loop's: Adam (``lr``) for dense layers, SparseAdam
    (``embedding_lr``) for the tables; ``freeze_tables`` trains only the dense layers (for a student
    whose tables all start from the teacher's: another pass over the same rows overfits large tables).

    >>> from crossrec.compress import CompressContext, compress_
    >>> from crossrec.data.synthetic import SyntheticConfig, generate
    >>> from crossrec.models import ModelSpec, build
    >>> data = generate(SyntheticConfig(rows=600, num_sparse=3, max_rows=20))
    >>> model = build(ModelSpec.for_schema(data.schema, embedding_dim=8, top_mlp=(32,)), seed=0)
    >>> cfg = DistillConfig(student=StudentSpec(embedding_dim=4, top_mlp=(8,)), epochs=1, batch_size=200)
    >>> _ = compress_(model, cfg, CompressContext(train_data=data, val_data=data))
    >>> model.spec.embedding_dim, model.spec.top_mlp
    (4, (8,))
    """

    student: StudentSpec
    temperature: float = 1.0
    alpha: float = 0.5
    feature_weight: float = 0.0
    init_from_teacher: bool = True
    project_tables: bool = False
    freeze_tables: bool = False
    epochs: int = 5
    batch_size: int = 1024
    lr: float = 3e-3
    embedding_lr: float = 3e-2
    patience: int = 2
    max_steps: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        own = "DistillConfig"
        check(isinstance(self.student, StudentSpec), own, "student", self.student,
              "a StudentSpec, e.g. StudentSpec(embedding_dim=4, top_mlp=(16,))")
        check(math.isfinite(self.temperature) and self.temperature > 0, own, "temperature", self.temperature,
              "> 0 (1 = plain probabilities; 2-4 softens them)")
        check(0.0 <= self.alpha <= 1.0, own, "alpha", self.alpha,
              "in [0, 1]: 0 = labels only (no distillation), 1 = teacher only")
        check(math.isfinite(self.feature_weight) and self.feature_weight >= 0, own, "feature_weight",
              self.feature_weight, ">= 0 (0 = no intermediate-representation loss)")
        check(self.epochs >= 1, own, "epochs", self.epochs, ">= 1")
        check(self.batch_size >= 1, own, "batch_size", self.batch_size, ">= 1")
        check(self.lr > 0 and self.embedding_lr > 0, own, "lr/embedding_lr", (self.lr, self.embedding_lr), "> 0")
        check(self.patience >= 1, own, "patience", self.patience, ">= 1")
        check(self.max_steps is None or self.max_steps >= 1, own, "max_steps", self.max_steps, ">= 1 or null")


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, *,
                      temperature: float = 1.0, alpha: float = 0.5) -> torch.Tensor:
    """``(1 - alpha) * BCE(s, y) + alpha * T^2 * BCE(sigmoid(s/T), sigmoid(t/T))`` (mean over the batch).

    >>> s, y = torch.tensor([0.0, 2.0]), torch.tensor([0.0, 1.0])
    >>> bool(distillation_loss(s, s, y, alpha=0.0) == F.binary_cross_entropy_with_logits(s, y))
    True
    """
    hard = F.binary_cross_entropy_with_logits(student_logits, labels)
    if alpha == 0:
        return hard
    t = temperature
    soft = F.binary_cross_entropy_with_logits(student_logits / t, torch.sigmoid(teacher_logits.detach() / t))
    return (1 - alpha) * hard + alpha * t * t * soft


def training_data(model: nn.Module, ctx: CompressContext, owner: str) -> tuple[CTRData, CTRData | None]:
    """``ctx.train_data`` / ``ctx.val_data`` checked against ``model.spec`` (ConfigError saying how to pass them)."""
    if not isinstance(model, CTRModel):
        raise ConfigError(f"{owner} compresses a crossrec CTRModel, got {type(model).__name__}")
    train_data, val_data = ctx.train_data, ctx.val_data
    if train_data is None:
        raise ConfigError(f"{owner} trains, so it needs training data: pass "
                          f"compress_(model, config, CompressContext(train_data=train, val_data=val)) with the "
                          f"teacher's training split (val_data enables early stopping)")
    for name, data in (("train_data", train_data), ("val_data", val_data)):
        if data is None:
            continue
        if not isinstance(data, CTRData):
            raise ConfigError(f"{owner}: CompressContext.{name} must be a CTRData, got {type(data).__name__}")
        if not model.spec.matches(data.schema):
            raise ConfigError(f"{owner}: CompressContext.{name} has {data.schema.num_dense} dense features and "
                              f"tables {list(data.schema.cardinalities)}, but the model expects "
                              f"{model.spec.num_dense} and {[t.num_embeddings for t in model.spec.tables]}")
        if len(data) == 0:
            raise DataError(f"{owner}: CompressContext.{name} is empty")
    return train_data, val_data


def become_(model: nn.Module, new: nn.Module) -> nn.Module:
    """Make ``model`` *be* ``new`` (its modules, parameters, buffers, attributes), keeping its recipe.

    ``new`` must not be used afterwards (both objects share the same state). Why not
    ``model.__init__(spec)`` + ``load_state_dict``: that random-initialises a second model first.
    """
    recipe = model.__dict__.get("compression_recipe")
    model.__dict__.clear()
    model.__dict__.update(new.__dict__)
    if recipe is not None:
        model.compression_recipe = recipe
    return model


def _signature(model: nn.Module) -> tuple:
    modules = tuple((n, type(m)) for n, m in model.named_modules())
    tensors = tuple((k, tuple(v.shape), v.dtype) for k, v in model.state_dict().items())
    return modules, tensors, getattr(model, "compute_dtype", None)


def is_fresh(model: nn.Module, spec: ModelSpec) -> bool:
    """True if ``model`` has exactly the structure ``build(spec)`` gives (compared on the meta device)."""
    if getattr(model, "spec", None) != spec:
        return False
    with torch.device("meta"):
        reference = CTRModel(spec)
    return _signature(model) == _signature(reference)


def project_tables(teacher: CTRModel, student: CTRModel, data: CTRData, *, sample_rows: int = 8192) -> int:
    """Start student tables of a smaller dim from the teacher's, projected; returns how many.

    The projection ``P`` (teacher dim x student dim) holds the top right-singular vectors of the
    teacher rows that the first ``sample_rows`` samples of ``data`` look up (so frequent rows weigh
    more, and rows training never touched — still at their random init — do not steer it). The SVD is
    *uncentered* and ``P`` is shared by every table of one teacher dim, so ``<x P, y P>`` is the best
    rank-k approximation of the dot products between fields that dot/FM interactions compute.

    >>> from crossrec.data.synthetic import SyntheticConfig, generate
    >>> from crossrec.models import ModelSpec
    >>> data = generate(SyntheticConfig(rows=300, num_sparse=3, max_rows=20))
    >>> teacher = build(ModelSpec.for_schema(data.schema, embedding_dim=8), seed=0)
    >>> project_tables(teacher, build(ModelSpec.for_schema(data.schema, embedding_dim=4), seed=0), data)
    3
    """
    src, dst = teacher.embedding, student.embedding
    if src is None or dst is None or len(data) == 0:
        return 0
    part = data.slice(0, min(len(data), sample_rows))
    lengths = torch.from_numpy(part.lengths.astype("int64").reshape(-1))
    nfeat = part.lengths.shape[1]
    feature_of = torch.arange(nfeat).repeat(len(part)).repeat_interleave(lengths)
    ids = torch.from_numpy(part.ids.astype("int64"))
    done = 0
    for t_dim in sorted(set(src.dims)):
        feats = [f for f in range(dst.num_features) if src.dims[f] == t_dim and dst.dims[f] < t_dim]
        if not feats:
            continue
        rows = torch.cat([src.table_weight(f)[ids[feature_of == f]] for f in feats])
        if rows.shape[0] < t_dim:
            continue  # too few looked-up rows to estimate the directions: keep the random init
        _, _, vh = torch.linalg.svd(rows.float(), full_matrices=False)
        for f in feats:
            s_dim = dst.dims[f]
            g = next(g for g, members in enumerate(dst.group_features) if f in members)
            start = int(getattr(dst, f"base_{g}")[dst.group_features[g].index(f)])
            with torch.no_grad():
                dst.bags[g].weight[start:start + dst.num_embeddings[f]].copy_(src.table_weight(f) @ vh[:s_dim].T)
            done += 1
    return done


def _copy_tables(teacher: CTRModel, student: CTRModel) -> int:
    """Copy every teacher table whose dim equals the student's (and first-order weights); returns how many."""
    copied = 0
    for attr in ("embedding", "first_order"):
        src, dst = getattr(teacher, attr), getattr(student, attr)
        if src is None or dst is None:
            continue
        for f in range(dst.num_features):
            if src.dims[f] != dst.dims[f]:
                continue
            g = next(g for g, feats in enumerate(dst.group_features) if f in feats)
            start = int(getattr(dst, f"base_{g}")[dst.group_features[g].index(f)])
            with torch.no_grad():
                dst.bags[g].weight[start:start + dst.num_embeddings[f]].copy_(src.table_weight(f))
            copied += attr == "embedding"
    return copied


class _TopInput:
    """Captures the input of a model's over arch (the interaction's output) on every forward."""

    def __init__(self, model: CTRModel, owner: str):
        if model.top is None:
            raise ConfigError(f"DistillConfig.feature_weight > 0 needs a {owner} with a top MLP (the feature loss "
                              f"matches over-arch inputs); this {owner} ({model.spec.interaction!r}, top_mlp="
                              f"{model.spec.top_mlp}) has none: set feature_weight=0")
        self.value: torch.Tensor | None = None
        self.width = model.top[0].in_features
        self.hook = model.top.register_forward_pre_hook(self._save)

    def _save(self, _module, inputs) -> None:
        self.value = inputs[0].float()


def _distill(teacher: CTRModel, student: CTRModel, train_data: CTRData, val_data: CTRData | None,
             cfg: DistillConfig, log) -> None:
    tc = TrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, embedding_lr=cfg.embedding_lr,
                     patience=cfg.patience, seed=cfg.seed, freeze_tables=cfg.freeze_tables)
    opts = _optimizers(student, tc)
    frozen = _freeze_tables(student, cfg.freeze_tables)  # tables without an optimizer get no gradients either
    feats = proj = None
    if cfg.feature_weight > 0:
        feats = (_TopInput(teacher, "teacher"), _TopInput(student, "student"))
        widths = (feats[1].width, feats[0].width)
        proj = nn.Linear(*widths, bias=False) if widths[0] != widths[1] else nn.Identity()
        opts += [torch.optim.Adam(proj.parameters(), lr=cfg.lr)] if widths[0] != widths[1] else []
    stopper, steps = _EarlyStopping(student, cfg.patience), 0
    total = cfg.max_steps or math.inf
    teacher.eval()
    torch.manual_seed(cfg.seed)
    try:
        for epoch in range(cfg.epochs):
            student.train()
            for batch in train_data.batches(cfg.batch_size, shuffle=True, seed=cfg.seed * 1000 + epoch):
                with torch.no_grad():
                    t_logits = teacher(batch.dense, batch.ids, batch.offsets).float()
                s_logits = student(batch.dense, batch.ids, batch.offsets)
                loss = distillation_loss(s_logits, t_logits, batch.labels, temperature=cfg.temperature,
                                         alpha=cfg.alpha)
                if feats is not None:
                    loss = loss + cfg.feature_weight * F.mse_loss(proj(feats[1].value), feats[0].value)
                if not torch.isfinite(loss):
                    raise DataError(f"distillation loss became {loss.item()} at step {steps}: lower lr/embedding_lr")
                for opt in opts:
                    opt.zero_grad(set_to_none=True)
                loss.backward()
                for opt in opts:
                    opt.step()
                steps += 1
                if steps >= total:
                    break
            if val_data is not None:
                metrics = evaluate(student, val_data)
                stopper.record(metrics, steps, epoch)
                log(f"distill: epoch {epoch + 1}, step {steps}, validation AUC {metrics.auc:.4f}")
            if stopper.stop or steps >= total:
                break
    finally:
        for f in feats or ():
            f.hook.remove()
        for p in frozen:
            p.requires_grad_(True)
    stopper.restore_best()
    student.eval()


@register(DistillConfig)
class _Distill:
    def apply(self, model: nn.Module, config: DistillConfig, ctx: CompressContext) -> None:
        train_data, val_data = training_data(model, ctx, "DistillConfig")
        spec = config.student.resolve(model.spec)
        student = build(spec, seed=config.seed)
        if config.init_from_teacher:
            ctx.log(f"distill: {_copy_tables(model, student)} tables start from the teacher's")
            if config.project_tables:
                ctx.log(f"distill: {project_tables(model, student, train_data)} tables start from the teacher's "
                        f"rows projected to dim {student.spec.embedding_dim}")
        if val_data is None:
            ctx.log("distill: no ctx.val_data, so no early stopping: the last weights are kept")
        _distill(model, student, train_data, val_data, config, ctx.log)
        become_(model, student)

    def restore(self, model: nn.Module, config: DistillConfig) -> None:
        spec = config.student.resolve(model.spec)
        if not is_fresh(model, spec):  # a teacher, or a student some earlier step changed: rebuild
            become_(model, build(spec))
