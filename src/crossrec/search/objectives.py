"""What a candidate costs and how well it predicts: the objectives of a search, measured per candidate.

- **AUC** (maximized): the accuracy *proxy* — the float model is trained on a data budget
  (:class:`~crossrec.search.config.ProxyConfig`), then compressed post-training as the candidate
  says (row-wise int8/int4 tables, bf16/int8 dense layers, static int8 MLPs calibrated on the
  candidate's training rows) and scored on validation rows. The
  numerics are those of crossrec's CPU kernels; other devices are assumed to compute the same
  formats equally (their AUC is not re-measured). :func:`proxy_rank_correlation` says how well
  the proxy ranks candidates against longer training.
- **Latency** per device (minimized): ``measured`` here with :func:`crossrec.hardware.profile_many`
  on a :mod:`crossrec.runtime` runtime (``latency.cpu_runtime``: TorchScript by default, eager where it
  cannot run the candidate; see :mod:`~crossrec.search.timing`), p50 at the configured batch size over
  distinct batches — the baseline on FP32 eager and on that runtime — or from a ``latency_fn(spec, choice, device,
  batch_size) -> (ms, source)`` — the LatencyPredictor (``predicted``/``modeled``) or the roofline
  :func:`crossrec.hardware.estimate` (``modeled``). A device without kernels for a candidate's
  precisions, or without the memory for it, gets no latency: the candidate is infeasible there.
- **Model bytes** (minimized): the compressed model's tensors (:func:`crossrec.models.parameter_bytes`).
- **Energy per 1000 predictions** (minimized): the device's catalog ``power_w`` over the latency.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from crossrec.compress.base import CompressContext, CompressionConfig, compress_
from crossrec.config import Config
from crossrec.data.batch import Batch
from crossrec.data.dataset import CTRData
from crossrec.errors import ConfigError
from crossrec.hardware.estimate import estimate
from crossrec.hardware.features import CompressionChoice
from crossrec.hardware.spec import DeviceSpec
from crossrec.models.ctr import CTRModel, build, parameter_bytes
from crossrec.models.spec import ModelSpec
from crossrec.search.config import check_cpu_runtime
from crossrec.search.space import Architecture, select_features
from crossrec.search.timing import Profiler, load_runtime, profile_many, time_models
from crossrec.train.loop import TrainConfig, evaluate, train

LatencyFn = Callable[[ModelSpec, Any, str, int], tuple[float, str]]
UNSUPPORTED_MS = 1e12  # what an infeasible device reports to the optimizer (finite: NSGA-II's crowding needs it)


@dataclass(frozen=True, kw_only=True)
class Evaluation(Config):
    """The measured objectives of one candidate; ``latency_ms[d] is None`` where ``d`` cannot run it
    (``notes[d]`` says why). ``latency_source[d]`` is measured / predicted / modeled / unsupported.

    On a measured device, ``latency_runtime[d]`` names the runtime ``latency_ms[d]`` was taken on (the
    search's ``cpu_runtime``, or ``eager`` when that could not run the candidate: ``notes[d]`` says why; the
    baseline: ``eager``), and ``latency_by_runtime[d]`` every runtime timed there (the baseline: eager and
    ``cpu_runtime``, round-robin in one run).
    """

    auc: float
    auc_uncompressed: float
    model_bytes: int
    latency_ms: dict[str, float | None]
    latency_source: dict[str, str]
    energy_per_1k_j: dict[str, float | None]
    train_steps: int
    train_s: float
    notes: dict[str, str] = field(default_factory=dict)
    latency_runtime: dict[str, str] = field(default_factory=dict)
    latency_by_runtime: dict[str, dict[str, float]] = field(default_factory=dict)

    def values(self, objectives: Sequence[str], devices: Sequence[str]) -> list[float]:
        """Optimizer values in :func:`objective_names` order (infeasible latency -> ``UNSUPPORTED_MS``)."""
        out: list[float] = []
        for obj in objectives:
            if obj == "auc":
                out.append(self.auc)
            elif obj == "bytes":
                out.append(float(self.model_bytes))
            else:
                per = self.latency_ms if obj == "latency" else self.energy_per_1k_j
                out += [UNSUPPORTED_MS if per.get(d) is None else float(per[d]) for d in devices]
        return out


def objective_names(objectives: Sequence[str], devices: Sequence[str]) -> list[tuple[str, str]]:
    """``(name, direction)`` per optimizer value, e.g. ``("latency:h100-sxm", "minimize")``.

    >>> objective_names(("auc", "latency"), ("cpu", "gpu"))
    [('auc', 'maximize'), ('latency:cpu', 'minimize'), ('latency:gpu', 'minimize')]
    """
    out = []
    for obj in objectives:
        if obj in ("latency", "energy"):
            out += [(f"{obj}:{d}", "minimize") for d in devices]
        else:
            out.append((obj, "maximize" if obj == "auc" else "minimize"))
    return out


def as_compression_choice(choice: CompressionChoice | dict[str, Any]) -> CompressionChoice:
    """A :class:`~crossrec.hardware.features.CompressionChoice` (from its fields, if a dict)."""
    return choice if isinstance(choice, CompressionChoice) else CompressionChoice.from_dict(choice)


def compression_configs(choice: CompressionChoice | dict[str, Any]) -> list[CompressionConfig]:
    """The crossrec.compress configs that realize a compression choice (none for fp32/fp32).

    ``int8-static`` dense layers calibrate on data: apply them with ``compress_(model, config,
    CompressContext(train_data=...))``, or use :func:`compress_candidate`.

    >>> compression_configs({"embedding_precision": "int8", "dense_precision": "bf16"})
    [EmbeddingQuantConfig(precision='int8', per_table={}), DenseQuantConfig(mode='bf16', interaction='auto')]
    """
    return list(as_compression_choice(choice).to_configs())


def modeled_latency(catalog: dict[str, DeviceSpec]) -> LatencyFn:
    """A ``latency_fn`` from the roofline :func:`~crossrec.hardware.estimate` (source ``modeled``).

    >>> from crossrec.hardware.spec import load_catalog
    >>> from crossrec.models.spec import TableSpec
    >>> spec = ModelSpec(num_dense=1, tables=(TableSpec(name="a", num_embeddings=10),), embedding_dim=4,
    ...                  bottom_mlp=(4,), top_mlp=(8,))
    >>> choice = CompressionChoice(dense_precision="int8")
    >>> ms, source = modeled_latency(load_catalog())(spec, choice, "alveo-u280", 64)
    >>> source, ms > 0
    ('modeled', True)
    """
    def latency(spec: ModelSpec, choice: Any, device: str, batch_size: int) -> tuple[float, str]:
        c = as_compression_choice(choice)
        e = estimate(spec, catalog[device], batch_size, embedding_precision=c.precisions_for(spec),
                     dense_precision=c.dense_precision)
        if not e.fits_memory:
            raise ConfigError(f"{spec.name} needs {e.model_bytes:.3g} bytes, more than {device}'s memory")
        return e.latency_ms, e.source

    return latency


GPU_DEPLOYABLE = CompressionChoice(embedding_precision="fp16", dense_precision="bf16")


def gpu_deployable(choice: CompressionChoice, spec: ModelSpec) -> CompressionChoice:
    """What crossrec runs on a GPU for ``choice``: the choice itself, or fp16 tables + bf16 dense layers (the cuda
    runtime's default) when a part of it has CPU kernels only (row-wise int8/int4/int2 tables, int8 dense layers).

    >>> from crossrec.models.spec import TableSpec
    >>> spec = ModelSpec(num_dense=1, tables=(TableSpec(name="a", num_embeddings=10),), embedding_dim=4,
    ...                  bottom_mlp=(4,), top_mlp=(8,))
    >>> gpu_deployable(CompressionChoice.parse("int4/int8-static"), spec).label
    'fp16/bf16'
    >>> gpu_deployable(CompressionChoice.parse("bf16/fp32"), spec).label
    'bf16/fp32'
    """
    return GPU_DEPLOYABLE if choice.cpu_only_parts(spec) else choice


def predictor_latency(predictor: Any, catalog: dict[str, DeviceSpec] | None = None) -> LatencyFn:
    """Adapt a ``LatencyPredictor`` (``predict(spec, compression, device, batch_size)``) to a ``latency_fn``.

    With ``catalog``, a GPU device whose records the predictor learned (``source="predicted"``) is asked for the
    :func:`gpu_deployable` form of each choice: crossrec's measured GPU data sets hold only what runs there, and
    a prediction for an int8 table on a GPU would extrapolate to a kernel crossrec does not have."""
    learned: dict[str, bool] = {}  # per device: did the predictor learn it from measurements? (asked once)

    def latency(spec: ModelSpec, choice: Any, device: str, batch_size: int) -> tuple[float, str]:
        c = as_compression_choice(choice)
        if catalog is not None and device in catalog and catalog[device].kind == "gpu" and c.cpu_only_parts(spec):
            if device not in learned:
                learned[device] = predictor.predict(spec, GPU_DEPLOYABLE, device, batch_size).source == "predicted"
            c = gpu_deployable(c, spec) if learned[device] else c
        p = predictor.predict(spec, c, device, batch_size)
        return float(p.latency_ms), str(p.source)

    return latency


def compress_candidate(model: CTRModel, choice: CompressionChoice | dict[str, Any], train_data: CTRData) -> CTRModel:
    """Apply ``choice`` to ``model`` in place through :mod:`crossrec.compress` (so artifacts record the recipe),
    calibrating static int8 on ``train_data`` (the rows the model reads: cut them with :func:`select_features`
    or :func:`~crossrec.search.space.project_data`); returns the model.

    >>> from crossrec.data.synthetic import SyntheticConfig, generate
    >>> data = generate(SyntheticConfig(rows=64, num_dense=2, num_sparse=2, max_rows=9))
    >>> model = build(ModelSpec.for_schema(data.schema, embedding_dim=4, bottom_mlp=(4,), top_mlp=(8,)))
    >>> m = compress_candidate(model, CompressionChoice.parse("int8/int8-static"), data)
    >>> [type(c).__name__ for c in m.compression_recipe], type(m.top).__name__
    (['EmbeddingQuantConfig', 'DenseQuantConfig'], 'Int8StaticMLP')
    """
    ctx = CompressContext(train_data=train_data)
    for cfg in compression_configs(choice):
        compress_(model, cfg, ctx)
    return model


def train_candidate(arch: Architecture, train_data: CTRData, config: TrainConfig, *,
                    seed: int = 0) -> tuple[CTRModel, CTRModel, Any]:
    """(float model, compressed copy, TrainResult): ``arch`` trained on ``train_data`` then compressed
    (static int8 calibrated on the same training rows)."""
    data = select_features(train_data, arch.features)
    model = build(arch.spec, seed=seed)
    result = train(model, data, None, config)
    compressed = compress_candidate(copy.deepcopy(model), arch.compression, data)
    compressed.eval()
    return model, compressed, result


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(threads)`` (None: leave it), restored afterwards."""
    import torch

    old = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def energy_per_1k_j(device: DeviceSpec, latency_ms: float, batch_size: int) -> float:
    """Joules per 1000 predictions at the device's rated power (an upper bound: host power not counted)."""
    return device.power_w * latency_ms / batch_size


class Evaluator:
    """Scores architectures: proxy training, compression, AUC, bytes, latency and energy per device.

    ``sources[d]`` is ``measured`` (timed here on ``runtime`` with ``runtime_options``, over
    ``timing_batches`` distinct batches of validation rows; ``profile_clock`` and ``profiler``, with
    :func:`~crossrec.hardware.profile_many`'s signature, injectable), else the ``latency_fn`` answers
    for ``d`` and says its own source. ``evaluator(arch, baseline=True)`` times the baseline on eager
    (its reported latency) and on ``runtime``, round-robin, ``block`` calls of each per round.
    """

    def __init__(self, train_data: CTRData, val_data: CTRData, *, train_config: TrainConfig,
                 devices: dict[str, DeviceSpec], sources: dict[str, str], latency_fn: LatencyFn | None,
                 batch_size: int | dict[str, int] = 512, warmup: int = 2, repeats: int = 10,
                 threads: int | None = None,
                 seed: int = 0, profile_clock: Callable[[], float] = time.perf_counter,
                 train_threads: int | None = None, runtime: str = "script",
                 runtime_options: dict[str, Any] | None = None, timing_batches: int = 4, block: int = 5,
                 profiler: Profiler = profile_many):
        missing = [d for d in devices if sources.get(d) != "measured"] if latency_fn is None else []
        if missing:
            raise ConfigError(f"devices {missing} are not measured here and no latency_fn was given; "
                              "pass modeled_latency(catalog) or a predictor")
        check_cpu_runtime("Evaluator", runtime, runtime_options or {})
        self.train_data, self.val_data, self.train_config = train_data, val_data, train_config
        self.devices, self.sources, self.latency_fn = devices, sources, latency_fn
        self.batch = {d: batch_size if isinstance(batch_size, int) else batch_size[d] for d in devices}
        self.warmup, self.repeats, self.threads = warmup, repeats, threads
        self.runtime, self.runtime_options = runtime, dict(runtime_options or {})
        self.n_batches, self.block, self.profiler = timing_batches, block, profiler
        self._warmed: set[tuple[str, tuple[str, ...]]] = set()  # (format, runtimes) whose kernels ran here
        self.seed, self.profile_clock, self.train_threads = seed, profile_clock, train_threads
        # the timed rows (per batch size): repeated if validation is small; every model reads the same rows
        self._timing_rows = {b: val_data.take(np.arange(b * timing_batches) % len(val_data))
                             for b in {self.batch[d] for d in devices if sources.get(d) == "measured"}}

    def timing_batches(self, size: int, features: Sequence[str]) -> list[Batch]:
        """The distinct batches of ``size`` validation rows a model reading ``features`` is timed on."""
        return select_features(self._timing_rows[size], features).distinct_batches(size, self.n_batches)

    def _train(self, arch: Architecture, seed: int) -> tuple[CTRModel, CTRModel, Any, float, float, float]:
        """(float model, compressed model, TrainResult, compressed AUC, float AUC, seconds to train and
        compress) with one seed."""
        # another seed moves both the initialisation and the batch order; ``self.seed`` is the search's run
        cfg = self.train_config if seed == self.seed else \
            dataclasses.replace(self.train_config, seed=self.train_config.seed + seed - self.seed)
        start = time.perf_counter()
        with torch_threads(self.train_threads):
            model, compressed, result = train_candidate(arch, self.train_data, cfg, seed=seed)
            seconds = time.perf_counter() - start
            val = select_features(self.val_data, arch.features)
            return model, compressed, result, evaluate(compressed, val).auc, evaluate(model, val).auc, seconds

    def proxy_auc(self, arch: Architecture, seed: int) -> float:
        """The compressed proxy AUC of ``arch`` trained with ``seed`` (no latency): seed-spread studies.
        ``seed = self.seed`` repeats what :meth:`__call__` measures."""
        return _finite(self._train(arch, seed)[3])

    def compressed_model(self, arch: Architecture) -> CTRModel:
        """The compressed model :meth:`__call__` timed, trained again (same seed, data and order: the same
        weights), for re-timing a candidate whose artifact was not saved."""
        return self._train(arch, self.seed)[1]

    def __call__(self, arch: Architecture, *, baseline: bool = False) -> tuple[Evaluation, CTRModel]:
        """The candidate's :class:`Evaluation` and its trained float model (what artifacts store)."""
        model, compressed, result, auc, auc_float, train_s = self._train(arch, self.seed)
        latency, source, energy, notes, runtime, by_runtime = {}, {}, {}, {}, {}, {}
        for name, device in self.devices.items():
            try:
                if self.sources.get(name) == "measured":
                    ms, runtime[name], by_runtime[name], why = self.measure(arch, compressed, name, baseline=baseline)
                    src = "measured"
                    if why:
                        notes[name] = why
                else:
                    assert self.latency_fn is not None  # checked in __init__
                    ms, src = self.latency_fn(arch.spec, arch.compression, name, self.batch[name])
            except ConfigError as exc:  # no kernels for a precision / does not fit: infeasible here
                latency[name], source[name], energy[name], notes[name] = None, "unsupported", None, str(exc)
                continue
            latency[name], source[name] = ms, src
            energy[name] = energy_per_1k_j(device, ms, self.batch[name])
        return Evaluation(auc=_finite(auc), auc_uncompressed=_finite(auc_float),
                          model_bytes=parameter_bytes(compressed), latency_ms=latency, latency_source=source,
                          energy_per_1k_j=energy, train_steps=result.steps, train_s=round(train_s, 3), notes=notes,
                          latency_runtime=runtime, latency_by_runtime=by_runtime), model

    def measure(self, arch: Architecture, compressed: CTRModel, device: str, *,
                baseline: bool = False) -> tuple[float, str, dict[str, float], str | None]:
        """``(p50 ms, runtime it is taken on, p50 per runtime timed, why the runtime fell back or None)`` of
        ``compressed`` on this CPU: a candidate on ``runtime`` (eager if it cannot); the baseline on eager,
        as users run it, and on ``runtime``, round-robin in one run."""
        size = self.batch[device]
        models: dict[str, Any] = {}
        note = None
        for want in dict.fromkeys(("eager", self.runtime) if baseline else (self.runtime,)):
            # hugepages=True moves tables in place: keep the baseline's eager copy as users have it
            own = copy.deepcopy(compressed) if baseline and want != "eager" and self.runtime_options else compressed
            plain = baseline and want == "eager"  # the baseline's eager figure is plain FP32 eager, options or not
            options = self.runtime_options if want == self.runtime and not plain else None
            rt, used, why = load_runtime(own, want, options)
            note = note or why
            models.setdefault(used, rt)  # a baseline the runtime cannot run is timed on eager once
        # The first model of a format pays one-time costs (library and kernel initialisation: tens of ms, seen
        # on the baseline, which is measured first), and TorchScript's profiling executor specializes a graph
        # during its first calls: warm both up longer.
        key = (arch.compression.label, tuple(models))
        warmup = self.warmup if key in self._warmed else max(self.warmup, 20)
        self._warmed.add(key)
        if set(models) != {"eager"}:
            warmup = max(warmup, 3)
        batches = self.timing_batches(size, arch.features)
        prof = time_models({n: (rt, batches) for n, rt in models.items()}, warmup=warmup, repeats=self.repeats,
                           block=self.block, threads=self.threads, profiler=self.profiler, clock=self.profile_clock)
        p50 = {n: prof[n].at(size).p50_ms for n in models}
        used = "eager" if baseline else next(iter(models))
        return p50[used], used, p50, note


def _finite(auc: float) -> float:
    return 0.5 if math.isnan(auc) else float(auc)  # one-class validation data: no ranking information


def _ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x), dtype=np.float64)
    for v in np.unique(x):  # ties share their average rank
        ranks[x == v] = ranks[x == v].mean()
    return ranks


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rank correlation (ties averaged).

    >>> spearman([1, 2, 3, 4], [10, 20, 40, 30])
    0.8
    """
    ra, rb = _ranks(np.asarray(a, float)), _ranks(np.asarray(b, float))
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return round(float(np.corrcoef(ra, rb)[0, 1]), 12)


def kendall(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-b (ties in either list corrected for).

    >>> kendall([1, 2, 3, 4], [10, 20, 40, 30])
    0.6666666666666666
    """
    x, y = np.asarray(a, float), np.asarray(b, float)
    i, j = np.triu_indices(len(x), k=1)
    dx, dy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
    n0 = len(i)
    denom = math.sqrt((n0 - int((dx == 0).sum())) * (n0 - int((dy == 0).sum())))
    return float((dx * dy).sum() / denom) if denom else float("nan")


@dataclass(frozen=True, kw_only=True)
class RankCorrelation(Config):
    """How well the proxy AUC ranks candidates against longer training (Spearman, Kendall tau-b)."""

    n: int
    spearman: float
    kendall: float
    proxy_auc: tuple[float, ...]
    full_auc: tuple[float, ...]
    proxy_seconds: float
    full_seconds: float


def proxy_rank_correlation(archs: Sequence[Architecture], train_data: CTRData, val_data: CTRData, *,
                           proxy: TrainConfig, full: TrainConfig, eval_data: CTRData | None = None,
                           seed: int = 0) -> RankCorrelation:
    """Train every architecture with the ``proxy`` budget and with ``full`` training, and correlate
    their (compressed) AUCs on ``eval_data`` (default ``val_data``, which ``full`` also early-stops on).

    >>> from crossrec.data.synthetic import SyntheticConfig, generate
    >>> from crossrec.search.space import SearchSpace
    >>> tr, va = generate(SyntheticConfig(rows=400, num_dense=1, num_sparse=2, max_rows=9)).split((0.5, 0.5))
    >>> space = SearchSpace(embedding_dims=(4,), interactions=("dot",), top_widths=(8,), top_depths=(1,),
    ...                     bottom_depths=(0,), interaction_dims=(4, 8))
    >>> archs = [space.build(space.sample(np.random.default_rng(s), tr.schema), tr.schema) for s in (0, 2)]
    >>> rc = proxy_rank_correlation(archs, tr, va, proxy=TrainConfig(epochs=1, max_steps=1, batch_size=100),
    ...                             full=TrainConfig(epochs=1, batch_size=100))
    >>> rc.n, -1 <= rc.kendall <= 1 or math.isnan(rc.kendall)
    (2, True)
    """
    scores: dict[str, list[float]] = {"proxy": [], "full": []}
    seconds = {"proxy": 0.0, "full": 0.0}
    for arch in archs:
        for kind, cfg in (("proxy", proxy), ("full", full)):
            start = time.perf_counter()
            data = select_features(train_data, arch.features)
            val = select_features(val_data, arch.features)
            model = build(arch.spec, seed=seed)
            train(model, data, val if kind == "full" else None, cfg)
            compress_candidate(model, arch.compression, data)
            scores[kind].append(_finite(evaluate(model, select_features(eval_data or val_data, arch.features)).auc))
            seconds[kind] += time.perf_counter() - start
    return RankCorrelation(n=len(archs), spearman=spearman(scores["proxy"], scores["full"]),
                           kendall=kendall(scores["proxy"], scores["full"]), proxy_auc=tuple(scores["proxy"]),
                           full_auc=tuple(scores["full"]), proxy_seconds=round(seconds["proxy"], 3),
                           full_seconds=round(seconds["full"], 3))
