"""`collect()`: measure many (spec, compression, batch size) points into a JSONL latency data set.

This is what ``crossrec profile`` runs and what the :class:`~crossrec.hardware.predictor.LatencyPredictor`
trains on. For every spec, :func:`collect` builds the model with **random weights** (latency does not
depend on the values: the kernels, shapes and memory traffic are the same as a trained model's),
applies each :class:`~crossrec.hardware.features.CompressionChoice` to a copy, and measures all the
variants of that spec **round-robin** with :func:`~crossrec.hardware.profile.profile_many`, so machine
noise falls on them alike. Inputs are synthetic Criteo-like rows (one id per table, Zipf(1.05) ids
within each table, :mod:`crossrec.data.synthetic`), the same batch for every variant. Static int8
MLPs (dense ``int8-static``) calibrate on other synthetic rows of the same shape (:func:`calibration_rows`).

Each (spec, choice, batch size, device label, threads, runtime) is one :class:`ProfileRecord`, appended as
one JSON line to ``out`` as soon as its spec is measured; a rerun skips every key already in the file
(resumable). :func:`random_specs` generates diverse DLRM / DCNv2 / DeepFM / FM / deep specs to train on.

**Runtime** (issue #4). By default the variants are timed as eager PyTorch modules. ``runtime="script"`` (or
another CPU runtime of :mod:`crossrec.runtime`) times each variant through ``loader(variant, runtime, device)``
— what a deployment (and the search's CPU timing) runs. ``loader`` is :func:`crossrec.runtime.load`, *injected*
by the caller: hardware and runtime sit side by side in layer 3 of DESIGN.md §2, so this module may not import
it. A variant the runtime cannot run (a trace that fails or disagrees with eager: BackendError, an ONNX export
that refuses a compressed model: ConfigError) is timed on eager instead, and its record says so
(``runtime="eager"``, ``fallback`` = why; ``progress`` says it too). Records of several runtimes can share one
file: the key includes the requested runtime (eager keys are unchanged, so files written before runtimes resume).

>>> from crossrec.models import ModelSpec, TableSpec
>>> spec = ModelSpec(num_dense=2, tables=(TableSpec(name="a", num_embeddings=50),), embedding_dim=4,
...                  bottom_mlp=(4,), top_mlp=(8,))
>>> recs = collect([spec], [CompressionChoice(), CompressionChoice(embedding_precision="int8")], [1, 4],
...                repeats=2, warmup=0, min_time_s=0.0)
>>> [(r.choice.label, r.batch_size, r.source) for r in recs][:2], recs[0].p50_ms > 0
([('fp32/fp32', 1, 'measured'), ('fp32/fp32', 4, 'measured')], True)
"""

from __future__ import annotations

import copy
import gzip
import hashlib
import json
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from crossrec.config import Config, check
from crossrec.errors import ConfigError, CrossrecError, DataError
from crossrec.hardware.features import CompressionChoice

if TYPE_CHECKING:
    from crossrec.data.schema import FeatureSchema
    from crossrec.models.spec import ModelSpec

Progress = Callable[[str], None]
Loader = Callable[..., Any]  # crossrec.runtime.load: (model, runtime, device) -> a Runtime, called like the model


def spec_key(spec: ModelSpec) -> str:
    """Hash of a spec's architecture (its name and dropout excluded): held-out splits group by it."""
    d = spec.to_dict()
    d.pop("name", None)
    d.pop("dropout", None)
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def record_key(spec: ModelSpec, choice: CompressionChoice, batch_size: int, device: str, threads: int,
               runtime: str = "eager") -> str:
    """The identity of one measurement (what a resumed :func:`collect` skips). ``runtime`` is the runtime that
    was *asked for* (a fallback to eager keeps the key, so a resumed run does not retry it); it is hashed
    only when it is not ``"eager"``, so eager keys are those written before runtimes were recorded."""
    parts: list[Any] = [spec_key(spec), choice.to_dict(), batch_size, device, threads]
    if runtime != "eager":
        parts.append(runtime)
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


@dataclass(frozen=True, kw_only=True)
class ProfileRecord(Config):
    """One measured point: p50/p99 latency of ``spec`` compressed by ``choice`` at ``batch_size``.

    ``device`` is the label a predictor keys on (a catalog name where the device has one);
    ``catalog_device`` names its catalog entry (for the roofline prior) or is None; ``host`` is the
    detected device name. ``source`` is ``"measured"`` for :func:`collect`'s records; ``"synthetic"``
    marks made-up points (tests), which are never presented as measurements. ``runtime`` is what the calls
    were timed on (``"eager"`` in files written before it was recorded); ``fallback`` is empty, or says why
    the runtime asked for could not run the variant, which was then timed on eager.
    ``spec`` is a :class:`~crossrec.models.ModelSpec` (typed loosely so that importing this module
    never loads the models package or torch). One JSON line each in a data set (:func:`read_records`).

    >>> from crossrec.hardware.predictor import synthetic_record
    >>> from crossrec.models import ModelSpec, TableSpec
    >>> spec = ModelSpec(num_dense=2, tables=(TableSpec(name="a", num_embeddings=50),), embedding_dim=4,
    ...                  bottom_mlp=(4,), top_mlp=(8,))
    >>> r = synthetic_record(spec, CompressionChoice(), 8, "toy", 0.5)
    >>> ProfileRecord.from_json(r.to_json()) == r, r.source
    (True, 'synthetic')
    """

    key: str
    spec: Any
    choice: CompressionChoice
    batch_size: int
    device: str
    catalog_device: str | None
    host: str
    threads: int
    torch_version: str
    p50_ms: float
    p99_ms: float
    mean_ms: float
    min_ms: float
    samples_per_s: float
    repeats: int
    warmup: int
    interleaved_with: tuple[str, ...] = ()
    inputs: str = "synthetic one-hot, zipf 1.05"
    date: str = ""
    source: Literal["measured", "synthetic"] = "measured"
    runtime: str = "eager"
    fallback: str = ""

    def __post_init__(self) -> None:
        own = f"ProfileRecord({self.key})"
        check(isinstance(self.runtime, str) and bool(self.runtime), own, "runtime", self.runtime,
              "a crossrec runtime name, e.g. 'eager' or 'script'")
        check(not self.fallback or self.runtime == "eager", own, "fallback", self.fallback,
              "empty unless the record was timed on eager instead of the runtime asked for")
        check(hasattr(self.spec, "tables") and isinstance(self.spec, Config), own, "spec", type(self.spec).__name__,
              "a crossrec.models.ModelSpec")
        check(self.batch_size >= 1, own, "batch_size", self.batch_size, ">= 1")
        check(self.p50_ms > 0, own, "p50_ms", self.p50_ms, "> 0 ms")
        check(self.source in ("measured", "synthetic"), own, "source", self.source, "'measured' or 'synthetic'")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProfileRecord:
        from crossrec.models.spec import ModelSpec

        if isinstance(data, dict) and isinstance(data.get("spec"), dict):
            data = {**data, "spec": ModelSpec.from_dict(data["spec"])}
        return super().from_dict(data)


def read_records(path: str | Path) -> list[ProfileRecord]:
    """Every record of a JSONL file, gzipped if its name ends in ``.gz`` (``[]`` if it does not exist); a bad line
    raises DataError naming it."""
    path = Path(path)
    if not path.exists():
        return []
    out = []
    text = gzip.decompress(path.read_bytes()).decode() if path.suffix == ".gz" else path.read_text()
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(ProfileRecord.from_dict(json.loads(line)))
        except (json.JSONDecodeError, ConfigError) as exc:
            raise DataError(f"{path}:{n}: not a ProfileRecord ({exc}); fix or delete the line") from None
    return out


def _environment(device: str, device_label: str | None, catalog_device: str | None) -> tuple[str, str | None, str]:
    """(label, catalog name, detected name) of the device measurements are taken on."""
    from crossrec.hardware.detect import detect_cpu, detect_cuda
    from crossrec.hardware.spec import load_catalog

    if device == "cpu":
        found = detect_cpu()
    else:
        gpus = {d.torch_device: d for d in detect_cuda()}
        name = device if ":" in device else f"{device}:0"
        if name not in gpus:
            raise ConfigError(f"collect: device {device!r} is not available here; found {['cpu', *gpus]}")
        found = gpus[name]
    catalog = catalog_device or found.catalog_match
    if catalog is not None and catalog not in load_catalog():
        raise ConfigError(f"collect.catalog_device = {catalog!r} is not in the catalog; known: "
                          f"{', '.join(load_catalog())}")
    label = device_label or catalog or re.sub(r"[^a-z0-9._-]+", "-", found.name.lower()).strip("-")
    return label, catalog, found.name


def _make_batches(spec: ModelSpec, max_batch: int, seed: int):
    """``make_batch(b)`` over one synthetic Criteo-like set of ``max_batch`` rows (first ``b`` rows)."""
    from crossrec.data.batch import Batch
    from crossrec.data.synthetic import SyntheticConfig, generate

    if not spec.tables:
        import torch

        gen = torch.Generator().manual_seed(seed)
        dense = torch.randn(max_batch, spec.num_dense, generator=gen)
        return lambda b: Batch(dense=dense[:b], ids=torch.zeros(0, dtype=torch.long),
                               offsets=torch.zeros(1, dtype=torch.long), num_sparse=0)
    data = generate(SyntheticConfig(rows=max_batch, num_dense=spec.num_dense, num_sparse=len(spec.tables),
                                    cardinalities=tuple(t.num_embeddings for t in spec.tables), max_rows=None,
                                    seed=seed))
    batches = {}

    def make(b: int):
        if b not in batches:
            batches[b] = data.slice(0, b).to_batch()
        return batches[b]

    return make


CALIBRATION_ROWS = 1024


def calibration_rows(spec: ModelSpec, rows: int = CALIBRATION_ROWS, seed: int = 0) -> list:
    """Synthetic batches shaped for ``spec`` (its dense width, its tables' sizes) to calibrate static int8
    MLPs on when no real data is at hand: a model with random weights has no data of its own, and the
    activation scales change the values, not the kernels or the time (batches of 512 rows).

    >>> from crossrec.models import ModelSpec, TableSpec
    >>> spec = ModelSpec(num_dense=2, tables=(TableSpec(name="a", num_embeddings=50),), embedding_dim=4,
    ...                  bottom_mlp=(4,), top_mlp=(8,))
    >>> [(b.dense.shape[0], b.num_sparse) for b in calibration_rows(spec, 700)]
    [(512, 1), (188, 1)]
    """
    check(rows >= 1, "calibration_rows", "rows", rows, ">= 1")
    sizes = [min(512, rows - i) for i in range(0, rows, 512)]
    make = [_make_batches(spec, b, seed + k) for k, b in enumerate(sizes)]  # distinct rows per batch
    return [m(b) for m, b in zip(make, sizes)]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


def _check_runtime(runtime: str, loader: Loader | None, device: str) -> None:
    """Fail at once, not once per variant, when ``runtime`` cannot run here at all (a misspelt name, a runtime
    of another device, a missing extra): it must run a tiny fp32 model, or collecting makes no sense."""
    if runtime == "eager":
        return
    if loader is None:
        raise ConfigError(f"collect(runtime={runtime!r}) needs loader=crossrec.runtime.load: hardware sits beside "
                          "runtime in the layering of DESIGN.md §2, so the caller passes it in (as the CLI does)")
    from crossrec.models.ctr import build
    from crossrec.models.spec import ModelSpec, TableSpec

    probe = build(ModelSpec(num_dense=1, tables=(TableSpec(name="t", num_embeddings=4),), embedding_dim=4,
                            bottom_mlp=(4,), top_mlp=(4,), name="runtime-probe"), seed=0).to(device)
    try:
        rt = loader(probe, runtime, device)
    except Exception as exc:  # whatever the loader raises, the runtime is unusable for every variant
        raise ConfigError(f"collect.runtime = {runtime!r} cannot run even a tiny fp32 model on {device} "
                          f"({_first_line(exc)}); pick a runtime registered for {device}, e.g. 'eager' or "
                          "'script' on the CPU") from exc
    _close(rt)


def _close(rt: Any) -> None:
    close = getattr(rt, "close", None)
    if callable(close):
        close()


def _on_runtime(model: Any, runtime: str, loader: Loader | None, device: str) -> tuple[Any, str, str]:
    """``(what to time, runtime it runs on, fallback reason or "")``: ``model`` on ``runtime``, or the model itself
    (eager) when the runtime cannot run it — a trace that fails or disagrees with eager, an export that
    refuses a compressed model. Eager is the module itself, timed exactly as before runtimes were recorded."""
    if runtime == "eager" or loader is None:
        return model, "eager", ""
    try:
        return loader(model, runtime, device), runtime, ""
    except (CrossrecError, RuntimeError) as exc:  # BackendError / ConfigError from crossrec; torch's own errors
        return model, "eager", f"{runtime} could not run it ({_first_line(exc)}); timed on eager"


def _measure_spec(spec: ModelSpec, todo: dict[str, CompressionChoice], batch_sizes: list[int], *,
                  device: str, threads: int | None, warmup: int, repeats: int, min_time_s: float,
                  max_repeats: int, seed: int, clock, runtime: str = "eager",
                  loader: Loader | None = None) -> tuple[dict, dict[str, tuple[str, str]]]:
    """Profiles of every choice in ``todo`` (label -> choice) of one spec, measured round-robin on ``runtime``,
    and per label (runtime it ran on, fallback reason)."""
    from crossrec.hardware.profile import profile_many
    from crossrec.models.ctr import build

    base = build(spec, seed=seed).to(device)
    calibration = calibration_rows(spec, seed=seed + 1) if any(c.needs_calibration for c in todo.values()) else None
    variants = {}
    for label, choice in todo.items():
        m = base if choice == CompressionChoice() else copy.deepcopy(base)
        variants[label] = choice.apply_(m, calibration).to(device)
    # every variant is built before any is traced: copies come from the untouched base
    models, ran_on = {}, {}
    for label, m in variants.items():
        models[label], used, why = _on_runtime(m, runtime, loader, device)
        ran_on[label] = (used, why)
    try:
        profiles = profile_many(models, _make_batches(spec, max(batch_sizes), seed), batch_sizes=batch_sizes,
                                device=device, threads=threads, warmup=warmup, repeats=repeats,
                                min_time_s=min_time_s, max_repeats=max_repeats, clock=clock)
    finally:
        for label, m in models.items():
            if m is not variants[label]:
                _close(m)
    return profiles, ran_on


def collect(specs: Iterable[ModelSpec],
            choices: Sequence[CompressionChoice] | Callable[[ModelSpec], Sequence[CompressionChoice]],
            batch_sizes: Sequence[int], *, device: str = "cpu", device_label: str | None = None,
            catalog_device: str | None = None, out: str | Path | None = None, repeats: int = 30, warmup: int = 5,
            min_time_s: float = 0.3, max_repeats: int = 2000, threads: int | None = None, seed: int = 0,
            progress: Progress | None = None, clock: Callable[[], float] = time.perf_counter,
            runtime: str = "eager", loader: Loader | None = None) -> list[ProfileRecord]:
    """Measure every (spec, choice, batch size) not yet in ``out``; returns the records of all of them.

    ``choices`` is one list for every spec or a function ``spec -> choices``; a choice a spec cannot
    take (int4 tables of odd dim, int8-static without an MLP, any int8/int4/int2 part off the CPU) is skipped
    and reported through ``progress``. ``device`` is the torch device; ``device_label`` (default: the catalog
    entry the detected device matches, else its name) and ``catalog_device`` are what the records
    say. ``threads`` sets torch's intra-op threads for the measurements (default: leave as is); it
    is part of each record's key. Records of one spec are appended to ``out`` (JSONL) once that spec
    is measured, so an interrupted run loses at most one spec. ``progress`` receives one line per
    spec (and one per variant that fell back to eager). ``runtime`` is what the variants are timed on and
    ``loader`` is :func:`crossrec.runtime.load` (needed for any runtime but eager: module docstring); the
    runtime is checked once on a tiny model first (ConfigError if it cannot run here at all). See the module
    docstring for the method.

    >>> from crossrec.models import ModelSpec, TableSpec
    >>> spec = ModelSpec(num_dense=2, tables=(TableSpec(name="a", num_embeddings=50),), embedding_dim=4,
    ...                  bottom_mlp=(4,), top_mlp=(8,), name="tiny")
    >>> said = []
    >>> recs = collect([spec], [CompressionChoice.parse("int8/bf16")], [2], repeats=2, warmup=0, min_time_s=0.0,
    ...                progress=said.append)
    >>> len(recs), recs[0].choice.label, said[0].startswith("[1] tiny: 1 variants x 1 batch sizes")
    (1, 'int8/bf16', True)
    >>> from crossrec.runtime import load  # what the CLI passes in
    >>> recs = collect([spec], [CompressionChoice()], [2], repeats=2, warmup=0, min_time_s=0.0, runtime="script",
    ...                loader=load)
    >>> recs[0].runtime, recs[0].fallback
    ('script', '')
    """
    import torch

    check(len(batch_sizes) >= 1 and all(int(b) >= 1 for b in batch_sizes), "collect", "batch_sizes", batch_sizes,
          "one or more sizes >= 1")
    check(out is None or Path(out).suffix != ".gz", "collect", "out", out,
          "a plain .jsonl file (records are appended to it; .gz files are read-only: gunzip it to resume)")
    label, catalog, host = _environment(device, device_label, catalog_device)
    _check_runtime(runtime, loader, device)
    used_threads = threads or torch.get_num_threads()
    have = {r.key: r for r in read_records(out)} if out is not None else {}
    say = progress or (lambda _msg: None)
    results: list[ProfileRecord] = []
    for i, spec in enumerate(specs):
        todo: dict[str, CompressionChoice] = {}
        for choice in (choices(spec) if callable(choices) else choices):
            try:
                choice.precisions_for(spec)
            except ConfigError as exc:
                say(f"skip {spec.name} {choice.label}: {exc}")
                continue
            cpu_only = choice.cpu_only_parts(spec) if device != "cpu" else []
            if cpu_only:
                say(f"skip {spec.name} {choice.label}: {', '.join(cpu_only)} run FBGEMM/oneDNN CPU kernels only, "
                    f"not on {device}")
                continue
            for bs in batch_sizes:
                key = record_key(spec, choice, int(bs), label, used_threads, runtime)
                if key in have:
                    results.append(have[key])
                else:
                    todo[choice.label] = choice
        if not todo:
            continue
        start = time.perf_counter()
        profiles, ran_on = _measure_spec(spec, todo, [int(b) for b in batch_sizes], device=device, threads=threads,
                                         warmup=warmup, repeats=repeats, min_time_s=min_time_s,
                                         max_repeats=max_repeats, seed=seed + i, clock=clock, runtime=runtime,
                                         loader=loader)
        new = []
        for lab, choice in todo.items():
            prof = profiles[lab]
            used, why = ran_on[lab]
            if why:
                say(f"fallback {spec.name} {lab}: {why}")
            for bs in batch_sizes:
                key = record_key(spec, choice, int(bs), label, used_threads, runtime)
                if key in have:
                    continue
                bp = prof.at(int(bs))
                new.append(ProfileRecord(
                    key=key, spec=spec, choice=choice, batch_size=int(bs), device=label, catalog_device=catalog,
                    host=host, threads=prof.threads, torch_version=prof.torch_version, p50_ms=bp.p50_ms,
                    p99_ms=bp.p99_ms, mean_ms=bp.mean_ms, min_ms=bp.min_ms, samples_per_s=bp.samples_per_s,
                    repeats=len(bp.latencies_ms), warmup=warmup, interleaved_with=prof.interleaved_with,
                    date=time.strftime("%Y-%m-%d %H:%M:%S"), runtime=used, fallback=why))
        if out is not None:
            Path(out).parent.mkdir(parents=True, exist_ok=True)
            with open(out, "a") as f:
                f.writelines(json.dumps(r.to_dict()) + "\n" for r in new)
        have.update((r.key, r) for r in new)
        results.extend(new)
        say(f"[{i + 1}] {spec.name}: {len(todo)} variants x {len(batch_sizes)} batch sizes "
            f"{'' if runtime == 'eager' else f'on {runtime} '}in {time.perf_counter() - start:.1f} s")
    return results


# Widths and dims of the Criteo-like architecture space random_specs() draws from.
WIDTHS: tuple[int, ...] = (32, 64, 128, 256, 512, 1024)
DIMS: tuple[int, ...] = (8, 16, 32, 64, 128)


def _mlp(rng: np.random.Generator, depth_max: int, last: int | None = None) -> tuple[int, ...]:
    """Non-increasing widths (as recommendation MLPs are); ``last`` forces the final width."""
    depth = int(rng.integers(1, depth_max + 1))
    widths = sorted((int(rng.choice(WIDTHS)) for _ in range(depth)), reverse=True)
    if last is not None:
        widths[-1] = last
    return tuple(widths)


def _tables(rng: np.random.Generator, schema_like: FeatureSchema | None, max_rows: int) -> list[int]:
    if schema_like is not None:
        return [min(n, max_rows) for n in schema_like.cardinalities]
    n_tab = int(rng.integers(4, 41))
    # Criteo's sizes span 3 .. 10M rows roughly log-uniformly: draw log-uniform in [3, max_rows].
    return [int(np.exp(rng.uniform(np.log(3), np.log(max_rows)))) for _ in range(n_tab)]


def random_specs(n: int, seed: int = 0, *, schema_like: FeatureSchema | None = None, max_rows: int = 200_000,
                 max_table_bytes: int = 256 * 2**20,
                 interactions: Sequence[str] = ("dot", "cross", "fm", "concat")) -> Iterator[ModelSpec]:
    """``n`` diverse specs for latency training data (deterministic for a seed).

    Criteo-like space: 13 dense features (or ``schema_like``'s), 4-40 tables of 3..``max_rows`` rows
    drawn log-uniformly (or ``schema_like``'s sizes capped at ``max_rows``), embedding dim 8-128 (one
    per table, AutoDim-style, in a fifth of the specs), bottom MLP 1-3 and top MLP 1-4 layers of 32-1024,
    DCNv2 1-4 cross layers (full or rank 16-64), FM with or without a deep part. Row counts are scaled
    down so the fp32 tables stay within ``max_table_bytes`` (default 256 MiB: ~300 measurements take
    ~10 minutes on 2 cores).

    >>> specs = list(random_specs(3, seed=1))
    >>> len(specs), len({s.name for s in specs}), all(s.num_dense == 13 for s in specs)
    (3, 3, True)
    """
    from crossrec.models.spec import ModelSpec, TableSpec

    check(n >= 0, "random_specs", "n", n, ">= 0")
    check(all(i in ("dot", "cross", "fm", "concat", "lr") for i in interactions) and len(interactions) > 0,
          "random_specs", "interactions", interactions, "a non-empty subset of dot, cross, fm, concat, lr")
    num_dense = schema_like.num_dense if schema_like is not None else 13
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        inter = str(rng.choice(list(interactions)))
        rows = _tables(rng, schema_like, max_rows)
        d = int(rng.choice(DIMS))
        dims = [int(rng.choice(DIMS)) for _ in rows] if rng.random() < 0.2 else [d] * len(rows)
        fp32_bytes = sum(r * dim * 4 for r, dim in zip(rows, dims))
        if fp32_bytes > max_table_bytes:
            rows = [max(1, int(r * max_table_bytes / fp32_bytes)) for r in rows]
        tables = tuple(TableSpec(name=f"C{j + 1}", num_embeddings=r, dim=None if dim == d else dim)
                       for j, (r, dim) in enumerate(zip(rows, dims)))
        equal = inter in ("dot", "fm")
        bottom = _mlp(rng, 3, last=d if equal else None) if num_dense and inter != "lr" else ()
        top = _mlp(rng, 4)
        if inter == "fm" and rng.random() < 0.25:
            top = ()  # plain FM
        family = {"dot": "dlrm", "cross": "dcnv2", "fm": "deepfm" if top else "fm", "concat": "deep",
                  "lr": "lr"}[inter]
        yield ModelSpec(num_dense=num_dense, tables=tables, embedding_dim=d, bottom_mlp=bottom, top_mlp=top,
                        interaction=inter, cross_layers=int(rng.integers(1, 5)),
                        cross_rank=None if rng.random() < 0.5 else int(rng.choice((16, 32, 64))),
                        name=f"{family}-s{seed}-{i}")


# The compressions crossrec ships for CPU (tables x dense layers); run_profile() samples from them. The
# int8-static ones calibrate on calibration_rows(): without them a predictor cannot price static int8 MLPs.
DEFAULT_CHOICES: tuple[str, ...] = ("fp32/fp32", "int8/fp32", "fp32/bf16", "int8/bf16", "int4/bf16", "fp32/int8",
                                    "int8/int8", "int4/int8", "fp16/bf16", "fp32/int8-static", "int8/int8-static")


def sample_choices(spec: ModelSpec, rng: np.random.Generator, k: int = 3,
                   pool: Sequence[str] = DEFAULT_CHOICES) -> list[CompressionChoice]:
    """``fp32/fp32`` plus ``k - 1`` others drawn from ``pool``; one in five specs gets a mixed-precision
    choice instead of the last (tables above 10k rows int4, the rest fp32), as a search would propose.

    >>> from crossrec.models import ModelSpec, TableSpec
    >>> spec = ModelSpec(num_dense=0, tables=(TableSpec(name="a", num_embeddings=50_000),
    ...                  TableSpec(name="b", num_embeddings=9)), embedding_dim=8, top_mlp=(8,), bottom_mlp=())
    >>> [c.label for c in sample_choices(spec, np.random.default_rng(0))]
    ['fp32/fp32', 'fp16/bf16', 'mixed(a=int4)/fp32']
    """
    others = [p for p in pool if p != "fp32/fp32"]
    picked = [CompressionChoice()] + [CompressionChoice.parse(others[j])
                                      for j in rng.choice(len(others), size=min(k - 1, len(others)), replace=False)]
    if k >= 2 and rng.random() < 0.2:
        big = {t.name: "int4" for t in spec.tables if t.num_embeddings > 10_000}
        if big and len(big) < len(spec.tables):
            picked[-1] = CompressionChoice(embedding_precision=big,
                                           dense_precision=str(rng.choice(["fp32", "bf16", "int8"])))
    return picked


def run_profile(out: str | Path, *, n: int = 100, batch_sizes: Sequence[int] = (1, 64, 512),
                choices: Sequence[str] | None = None, choices_per_spec: int = 3, seed: int = 0,
                max_rows: int = 200_000, max_table_bytes: int = 256 * 2**20, repeats: int = 30, warmup: int = 5,
                min_time_s: float = 0.3, threads: int | None = None, device: str = "cpu",
                device_label: str | None = None, catalog_device: str | None = None,
                progress: Progress | None = None, runtime: str = "eager",
                loader: Loader | None = None) -> list[ProfileRecord]:
    """What ``crossrec profile`` runs: ``n`` :func:`random_specs` x sampled choices x ``batch_sizes`` into
    ``out`` (resumable: rerun the same command to continue). ``choices`` (``"EMB/DENSE"`` strings) fixes the
    choices of every spec instead of sampling ``choices_per_spec`` of :data:`DEFAULT_CHOICES`. ``runtime`` /
    ``loader``: what the variants are timed on (:func:`collect`); the same specs and choices for every runtime,
    so an eager and a script data set measure the same points.
    """
    fixed = [CompressionChoice.parse(c) for c in choices] if choices else None

    def pick(spec: ModelSpec) -> list[CompressionChoice]:
        # seeded by the spec's architecture, so a resumed run asks for exactly the same choices
        rng = np.random.default_rng([seed, int(spec_key(spec)[:8], 16)])
        return fixed if fixed is not None else sample_choices(spec, rng, choices_per_spec)

    specs = random_specs(n, seed, max_rows=max_rows, max_table_bytes=max_table_bytes)
    return collect(specs, pick, batch_sizes, device=device, device_label=device_label, catalog_device=catalog_device,
                   out=out, repeats=repeats, warmup=warmup, min_time_s=min_time_s, threads=threads, seed=seed,
                   progress=progress, runtime=runtime, loader=loader)
