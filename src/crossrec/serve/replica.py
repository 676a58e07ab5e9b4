"""Replicas: one copy of a model that answers batches — in this process, or in a worker process.

The :class:`Router` (DESIGN.md §3) owns queues, batching, retries and metrics; a :class:`Replica`
only computes. Its contract: ``start()`` (and measure ``latency_curve``, batch size -> p50 ms of a
whole call as the router sees it, for SLO batching and latency-aware routing), ``infer(batch)`` ->
probabilities ``(B,)`` float32, raising :class:`ReplicaError` when the worker died, hung past
``timeout_s`` or failed (the router then retries elsewhere and calls ``restart()``), ``stop()``,
``alive()`` and ``pid``. Bad input (ids out of range, wrong shapes) raises :class:`DataError`
instead: the replica is fine, the request is not.

- :class:`InProcessReplica` runs a runtime in a one-thread executor of this process (tests,
  ``--workers 0``). A hung call cannot be killed, so the replica counts as dead until ``restart()``.
- :class:`ProcessReplica` runs a worker process (:mod:`crossrec.serve.worker`) that loads the
  artifact without unpickling and answers over a pipe; a dead worker is noticed at once
  (EOF / ``is_alive``), a hung one after ``timeout_s``, and either is killed. As with any
  ``multiprocessing`` program, a script that starts worker replicas needs the
  ``if __name__ == "__main__":`` guard (the CLI has it).
- :func:`build_replicas` turns a :class:`~crossrec.serve.plan.ServePlan` into replicas; embedding
  and dense stages become :class:`~crossrec.serve.partition.PartitionedReplica` pairs.

Deviation from the serve contract: workers start from a ``forkserver`` (a fresh single-threaded
interpreter that has imported torch and crossrec once and forks a worker per request), not a bare
``spawn``: a restart takes ~0.1 s instead of ~4-9 s of imports on 2 busy cores, which is what
recovering "within 5 s" after a crash needs. Plain ``fork`` of the server is still never used;
``WorkerClient(start_method="spawn")`` is there where ``forkserver`` is not (non-Unix).
Additions (no deviation): ``build_replicas(plan, *, workers=True)`` (``workers=False`` builds
in-process replicas: ``crossrec serve --workers 0``); ``Replica.batching`` (the plan's
BatchingConfig, or None), ``Replica.last_model_ms`` (a worker's own timing of the last batch),
``Replica.runtime_info`` (the loaded runtime's ``info``: e.g.
``hugepages_bytes``, the table bytes moved into huge pages by the plan's ``hugepages`` setting,
resolved where the model is loaded — the worker, or the in-process factory), ``Replica.describe()``,
``Replica.measure_latency_curve()``.

>>> import asyncio, torch
>>> from crossrec.data import Batch
>>> from crossrec.models import ModelSpec, TableSpec, build
>>> spec = ModelSpec(num_dense=2, tables=(TableSpec(name="a", num_embeddings=5),), embedding_dim=4,
...                  bottom_mlp=(4,), top_mlp=(8,))
>>> replica = InProcessReplica("demo/cpu#0", "demo", build(spec, seed=0), profile_sizes=(1, 8))
>>> async def demo():
...     await replica.start()
...     try:
...         return await replica.infer(Batch.from_one_hot(torch.zeros(3, 2), torch.tensor([[0], [1], [4]])))
...     finally:
...         await replica.stop()
>>> probs = asyncio.run(demo())
>>> probs.shape, probs.dtype, sorted(replica.latency_curve)
((3,), dtype('float32'), [1, 8])
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import os
import statistics
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from crossrec.artifact import MANIFEST, read_manifest
from crossrec.config import check
from crossrec.data.batch import Batch
from crossrec.errors import DataError, ReplicaError
from crossrec.serve.plan import BatchingConfig, ReplicaSpec, ServePlan, resolve_catalog_device
from crossrec.serve.worker import WorkerClient

PROFILE_SIZES: tuple[int, ...] = (1, 64, 256, 1024)
# WorkerClient.acall needs non-blocking sockets and readv (POSIX); elsewhere calls hop to a thread
EVENT_LOOP_PIPE = os.name == "posix" and hasattr(os, "readv")


def device_name(spec: ReplicaSpec) -> str:
    """The device a replica reports: its catalog entry (``spec.catalog_device``, else the detected one,
    e.g. ``"epyc-zen5-2vcpu"``), or the torch device string when the catalog has no match.

    >>> device_name(ReplicaSpec(artifact="a", catalog_device="epyc-9654"))
    'epyc-9654'
    """
    return resolve_catalog_device(spec) or spec.device


@functools.lru_cache(maxsize=1)
def _local_cpu() -> str:
    return device_name(ReplicaSpec(artifact="-"))


def artifact_version(path: str | Path) -> str:
    """The first 12 hex digits of the sha256 of an artifact's ``manifest.json``. The manifest holds
    every file's sha256, so the digest names the whole artifact: a new variant gets a new version.

    >>> artifact_version("/nonexistent")
    Traceback (most recent call last):
    ...
    crossrec.errors.ArtifactError: /nonexistent is not an artifact directory (train one with `crossrec train`)
    """
    read_manifest(path)  # ArtifactError naming the problem if this is not an artifact
    return hashlib.sha256((Path(path) / MANIFEST).read_bytes()).hexdigest()[:12]


def synthetic_batch(num_dense: int, cardinalities: Sequence[int], batch_size: int, *, seed: int = 0) -> Batch:
    """A one-hot batch with uniformly random rows (what a warm-up profile runs: every lookup a fresh row).

    >>> synthetic_batch(2, (5, 7), 3).offsets.tolist()
    [0, 1, 2, 3, 4, 5, 6]
    """
    g = torch.Generator().manual_seed(seed)
    dense = torch.rand(batch_size, num_dense, generator=g)
    rows = torch.tensor(list(cardinalities), dtype=torch.float64)
    ids = (torch.rand(batch_size, len(rows), generator=g, dtype=torch.float64) * rows).long()  # (B, F)
    return Batch.from_one_hot(dense, ids)


class Replica(ABC):
    """One copy of a deployment's model; see the module docstring for the contract.

    Subclasses call ``super().__init__`` and implement ``start``, ``infer``, ``restart``, ``stop``
    and ``alive``. :meth:`measure_latency_curve` fills ``latency_curve`` from timed calls.

    >>> import asyncio, numpy as np
    >>> class Constant(Replica):  # e.g. a fake for router tests
    ...     async def start(self): self.up = True
    ...     async def infer(self, batch): return np.full(batch.batch_size, 0.5, dtype=np.float32)
    ...     async def restart(self): self.up = True
    ...     async def stop(self): self.up = False
    ...     def alive(self): return getattr(self, "up", False)
    >>> r = Constant("m/cpu#0", "m", device="epyc-zen5-2vcpu", runtime="constant", version="v1",
    ...              profile_sizes=(1, 4))
    >>> sorted(asyncio.run(r.measure_latency_curve(lambda b: synthetic_batch(1, (3,), b))))
    [1, 4]
    """

    def __init__(self, name: str, model: str, *, device: str, runtime: str, version: str,
                 timeout_s: float = 5.0, profile_sizes: Sequence[int] = PROFILE_SIZES, profile_repeats: int = 3,
                 clock: Callable[[], float] = time.perf_counter):
        own = f"Replica({name})"
        check(bool(name), own, "name", name, "a non-empty, unique name such as 'dlrm/cpu#0'")
        check(timeout_s > 0, own, "timeout_s", timeout_s, "> 0 seconds")
        check(all(int(s) >= 1 for s in profile_sizes), own, "profile_sizes", profile_sizes, "batch sizes >= 1")
        check(profile_repeats >= 1, own, "profile_repeats", profile_repeats, ">= 1")
        self.name, self.model, self.device, self.runtime, self.version = name, model, device, runtime, version
        self.timeout_s = float(timeout_s)
        self.profile_sizes = tuple(sorted({int(s) for s in profile_sizes}))
        self.profile_repeats = profile_repeats
        self.latency_curve: dict[int, float] = {}
        # the plan's batching for this replica (None: the router's default); build_replicas sets it
        self.batching: BatchingConfig | None = None
        # what the loaded runtime reports (its ``info``: options, ``hugepages_bytes``, ...), once started
        self.runtime_info: dict[str, Any] = {}
        # the model's own time (ms) for the last batch as a worker process measured it (no pipe, no wake-ups);
        # None for replicas that compute in this process. The router publishes it as /metrics' model_seconds.
        self.last_model_ms: float | None = None
        # the last batch's two legs across the process boundary, (request, answer) in ms
        # (:func:`~crossrec.serve.worker.ipc_legs`); None in-process. Published as /metrics' ipc_seconds.
        self.last_ipc_ms: tuple[float, float] | None = None
        self._clock = clock

    @abstractmethod
    async def start(self) -> None:
        """Load the model, then measure ``latency_curve`` if it is empty."""

    @abstractmethod
    async def infer(self, batch: Batch) -> np.ndarray:
        """Probabilities ``(B,)`` float32; ReplicaError if the replica died, hung or failed."""

    @abstractmethod
    async def restart(self) -> None:
        """Replace a dead or hung replica with a fresh one (keeps the measured latency curve)."""

    @abstractmethod
    async def stop(self) -> None:
        """Release the replica; idempotent."""

    @abstractmethod
    def alive(self) -> bool:
        """True while the replica can answer."""

    @property
    def pid(self) -> int | None:
        """Process id of the worker computing the batches, or None when it runs in this process."""
        return None

    def describe(self) -> dict[str, Any]:
        """JSON-ready summary (for ``GET /v1/models`` and logs)."""
        return {"name": self.name, "model": self.model, "device": self.device, "runtime": self.runtime,
                "version": self.version, "alive": self.alive(), "pid": self.pid,
                "runtime_info": dict(self.runtime_info),
                "latency_curve_ms": {str(k): round(v, 4) for k, v in sorted(self.latency_curve.items())}}

    async def measure_latency_curve(self, make_batch: Callable[[int], Batch],
                                    call: Callable[[Batch], Awaitable[np.ndarray]] | None = None) -> dict[int, float]:
        """Time ``call`` (default :meth:`infer`) on ``make_batch(size)`` for every profile size: one untimed
        warm-up call (first-call allocation, compilation), then ``profile_repeats`` timed ones; stores and
        returns the p50 ms per size. Sizes run one after another, so the curve is measured without load."""
        call = call or self.infer
        curve = {}
        for size in self.profile_sizes:
            batch = make_batch(size)
            await call(batch)
            times = []
            for _ in range(self.profile_repeats):
                t0 = self._clock()
                await call(batch)
                times.append((self._clock() - t0) * 1e3)
            curve[size] = statistics.median(times)
        self.latency_curve = curve
        return curve

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, device={self.device!r}, version={self.version!r})"


def _as_runtime(obj: Any) -> Any:
    from crossrec.runtime import load

    return load(obj, "eager") if isinstance(obj, torch.nn.Module) else obj


class InProcessReplica(Replica):
    """A runtime (anything with ``predict(batch)``: a :class:`~crossrec.runtime.Runtime`), a CTRModel (run
    eager) or a zero-argument factory returning either, run in a one-thread executor of this process.

    A factory is called at ``start()`` and again at ``restart()``, so a restart gets a fresh runtime.
    The latency curve is measured when the runtime has a ``spec`` (a crossrec model or runtime).

    >>> from crossrec.models import ModelSpec, TableSpec, build
    >>> from crossrec.runtime import load
    >>> spec = ModelSpec(num_dense=1, tables=(TableSpec(name="a", num_embeddings=3),), embedding_dim=2,
    ...                  bottom_mlp=(2,), top_mlp=(4,))
    >>> r = InProcessReplica("m/cpu#0", "m", lambda: load(build(spec), "eager"), device="epyc-zen5-2vcpu")
    >>> r.runtime, r.alive(), r.pid  # alive once started
    ('eager', False, None)
    """

    def __init__(self, name: str, model: str, runtime_or_factory: Any, *, device: str | None = None,
                 runtime: str | None = None, version: str = "local", **kwargs: Any):
        self._source = runtime_or_factory
        is_factory = callable(runtime_or_factory) and not hasattr(runtime_or_factory, "predict") \
            and not isinstance(runtime_or_factory, torch.nn.Module)
        self._factory = runtime_or_factory if is_factory else None
        self._runtime = None if is_factory else _as_runtime(runtime_or_factory)
        name_of = getattr(self._runtime, "name", None) if self._runtime is not None else None
        super().__init__(name, model, device=device or _local_cpu(),
                         runtime=runtime or (name_of if isinstance(name_of, str) else "eager"), version=version,
                         **kwargs)
        self._executor: ThreadPoolExecutor | None = None
        self._hung = False

    async def start(self) -> None:
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"replica {self.name}")
        self._hung = False
        if self._factory is not None:
            loop = asyncio.get_running_loop()
            try:
                self._runtime = _as_runtime(await loop.run_in_executor(self._executor, self._factory))
            except BaseException:
                await self.stop()
                raise
        info = getattr(self._runtime, "info", None)
        self.runtime_info = {k: v for k, v in info.items() if isinstance(v, (str, int, float, bool))} \
            if isinstance(info, dict) else {}
        spec = getattr(self._runtime, "spec", None)
        if not self.latency_curve and spec is not None and self.profile_sizes:
            cards = [t.num_embeddings for t in spec.tables]
            await self.measure_latency_curve(lambda b: synthetic_batch(spec.num_dense, cards, b))

    async def infer(self, batch: Batch) -> np.ndarray:
        if not self.alive():
            raise ReplicaError(f"replica {self.name} is not running (hung or stopped); restart it")
        loop = asyncio.get_running_loop()
        fut = loop.run_in_executor(self._executor, self._runtime.predict, batch)
        try:
            probs = await asyncio.wait_for(fut, self.timeout_s)
        except TimeoutError:
            self._hung = True  # a thread cannot be killed: the replica is dead until restart() replaces it
            raise ReplicaError(f"replica {self.name} hung: no answer within timeout_s={self.timeout_s}") from None
        except (ValueError, IndexError) as exc:  # DataError, ConfigError (wrong feature count) and the like
            if isinstance(exc, DataError):
                raise
            raise DataError(f"replica {self.name} rejected the batch: {type(exc).__name__}: {exc}") from exc
        except Exception as exc:
            self._diagnose(batch)
            raise ReplicaError(f"replica {self.name} failed: {type(exc).__name__}: {exc}") from exc
        return np.asarray(probs, dtype=np.float32).reshape(-1)

    def _diagnose(self, batch: Batch) -> None:
        # torch reports bad ids and shapes as RuntimeError; validating (O(nnz), slow) only after a
        # failure tells bad input (DataError: the replica is fine) from a broken replica.
        spec = getattr(self._runtime, "spec", None)
        if spec is not None:
            batch.validate(tuple(t.num_embeddings for t in spec.tables), spec.num_dense)

    async def restart(self) -> None:
        await self.stop()
        if self._factory is not None:
            self._runtime = None
        await self.start()

    async def stop(self) -> None:
        if self._executor is not None:
            # don't wait: a hung call would block the event loop; its thread ends when the call returns
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
            if self._factory is not None and hasattr(self._runtime, "close"):
                self._runtime.close()

    def alive(self) -> bool:
        return self._executor is not None and self._runtime is not None and not self._hung


class ProcessReplica(Replica):
    """A :class:`~crossrec.serve.plan.ReplicaSpec` (stage ``"full"``) served by a worker process.

    The manifest is read here (``version``, the shapes for the warm-up profile), so a wrong artifact
    path fails at construction; the worker loads the weights. The warm-up profile runs under
    ``start_timeout_s`` (a compiled runtime compiles on its first call at each size), requests under
    ``timeout_s``.

    >>> import tempfile
    >>> from crossrec.artifact import save_artifact
    >>> from crossrec.data.synthetic import SyntheticConfig
    >>> from crossrec.models import ModelSpec, build
    >>> schema = SyntheticConfig(num_sparse=2, max_rows=5).schema()
    >>> path = save_artifact(tempfile.mkdtemp() + "/a", build(ModelSpec.for_schema(schema)), schema)
    >>> r = ProcessReplica("dlrm/cpu#0", "dlrm", ReplicaSpec(artifact=str(path), catalog_device="epyc-9654"))
    >>> r.device, r.version == artifact_version(path), r.alive()  # `await r.start()` forks the worker
    ('epyc-9654', True, False)
    """

    def __init__(self, name: str, model: str, spec: ReplicaSpec, *, timeout_s: float = 5.0,
                 start_timeout_s: float = 300.0, profile_sizes: Sequence[int] | None = None, **kwargs: Any):
        check(spec.stage == "full", f"ProcessReplica({name})", "spec.stage", spec.stage,
              "'full' (embedding/dense stages run as a PartitionedReplica: use build_replicas)")
        manifest = read_manifest(spec.artifact)
        self._shape = (manifest["model_spec"]["num_dense"],
                       [t["num_embeddings"] for t in manifest["model_spec"]["tables"]])
        if profile_sizes is None:  # cover the batcher's largest batch too, so SLO mode need not extrapolate
            profile_sizes = sorted({*PROFILE_SIZES, int(spec.batching.max_batch_items)})
        super().__init__(name, model, device=device_name(spec),
                         runtime=spec.runtime, version=artifact_version(spec.artifact), timeout_s=timeout_s,
                         profile_sizes=profile_sizes, **kwargs)
        self.spec = spec
        self.start_timeout_s = start_timeout_s
        self._config = {"artifact": str(Path(spec.artifact).resolve()), "runtime": spec.runtime,
                        "device": spec.device, "options": dict(spec.options), "threads": spec.threads,
                        "stage": "full", "hugepages": spec.hugepages, "scheduling": spec.scheduling}
        self._client: WorkerClient | None = None
        self._lock = asyncio.Lock()

    @property
    def pid(self) -> int | None:
        return self._client.pid if self._client is not None else None

    def alive(self) -> bool:
        return self._client is not None and self._client.alive()

    async def _spawn(self) -> None:  # under self._lock, so a stop() never races a (re)start
        client = WorkerClient(self._config, label=self.name, start_timeout_s=self.start_timeout_s)
        info = await asyncio.to_thread(client.start)
        self._client = client
        self.runtime_info = {**info.get("runtime", {}), "hugepages": bool(info.get("hugepages", False)),
                             "scheduling": info.get("scheduling", "normal")}

    async def start(self) -> None:
        async with self._lock:
            await self._spawn()
        await self._profile()

    async def _profile(self) -> None:
        if not self.latency_curve and self.profile_sizes:
            num_dense, cards = self._shape
            await self.measure_latency_curve(lambda b: synthetic_batch(num_dense, cards, b),
                                             functools.partial(self._call, timeout_s=self.start_timeout_s))

    async def _call(self, batch: Batch, timeout_s: float) -> np.ndarray:
        client = self._client
        if client is None or not client.alive():
            raise ReplicaError(f"replica {self.name} is not running (dead, hung or stopped); restart it")
        arrays = {"dense": batch.dense.numpy(), "ids": batch.ids.numpy(), "offsets": batch.offsets.numpy()}
        async with self._lock:  # one batch at a time per worker; the router sends one anyway
            if EVENT_LOOP_PIPE:  # no thread hand-off: ~12% of the front's busy time went to it (issue #5)
                header, out = await client.acall("infer", arrays, timeout_s)
            else:
                header, out = await asyncio.to_thread(client.call, "infer", arrays, timeout_s)
            model_ms = header.get("compute_ms")
            self.last_model_ms = float(model_ms) if isinstance(model_ms, (int, float)) else None
            self.last_ipc_ms = header.get("ipc_ms")
        return out["probs"]

    async def infer(self, batch: Batch) -> np.ndarray:
        if batch.batch_size == 0:
            return np.zeros(0, dtype=np.float32)
        return await self._call(batch, self.timeout_s)

    async def restart(self) -> None:
        async with self._lock:
            if self._client is not None:
                await asyncio.to_thread(self._client.kill)
                self._client = None
            await self._spawn()
        await self._profile()  # only if the first start never got that far

    async def stop(self) -> None:
        async with self._lock:
            if self._client is not None:
                await asyncio.to_thread(self._client.stop)
                self._client = None


def _expand(specs: Sequence[ReplicaSpec]) -> list[ReplicaSpec]:
    return [s for s in specs for _ in range(s.count)]


def build_replicas(plan: ServePlan, *, workers: bool = True) -> dict[str, list[Replica]]:
    """The replicas of every deployment of ``plan`` (not started), by deployment name.

    Each ``stage="full"`` spec gives ``count`` replicas named ``"<deployment>/<device>#<k>"``; the
    k-th ``stage="embedding"`` worker is chained with the k-th ``stage="dense"`` worker into one
    :class:`~crossrec.serve.partition.PartitionedReplica`, so a deployment needs as many of each.
    ``workers=False`` runs everything in this process (:class:`InProcessReplica`; per-replica
    ``threads`` do not apply there: torch's thread pool is per process).

    >>> import tempfile
    >>> from crossrec.artifact import save_artifact
    >>> from crossrec.data.synthetic import SyntheticConfig
    >>> from crossrec.models import ModelSpec, build
    >>> from crossrec.serve.plan import DeploymentSpec
    >>> schema = SyntheticConfig(num_sparse=2, max_rows=5).schema()
    >>> a = str(save_artifact(tempfile.mkdtemp() + "/a", build(ModelSpec.for_schema(schema)), schema))
    >>> plan = ServePlan(deployments=(DeploymentSpec(name="dlrm", replicas=(
    ...     ReplicaSpec(artifact=a, catalog_device="epyc-9654", count=2),
    ...     ReplicaSpec(artifact=a, catalog_device="epyc-9654", stage="embedding"),
    ...     ReplicaSpec(artifact=a, catalog_device="h100-sxm", stage="dense"))),))
    >>> for r in build_replicas(plan)["dlrm"]:  # built, not started
    ...     print(r.name, type(r).__name__, r.device)
    dlrm/cpu#0 ProcessReplica epyc-9654
    dlrm/cpu#1 ProcessReplica epyc-9654
    dlrm/cpu+cpu#0 PartitionedReplica h100-sxm
    """
    from crossrec.serve.partition import PartitionedReplica

    out: dict[str, list[Replica]] = {}
    for dep in plan.deployments:
        replicas: list[Replica] = []
        seen: dict[str, int] = {}
        timeout = plan.replica_timeout_s
        for spec in _expand([s for s in dep.replicas if s.stage == "full"]):
            name = _next_name(dep.name, spec.device, seen)
            replicas.append(ProcessReplica(name, dep.name, spec, timeout_s=timeout) if workers
                            else _in_process(name, dep.name, spec, timeout))
            replicas[-1].batching = spec.batching
        emb = _expand([s for s in dep.replicas if s.stage == "embedding"])
        dense = _expand([s for s in dep.replicas if s.stage == "dense"])
        check(len(emb) == len(dense), f"DeploymentSpec({dep.name})", "replicas",
              f"{len(emb)} embedding / {len(dense)} dense workers",
              "as many stage='embedding' as stage='dense' workers (the k-th of each form one partitioned replica)")
        build = PartitionedReplica.from_specs if workers else PartitionedReplica.in_process_from_specs
        for e, d in zip(emb, dense):
            replicas.append(build(_next_name(dep.name, f"{e.device}+{d.device}", seen), dep.name, e, d,
                                  timeout_s=timeout))
            replicas[-1].batching = d.batching  # the dense stage's: where batch size costs the most
        out[dep.name] = replicas
    return out


def _next_name(deployment: str, label: str, seen: dict[str, int]) -> str:
    seen[label] = seen.get(label, 0) + 1
    return f"{deployment}/{label}#{seen[label] - 1}"


def _in_process(name: str, model: str, spec: ReplicaSpec, timeout_s: float) -> InProcessReplica:
    def factory() -> Any:
        from crossrec.artifact import load_artifact
        from crossrec.runtime import load
        from crossrec.serve.worker import runtime_options

        model = load_artifact(spec.artifact).model
        return load(model, spec.runtime, spec.device,
                    **runtime_options(model, spec.runtime, spec.device, spec.options, spec.hugepages))

    return InProcessReplica(name, model, factory, device=device_name(spec),
                            runtime=spec.runtime, version=artifact_version(spec.artifact), timeout_s=timeout_s,
                            profile_sizes=sorted({*PROFILE_SIZES, int(spec.batching.max_batch_items)}))
