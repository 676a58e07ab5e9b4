"""`search()`: the loop that owns evaluation, the cache, the budget and persistence.

Per trial: the strategy's sampler draws choices through Optuna's ask/tell, the space builds the
architecture, and the candidate is evaluated once — its key (a hash of the architecture) finds any
earlier evaluation in this process or in the storage, whichever worker made it. Everything a
trial produced goes into the study (``user_attrs``), so the Optuna storage (SQLite in ``out`` by
default) is the search's whole memory: rerunning the same config resumes it, and several workers
may share one storage. ``n_trials`` counts the study's finished and running trials, so workers
stop together; each may overshoot by the trials the others started in the same instant.

Outputs in ``out``: ``history.jsonl`` (one line per trial this worker ran), ``front.json`` (a
:class:`~crossrec.search.pareto.ParetoFront`: every device's front, the baseline, the picks),
``candidates/<key>/`` (an artifact per candidate that is still on some front — dominated ones are
deleted as the search goes) and ``baseline/<key>/``. The front also says, per device, whether a member
beats the baseline strictly and within ``auc_tolerance`` (``front.dominance``), and how much the
baseline's AUC moves over ``baseline_seeds`` seeds (``front.baseline_spread``).

On the local CPU, candidates are timed on ``latency.cpu_runtime`` (TorchScript by default) and the
baseline on FP32 eager and on that runtime. When the trials are done, the members that claim dominance
there (and the fastest few at each AUC floor) are re-timed round-robin with the baseline
(:mod:`~crossrec.search.verify`), and ``front.dominance`` reports those ratios (``timing: retimed``),
keeping the search's own in ``search_time``.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crossrec.artifact import load_artifact, save_artifact
from crossrec.config import dump, load
from crossrec.data.sources import SPLIT, Splits, load_splits
from crossrec.errors import ConfigError, CrossrecError
from crossrec.hardware.detect import LOCAL_CPU
from crossrec.hardware.features import CompressionChoice
from crossrec.hardware.spec import DeviceSpec, load_catalog
from crossrec.models.ctr import CTRModel
from crossrec.models.spec import ModelSpec
from crossrec.search.config import SearchConfig, baseline_precisions
from crossrec.search.objectives import (
    Evaluation,
    Evaluator,
    LatencyFn,
    compress_candidate,
    modeled_latency,
    objective_names,
    predictor_latency,
)
from crossrec.search.pareto import Candidate, ParetoFront, SeedSpread, build_front, non_dominated_sort
from crossrec.search.space import Architecture, select_features, subset_schema
from crossrec.search.storage import _open_study, _quiet_optuna
from crossrec.search.strategy import make_strategy
from crossrec.search.timing import Profiler, profile_many
from crossrec.search.verify import verify_front


@dataclass
class SearchResult:
    """What a call of :func:`search` produced and where it wrote it."""

    front: ParetoFront
    front_path: Path
    history_path: Path
    study_name: str
    storage: str
    finished_trials: int
    evaluated: int
    cached: int
    failed: int
    seconds: float


def load_data(config: SearchConfig) -> Splits:
    """The seeded train/val/test splits named by ``config.data``."""
    d = config.data
    if d.synthetic is not None:
        from crossrec.data.synthetic import generate

        return Splits(*generate(d.synthetic).split(SPLIT, seed=config.seed))
    return load_splits(d.name, path=d.path, split=d.split, seed=config.seed, rows=d.rows)


def _local_cpu() -> str | None:
    from crossrec.hardware.detect import detect

    return next((d.catalog_match for d in detect(cuda=False) if d.kind == "cpu"), None)


def resolve_local_cpu(config: SearchConfig, local_device: str | None) -> SearchConfig:
    """``config`` with the device alias ``local-cpu`` replaced by this machine's CPU catalog entry (also in
    ``latency.sources`` / ``batch_sizes`` and ``deployment_weights``), so one config file measures whichever
    CPU it runs on; front.json and the stored config name the real entry.

    >>> cfg = SearchConfig.from_dict({"devices": ["local-cpu", "h100-sxm"],
    ...                               "latency": {"batch_sizes": {"local-cpu": 256}}})
    >>> r = resolve_local_cpu(cfg, "epyc-zen3-2vcpu")
    >>> r.devices, r.latency.batch_sizes
    (('epyc-zen3-2vcpu', 'h100-sxm'), {'epyc-zen3-2vcpu': 256})
    """
    if LOCAL_CPU not in config.devices:
        return config
    if not local_device:
        raise ConfigError("devices names 'local-cpu', but this machine's CPU matches no catalog entry "
                          "(crossrec.hardware.detect_cpu() shows its name and ISA flags): add an entry for it to a "
                          "catalog file (SearchConfig.catalog), or name catalog devices instead")
    if local_device in config.devices:
        raise ConfigError(f"devices names both 'local-cpu' and {local_device!r}, which is this machine's CPU: "
                          "keep one of them")

    def swap(d: dict) -> dict:
        return {(local_device if k == LOCAL_CPU else k): v for k, v in d.items()}

    lat = dataclasses.replace(config.latency, sources=swap(config.latency.sources),
                              batch_sizes=swap(config.latency.batch_sizes))
    return dataclasses.replace(config, devices=tuple(local_device if d == LOCAL_CPU else d for d in config.devices),
                               latency=lat, deployment_weights=swap(config.deployment_weights))


def _load_predictor(path: str, catalog: dict[str, DeviceSpec]) -> Any:
    from crossrec.hardware.predictor import LatencyPredictor

    return LatencyPredictor.load(path, catalog=catalog)


def resolve_sources(config: SearchConfig, catalog: dict[str, DeviceSpec], *, local_device: str | None,
                    latency_fn: LatencyFn | None = None, predictor: Any = None) -> tuple[dict[str, str], LatencyFn]:
    """Per device ``"measured"`` or ``"latency_fn"``, and the latency_fn answering for the latter."""
    modeled = modeled_latency(catalog)
    if predictor is None and config.latency.predictor:
        predictor = _load_predictor(config.latency.predictor, catalog)
    predicted = predictor_latency(predictor, catalog) if predictor is not None else None
    sources, fns = {}, {}
    for device in config.devices:
        want = config.latency.sources.get(device, "auto")
        if want == "measured" and device != local_device:
            raise ConfigError(f"latency.sources[{device}] = 'measured', but this machine's CPU is {local_device!r}: "
                              "only the local CPU can be measured; use 'predicted' or 'modeled' for other devices")
        if want == "predicted" and predicted is None and latency_fn is None:
            raise ConfigError(f"latency.sources[{device}] = 'predicted' needs latency.predictor (a saved "
                              "LatencyPredictor) or an injected latency_fn")
        if want == "measured" or (want == "auto" and device == local_device):
            sources[device] = "measured"
        else:
            sources[device] = "latency_fn"
            fns[device] = latency_fn or (modeled if want == "modeled" or predicted is None else predicted)
    return sources, lambda spec, choice, device, bs: fns[device](spec, choice, device, bs)


def _baseline_spec(config: SearchConfig, schema) -> ModelSpec | None:
    b = config.baseline
    if b is None:
        return None
    return ModelSpec.for_schema(schema, interaction=b.interaction, embedding_dim=b.embedding_dim,  # type: ignore
                                bottom_mlp=b.bottom_mlp if schema.num_dense else (), top_mlp=b.top_mlp, name=b.name)


class _Run:
    """State of one worker's search: data, evaluator, study, cache and files."""

    def __init__(self, config: SearchConfig, splits: Splits, evaluator: Evaluator, study: Any,
                 progress: Callable[[dict], None] | None):
        self.config, self.splits, self.evaluator, self.study, self.progress = config, splits, evaluator, study, progress
        self.schema = splits.train.schema
        self.out = Path(config.out)
        self.history = self.out / "history.jsonl"
        self.names = [n for n, _ in objective_names(config.objectives, config.devices)]
        self.cache: dict[str, tuple[Evaluation, str | None]] = {}
        self.counts = {"evaluated": 0, "cached": 0, "failed": 0}
        self._models: dict[str, CTRModel] = {}  # compressed models re-timed after the search, by key

    def evaluate(self, arch: Architecture, folder: str, trial: int | None,
                 baseline: bool = False) -> tuple[Evaluation, str | None, bool]:
        """(evaluation, artifact path relative to out, was it cached). The baseline is timed otherwise (on
        eager too): its evaluations are cached apart from the candidates' (one could share its architecture)."""
        key = arch.key()
        slot = f"baseline:{key}" if baseline else key
        if slot not in self.cache and not baseline:
            self._refresh_cache()
        if slot in self.cache:
            return *self.cache[slot], True
        evaluation, model = self.evaluator(arch, baseline=baseline)
        rel = None
        if self.config.save_artifacts:
            rel = f"{folder}/{key}"
            path = self.out / rel
            if not path.exists():  # another worker may have saved the same candidate
                info = {"search": {"study": self.config.name, "trial": trial, "key": key, "arch": arch.to_dict(),
                                   "compression": arch.compression.to_dict(), "evaluation": evaluation.to_dict()}}
                save_artifact(path, model, subset_schema(self.schema, arch.features), extra=self.splits.extra or None,
                              metrics={"val": {"auc": evaluation.auc_uncompressed},
                                       "val_compressed": {"auc": evaluation.auc}}, info=info, overwrite=True)
        self.cache[slot] = (evaluation, rel)
        return evaluation, rel, False

    def model_for(self, cand: Candidate) -> CTRModel:
        """The compressed model the search timed for ``cand``: its saved float artifact compressed again
        (calibrated on the same training rows), else trained again (same seed: the same weights)."""
        if cand.key not in self._models:
            path = self.out / cand.artifact if cand.artifact else None
            if path is not None and (path / "manifest.json").is_file():
                model = load_artifact(path).model
                data = select_features(self.evaluator.train_data, cand.arch.features)
                self._models[cand.key] = compress_candidate(model, cand.arch.compression, data).eval()
            else:
                self._models[cand.key] = self.evaluator.compressed_model(cand.arch)
        return self._models[cand.key]

    def _refresh_cache(self) -> None:
        for t in self.study.get_trials(deepcopy=False):
            c = t.user_attrs.get("candidate")
            if c and c["key"] not in self.cache:
                self.cache[c["key"]] = (Evaluation.from_dict(c["evaluation"]), c.get("artifact"))

    def baseline(self) -> dict[str, Candidate]:
        """The baseline per device (evaluated once per precision and stored in the study)."""
        stored = self.study.user_attrs.get("baseline")
        if stored is not None:
            return {d: Candidate.from_dict(c) for d, c in stored.items()}
        spec = _baseline_spec(self.config, self.schema)
        if spec is None:
            return {}
        out, features = {}, tuple(f.name for f in self.schema.sparse)
        for name, device in self.evaluator.devices.items():
            dense = tuple(p for p in ("fp32", "bf16", "int8") if device.supports(p))
            table, dense_p = baseline_precisions(dense, device.embedding_precisions)
            arch = Architecture(spec=spec, features=features,
                                compression=CompressionChoice(embedding_precision=table, dense_precision=dense_p))
            evaluation, rel, _ = self.evaluate(arch, "baseline", None, baseline=True)
            out[name] = Candidate(key=arch.key(), arch=arch, evaluation=evaluation, artifact=rel)
        self.study.set_user_attr("baseline", {d: c.to_dict() for d, c in out.items()})
        return out

    def baseline_spread(self, baseline: dict[str, Candidate]) -> dict[str, SeedSpread]:
        """Per device, the baseline's compressed proxy AUC over ``config.baseline_seeds`` seeds (``seed``
        is the stored baseline; the others are trained here once and kept in the study, keyed by the
        baseline's architecture and seed, so a resumed or wider run only trains the seeds it lacks)."""
        k = self.config.baseline_seeds
        if k < 2 or not baseline:
            return {}
        stored: dict[str, dict[str, float]] = dict(self.study.user_attrs.get("baseline_seeds", {}))
        seeds = [self.config.seed + i for i in range(k)]
        out = {}
        for device, cand in baseline.items():
            per = dict(stored.get(cand.key, {}))
            per.setdefault(str(self.config.seed), cand.evaluation.auc)
            for s in seeds:
                if str(s) not in per:  # devices sharing a baseline precision share its seeds
                    per[str(s)] = self.evaluator.proxy_auc(cand.arch, s)
            stored[cand.key] = per
            out[device] = SeedSpread.of(seeds, [per[str(s)] for s in seeds])
        self.study.set_user_attr("baseline_seeds", stored)
        return out

    def budget_left(self) -> bool:
        from optuna.trial import TrialState

        states = (TrialState.COMPLETE, TrialState.FAIL, TrialState.RUNNING)
        return len(self.study.get_trials(deepcopy=False, states=states)) < self.config.n_trials

    def trial(self, strategy: Any) -> None:
        """Ask, evaluate (or reuse), tell, record."""
        from optuna.trial import TrialState

        self.study.sampler = strategy.sampler(self.study)
        trial, start = self.study.ask(), time.perf_counter()
        record: dict[str, Any] = {"trial": trial.number, "study": self.config.name}
        try:
            choices = strategy.propose(trial)
            arch = self.config.space.build(choices, self.schema)
            evaluation, rel, cached = self.evaluate(arch, "candidates", trial.number)
            values = evaluation.values(self.config.objectives, self.config.devices)
            # one attribute, one SQLite commit (each commit is an fsync: ~10 ms on a busy disk)
            trial.set_user_attr("candidate", {"choices": choices, "key": arch.key(), "arch": arch.to_dict(),
                                              "cached": cached, "evaluation": evaluation.to_dict(), "artifact": rel})
            self.study.tell(trial, values)
        except CrossrecError as exc:  # e.g. training diverged: the trial fails, the search goes on
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}")
            self.study.tell(trial, state=TrialState.FAIL)
            self.counts["failed"] += 1
            record.update(state="fail", error=f"{type(exc).__name__}: {exc}")
        except BaseException:
            self.study.tell(trial, state=TrialState.FAIL)  # do not leave a RUNNING trial behind
            raise
        else:
            self.counts["cached" if cached else "evaluated"] += 1
            objectives = dict(zip(self.names, values))
            strategy.feedback(choices, objectives)
            record.update(state="complete", key=arch.key(), cached=cached, choices=choices, arch=arch.to_dict(),
                          evaluation=evaluation.to_dict(), objectives=objectives, artifact=rel)
        record["seconds"] = round(time.perf_counter() - start, 3)
        with open(self.history, "a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
        if self.progress:
            self.progress(record)

    def candidates(self) -> list[Candidate]:
        """Every distinct completed candidate of the study (first trial per key), trial order."""
        from optuna.trial import TrialState

        seen: dict[str, Candidate] = {}
        for t in sorted(self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.number):
            a = t.user_attrs.get("candidate")
            if a and a["key"] not in seen:
                seen[a["key"]] = Candidate(key=a["key"], trial=t.number, choices=a["choices"],
                                           arch=Architecture.from_dict(a["arch"]),
                                           evaluation=Evaluation.from_dict(a["evaluation"]), artifact=a.get("artifact"))
        return list(seen.values())

    def prune(self, candidates: list[Candidate]) -> set[str]:
        """Delete artifacts of candidates dominated jointly (AUC, every device's latency, bytes) and on
        no device's front; returns the keys kept. Trials never disappear, so a dominated candidate
        stays dominated: safe with several workers."""
        if not candidates:
            return set()
        front = build_front(candidates, devices=self.config.devices, objectives=self.config.objectives)
        rows = [[c.evaluation.auc, *(c.latency(d) if c.latency(d) is not None else float("inf")
                                     for d in self.config.devices), c.evaluation.model_bytes] for c in candidates]
        keep = {candidates[i].key for i in non_dominated_sort(rows, [True] + [False] * (len(rows[0]) - 1))[0]}
        keep |= {candidates[i].key for idx in front.fronts.values() for i in idx}
        for c in candidates:
            if c.key not in keep and c.artifact and (self.out / c.artifact).exists():
                shutil.rmtree(self.out / c.artifact, ignore_errors=True)
        return keep


def search(config: SearchConfig, *, splits: Splits | None = None, latency_fn: LatencyFn | None = None,
           predictor: Any = None, local_device: str | bool | None = True,
           clock: Callable[[], float] = time.monotonic, profile_clock: Callable[[], float] = time.perf_counter,
           profiler: Profiler = profile_many, progress: Callable[[dict], None] | None = None) -> SearchResult:
    """Run (or resume) the search ``config`` describes; returns the front it wrote to ``out/front.json``.

    ``splits`` replaces loading ``config.data``; ``latency_fn`` answers for every device that is not
    measured (default: the predictor, else the roofline model); ``local_device`` is the catalog
    name of this machine's CPU (``True``: detect it; ``None``: measure nothing). ``profile_clock`` and
    ``profiler`` (:func:`~crossrec.hardware.profile_many`'s signature) time the measured device: tests
    inject them.

    >>> import tempfile
    >>> cfg = SearchConfig.from_dict({"data": {"synthetic": {"rows": 600, "num_dense": 2, "num_sparse": 3,
    ...     "max_rows": 20}}, "space": {"embedding_dims": [0, 4], "interaction_dims": [4], "top_widths": [8],
    ...     "bottom_widths": [8]}, "devices": ["h100-sxm"], "n_trials": 2, "strategy": {"name": "random"},
    ...     "proxy": {"train": {"epochs": 1, "max_steps": 2, "batch_size": 256}, "threads": 1}, "baseline": None,
    ...     "latency": {"batch_size": 64}, "out": tempfile.mkdtemp()})
    >>> result = search(cfg)
    >>> result.finished_trials, result.front.sources("h100-sxm")
    (2, ['modeled'])
    """
    from optuna.trial import TrialState

    start, deadline = clock(), (clock() + config.timeout_s) if config.timeout_s else None
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    catalog = load_catalog(config.catalog)
    local = _local_cpu() if local_device is True else local_device or None
    config = resolve_local_cpu(config, local)
    unknown = [d for d in config.devices if d not in catalog]
    if unknown:
        raise ConfigError(f"devices {unknown} are not in the catalog; known: {', '.join(sorted(catalog))}, "
                          f"or {LOCAL_CPU!r} for this machine's CPU")
    splits = splits or load_data(config)
    train_data, val_data = splits.train, splits.val
    if config.proxy.train_rows:
        train_data = train_data.slice(0, config.proxy.train_rows)
    if config.proxy.val_rows:
        val_data = val_data.slice(0, config.proxy.val_rows)
    sources, fn = resolve_sources(config, catalog, local_device=local, latency_fn=latency_fn, predictor=predictor)
    lat = config.latency
    batches = {d: lat.batch_for(d) for d in config.devices}
    evaluator = Evaluator(train_data, val_data, train_config=config.proxy.train,
                          devices={d: catalog[d] for d in config.devices}, sources=sources, latency_fn=fn,
                          batch_size=batches, warmup=lat.warmup, repeats=lat.repeats, threads=lat.threads,
                          seed=config.seed, profile_clock=profile_clock, train_threads=config.proxy.threads,
                          runtime=lat.cpu_runtime, runtime_options=lat.runtime_options, timing_batches=lat.batches,
                          block=lat.block, profiler=profiler)
    with _quiet_optuna():
        run = _Run(config, splits, evaluator, _open_study(config), progress)
        dump(config, out / "config.json")
        baseline = run.baseline()
        spread = run.baseline_spread(baseline)
        strategy = make_strategy(config.strategy.name, config.space, run.schema, seed=config.seed,
                                 population_size=config.strategy.population_size,
                                 tournament_size=config.strategy.tournament_size)
        while run.budget_left() and (deadline is None or clock() < deadline):
            run.trial(strategy)
            if config.save_artifacts:
                run.prune(run.candidates())
        candidates = run.candidates()
        keep = run.prune(candidates) if config.save_artifacts else set()
        candidates = [dataclasses.replace(c, artifact=c.artifact if c.key in keep else None) for c in candidates]
        front = build_front(candidates, devices=config.devices, objectives=config.objectives, baseline=baseline,
                            auc_floor=config.auc_floor, weights=config.deployment_weights or None,
                            auc_tolerance=config.auc_tolerance, baseline_spread=spread,
                            info={"study": config.name, "storage": config.storage_url(), "data": config.data.to_dict(),
                                  "batch_size": batches, "strategy": config.strategy.name, "latency_config": sources,
                                  "cpu_runtime": lat.cpu_runtime})
        measured = [d for d in config.devices if sources[d] == "measured"]
        if config.verify.enabled and measured:
            front = verify_front(front, measured, model_for=run.model_for, evaluator=evaluator, config=config.verify)
        front_path = front.save(out / "front.json")
        finished = len(run.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL)))
    return SearchResult(front=front, front_path=front_path, history_path=run.history, study_name=config.name,
                        storage=config.storage_url(), finished_trials=finished, evaluated=run.counts["evaluated"],
                        cached=run.counts["cached"], failed=run.counts["failed"], seconds=round(clock() - start, 3))


def run_search(config_path: str | Path, *, out: str | None = None, n_trials: int | None = None,
               strategy: str | None = None, storage: str | None = None, name: str | None = None,
               timeout_s: float | None = None, seed: int | None = None, baseline_seeds: int | None = None,
               auc_tolerance: float | str | None = None, cpu_runtime: str | None = None,
               verify: bool | None = None, progress: Callable[[dict], None] | None = None) -> SearchResult:
    """``crossrec search CONFIG``: load a :class:`SearchConfig` file, apply the overrides (None: keep the
    file's value; ``cpu_runtime`` sets ``latency.cpu_runtime``, ``verify`` ``verify.enabled``), :func:`search`."""
    config = load(config_path, SearchConfig)
    overrides: dict[str, Any] = {k: v for k, v in {"out": out, "n_trials": n_trials, "storage": storage,
                                                   "name": name, "timeout_s": timeout_s, "seed": seed,
                                                   "baseline_seeds": baseline_seeds,
                                                   "auc_tolerance": auc_tolerance}.items()
                                 if v is not None}
    if strategy is not None:
        overrides["strategy"] = dataclasses.replace(config.strategy, name=strategy)
    if cpu_runtime is not None:
        overrides["latency"] = dataclasses.replace(config.latency, cpu_runtime=cpu_runtime)
    if verify is not None:
        overrides["verify"] = dataclasses.replace(config.verify, enabled=verify)
    return search(dataclasses.replace(config, **overrides) if overrides else config, progress=progress)
