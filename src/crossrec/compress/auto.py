"""``auto_compress``: measure a standard set of candidates on validation data and this device, pick one.

Accuracy is the validation AUC; speed comes from :func:`crossrec.hardware.profile_many`, which
times every variant round-robin in one run (blocks of 5 calls over 4 distinct batches, so machine
noise hits all alike); size is the bytes
of the variant's tensors (what its artifact stores, headers aside).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

from torch import nn

from crossrec.compress.base import CompressContext, CompressionConfig, compress_
from crossrec.compress.mixed import choose_table_precisions
from crossrec.compress.pipeline import PipelineConfig
from crossrec.compress.quantize import DenseQuantConfig, EmbeddingQuantConfig
from crossrec.compress.select import AccuracyBudget, Objective, Selection, select
from crossrec.data.dataset import CTRData
from crossrec.errors import BackendError, BudgetNotMetError
from crossrec.hardware.profile import profile_many
from crossrec.models.ctr import parameter_bytes
from crossrec.runtime.base import load
from crossrec.train.loop import evaluate


def default_candidates() -> dict[str, CompressionConfig]:
    """Quantization variants worth trying on any CPU (pruning/distillation need training data;
    ``int8-static`` calibrates on the training data, or on the validation data when none is given)."""
    int8, int4 = EmbeddingQuantConfig(precision="int8"), EmbeddingQuantConfig(precision="int4")
    bf16, dint8 = DenseQuantConfig(mode="bf16"), DenseQuantConfig(mode="int8")
    static = DenseQuantConfig(mode="int8-static")
    return {"int8 tables": int8, "int4 tables": int4, "bf16 dense": bf16, "int8 dense": dint8,
            "int8-static dense": static,
            "int8 tables + bf16 dense": PipelineConfig(steps=(int8, bf16)),
            "int8 tables + int8 dense": PipelineConfig(steps=(int8, dint8)),
            "int4 tables + int8 dense": PipelineConfig(steps=(int4, dint8)),
            "int8 tables + int8-static dense": PipelineConfig(steps=(int8, static)),
            "int4 tables + int8-static dense": PipelineConfig(steps=(int4, static))}


def mixed_candidates(model: nn.Module, val_data: CTRData, budget: AccuracyBudget,
                     progress: Callable[[str], None] | None = None) -> dict[str, CompressionConfig]:
    """Per-table precisions chosen from measured sensitivity with half the budget (the other half is
    left for the dense layers), alone and with int8-static dense layers; ``{}`` if no mix fits."""
    try:
        choice = choose_table_precisions(model, val_data, budget.max_relative_auc_drop / 2, progress=progress)
    except BudgetNotMetError:
        return {}
    tables = choice.config
    return {"mixed tables": tables,
            "mixed tables + int8-static dense": PipelineConfig(steps=(tables, DenseQuantConfig(mode="int8-static")))}


def measure(variants: dict[str, nn.Module], data: CTRData, *, batch_size: int = 512, repeats: int = 20,
            threads: int | None = None, runtime: str = "eager", runtime_options: dict | None = None,
            fallbacks: dict[str, str] | None = None) -> dict[str, dict]:
    """AUC on ``data`` plus interleaved throughput (``batch_size``) and p50 latency (batch 1) per variant,
    timed on ``runtime`` with ``runtime_options`` (a :mod:`crossrec.runtime` name and its options; AUC
    always from the eager module, which the runtimes reproduce to rounding). A variant the runtime cannot
    run (:class:`BackendError`, e.g. a trace that differs from eager) is timed eager instead, and
    ``fallbacks`` (if given) gets ``{name: reason}``."""
    # 4 distinct batches (rows wrap around on small data), timed in blocks of 5 calls per variant: a
    # deployed model runs back to back on changing ids, and call-by-call alternation disturbs the small
    # variants' caches most (design notes, session 4)
    bigs, ones = data.distinct_batches(batch_size, 4), data.distinct_batches(1, 4)
    sizes = sorted({batch_size, 1})
    timed = dict(variants)
    if runtime != "eager":
        for n, m in variants.items():
            try:
                timed[n] = load(m, runtime, **(runtime_options or {}))
            except BackendError as exc:
                if fallbacks is not None:
                    fallbacks[n] = str(exc)
    profiles = profile_many(timed, lambda b: bigs if b == batch_size else ones, batch_sizes=sizes,
                            repeats=repeats, threads=threads, block=5)
    return {name: {"auc": evaluate(m, data).auc, "throughput": profiles[name].at(batch_size).samples_per_s,
                   "latency_ms": profiles[name].at(1).p50_ms, "size_bytes": parameter_bytes(m)}
            for name, m in variants.items()}


def auto_compress(model: nn.Module, val_data: CTRData, budget: AccuracyBudget, *,
                  candidates: dict[str, CompressionConfig] | None = None, objective: Objective = "throughput",
                  batch_size: int = 512, repeats: int = 20, threads: int | None = None,
                  train_data: CTRData | None = None, mixed_precision: bool = True, runtime: str = "eager",
                  runtime_options: dict | None = None, keep_uncompressed: bool = False,
                  progress: Callable[[str], None] | None = None) -> tuple[Selection, nn.Module]:
    """Select the best candidate inside ``budget`` and return it with a compressed copy of ``model``.

    ``candidates=None`` tries :func:`default_candidates` plus, with ``mixed_precision``,
    :func:`mixed_candidates`. ``train_data`` (optional) calibrates static int8 activation scales.
    ``runtime`` is what the variants are timed on (``"script"`` is the fast small-batch path; pair it with
    ``objective="latency"`` and ``threads=1`` for batch-1 serving), with ``runtime_options`` (e.g.
    ``{"hugepages": True}``); candidates it cannot run are timed eager, listed in
    ``selection.notes["runtime_fallbacks"]``. ``keep_uncompressed`` lets the model
    itself win when no candidate beats it (see :func:`select`); the returned model is then a copy.

    >>> from crossrec.data.synthetic import SyntheticConfig, generate
    >>> from crossrec.models import ModelSpec, build
    >>> data = generate(SyntheticConfig(rows=600, num_sparse=3, max_rows=20))
    >>> model = build(ModelSpec.for_schema(data.schema, embedding_dim=8), seed=0)
    >>> sel, variant = auto_compress(model, data, AccuracyBudget(max_relative_auc_drop=0.5), repeats=2,
    ...                              batch_size=64)
    >>> len(sel.trials) >= 10, variant.compression_recipe == [sel.config()]
    (True, True)
    """
    if candidates is None:
        candidates = default_candidates()
        if mixed_precision and getattr(model, "embedding", None) is not None:
            candidates.update(mixed_candidates(model, val_data, budget, progress))
    fallbacks: dict[str, str] = {}
    measure_all = lambda variants: measure(variants, val_data, batch_size=batch_size, repeats=repeats,
                                           threads=threads, runtime=runtime, runtime_options=runtime_options,
                                           fallbacks=fallbacks)
    selection = select(model, list(candidates.values()), None, budget, objective, names=list(candidates),
                       evaluate_all=measure_all, progress=progress,
                       ctx=CompressContext(train_data=train_data, val_data=val_data),
                       keep_uncompressed=keep_uncompressed)
    selection.notes.update(runtime=runtime, runtime_options=dict(runtime_options or {}),
                           runtime_fallbacks=fallbacks)
    ctx = CompressContext(train_data=train_data, val_data=val_data)
    config = selection.config()
    return selection, copy.deepcopy(model) if config is None else compress_(copy.deepcopy(model), config, ctx)
