"""Partitioned execution: a model's embedding stage and dense stage on different workers and devices.

Tables are large and memory-bound, MLPs small and compute-bound, so they want different
hardware (tables in host memory, MLPs on a GPU: DeepRecSys, Gupta et al., ISCA 2020; Hercules,
Ke et al., HPCA 2022). The price is moving the pooled embeddings, ``(B, F, D)`` float32 per
batch, between the stages; :class:`PartitionedReplica` measures it per batch and
:meth:`~PartitionedReplica.transfer_stats` reports it, next to each stage's compute time.

- :func:`embedding_stage` / :func:`dense_stage` split :class:`~crossrec.models.CTRModel`'s
  ``forward`` in two (every interaction: dot, cross, fm, concat, lr; compressed models too).
  ``dense_stage(model, dense, **embedding_stage(model, ids, offsets, B))`` gives the model's logits.
- :class:`PartitionedReplica` chains an embedding stage and a dense stage, each in a worker
  process (:meth:`~PartitionedReplica.from_specs`) or in this process
  (:meth:`~PartitionedReplica.in_process`), and is a :class:`~crossrec.serve.replica.Replica`
  like any other to the router. Its ``device`` is the dense stage's (where the FLOPs are);
  ``devices`` names both. Each stage call gets ``timeout_s``.

**Transfer** per batch: ``transfer_bytes`` = bytes of the stage-to-stage payload (pooled
embeddings, plus the ``(B, 1)`` first-order sums of fm/lr); ``transfer_ms`` = the batch's wall time
outside both stages' compute: the pipes in and out of each worker (which the pooled embeddings
cross twice: worker -> router -> worker) and host<->device copies. So ``transfer_ms`` is the whole
price of the split as served here — including waits for a core when the machine is oversubscribed
(more busy processes than cores), which then dominate it: read it next to the load it was taken at.

Relies on ``CTRModel._embed`` (the projection and feature order of the pooled embeddings); the
tests check the split against ``CTRModel.forward`` for every interaction.

>>> import asyncio, torch
>>> from crossrec.data import Batch
>>> from crossrec.models import ModelSpec, TableSpec, build
>>> spec = ModelSpec(num_dense=2, tables=(TableSpec(name="a", num_embeddings=5),
...                  TableSpec(name="b", num_embeddings=7)), embedding_dim=4, bottom_mlp=(4,), top_mlp=(8,))
>>> model = build(spec, seed=0)
>>> batch = Batch.from_one_hot(torch.rand(3, 2), torch.tensor([[0, 6], [1, 2], [4, 0]]))
>>> replica = PartitionedReplica.in_process("demo/cpu+cpu#0", "demo", model, profile_sizes=())
>>> async def demo():
...     await replica.start()
...     try:
...         return await replica.infer(batch)
...     finally:
...         await replica.stop()
>>> probs = asyncio.run(demo())
>>> bool(torch.allclose(torch.from_numpy(probs), model.predict_proba(batch), atol=1e-6))
True
>>> replica.transfer_stats().transfer_bytes  # pooled (3, 2, 4) float32
96
"""

from __future__ import annotations

import asyncio
import copy
import functools
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch

from crossrec.config import Config, check
from crossrec.data.batch import Batch
from crossrec.errors import ConfigError, DataError, ReplicaError
from crossrec.hardware.profile import percentile
from crossrec.models.ctr import CTRModel
from crossrec.serve.plan import ReplicaSpec
from crossrec.serve.replica import (
    EVENT_LOOP_PIPE,
    PROFILE_SIZES,
    Replica,
    artifact_version,
    device_name,
    synthetic_batch,
)
from crossrec.serve.worker import Handler, WorkerClient

# ---- the split of CTRModel.forward ------------------------------------------------------------


def embedding_stage(model: CTRModel, ids: torch.Tensor, offsets: torch.Tensor, batch_size: int
                    ) -> dict[str, torch.Tensor]:
    """The sparse half: ``{"pooled": (B, F, D)}`` (``(B, sum dims)`` for mixed dims without projection)
    and, for fm/lr, ``{"first_order": (B, 1)}``, the summed first-order weights of the ids.

    >>> from crossrec.models import ModelSpec, TableSpec, build
    >>> m = build(ModelSpec(num_dense=1, tables=(TableSpec(name="a", num_embeddings=3),), embedding_dim=2,
    ...                     bottom_mlp=(2,), top_mlp=(4,), interaction="fm"), seed=0)
    >>> ids, offsets, dense = torch.tensor([0, 2]), torch.tensor([0, 1, 2]), torch.zeros(2, 1)
    >>> mid = embedding_stage(m, ids, offsets, 2)
    >>> {k: tuple(v.shape) for k, v in mid.items()}
    {'pooled': (2, 1, 2), 'first_order': (2, 1)}
    >>> bool(torch.equal(dense_stage(m, dense, **mid), m(dense, ids, offsets)))
    True
    """
    out = {}
    pooled = model._embed(ids, offsets, batch_size)  # None for lr (no second-order part)
    if pooled is not None:
        out["pooled"] = pooled
    first = model.table_first_order(ids, offsets, batch_size)  # (B, 1), fm/lr only
    if first is not None:
        out["first_order"] = first
    return out


def dense_stage(model: CTRModel, dense: torch.Tensor, pooled: torch.Tensor | None = None,
                first_order: torch.Tensor | None = None) -> torch.Tensor:
    """The dense half: bottom MLP, interaction, top MLP -> logits ``(B,)`` (``CTRModel.dense_forward``)."""
    return model.dense_forward(dense, pooled, first_order)


def _diagnose(spec: Any, stage: str, header: dict, arrays: dict[str, np.ndarray]) -> None:
    """After a stage failed: raise DataError if its input does not fit the model (checked only then: O(nnz))."""
    if stage == "embedding":
        batch = Batch(dense=torch.zeros(max(int(header.get("batch_size", 0)), 0), spec.num_dense),
                      ids=torch.from_numpy(arrays["ids"]), offsets=torch.from_numpy(arrays["offsets"]),
                      num_sparse=len(spec.tables))
        batch.validate(tuple(t.num_embeddings for t in spec.tables), spec.num_dense)
    elif arrays.get("dense") is None or arrays["dense"].ndim != 2 or arrays["dense"].shape[1] != spec.num_dense:
        shape = None if arrays.get("dense") is None else arrays["dense"].shape
        raise DataError(f"dense features have shape {shape}, expected (B, {spec.num_dense})")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def stage_handler(model: CTRModel, stage: str, device: str = "cpu", *, options: dict | None = None,
                  own: bool = True) -> Handler:
    """A worker handler ``(op, header, arrays) -> (arrays, copy_ms)`` running one stage on ``device``.

    ``own=True`` (a worker's private copy): drop the other stage's modules (a dense worker holds no
    tables) and move the rest to ``device``. ``own=False`` leaves ``model`` untouched (copied first
    if it must move).

    >>> from crossrec.models import ModelSpec, TableSpec, build
    >>> m = build(ModelSpec(num_dense=1, tables=(TableSpec(name="a", num_embeddings=3),), embedding_dim=2,
    ...                     bottom_mlp=(2,), top_mlp=(4,)), seed=0)
    >>> embed, dense = stage_handler(m, "embedding", own=False), stage_handler(m, "dense", own=False)
    >>> mid, _ = embed("embed", {"batch_size": 2}, {"ids": np.array([0, 2]), "offsets": np.array([0, 1, 2])})
    >>> out, _ = dense("dense", {}, {"dense": np.zeros((2, 1), np.float32), **mid})
    >>> mid["pooled"].shape, out["probs"].shape
    ((2, 1, 2), (2,))
    """
    check(stage in ("embedding", "dense"), "stage_handler", "stage", stage, "'embedding' or 'dense'")
    check(not options, "stage_handler", "options", options,
          "no runtime options: partitioned stages run the model eager on their device")
    dev = torch.device(device)
    if own:  # the other worker holds these: a dense worker keeps no tables in (GPU) memory
        for name in ("embedding", "first_order") if stage == "dense" else ("bottom", "top", "cross", "first_dense"):
            setattr(model, name, None)
    elif any(p.device != dev for p in model.parameters()):
        model = copy.deepcopy(model)
    model = model.to(dev).eval()
    spec = model.spec

    def run(op: str, header: dict, arrays: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], float]:
        t0 = time.perf_counter()
        inputs = {k: torch.from_numpy(v).to(dev) for k, v in arrays.items()}
        _sync(dev)
        copy_s = time.perf_counter() - t0
        try:
            with torch.inference_mode():
                if stage == "embedding":
                    out = embedding_stage(model, inputs["ids"], inputs["offsets"], int(header["batch_size"]))
                else:
                    logits = dense_stage(model, inputs["dense"], inputs.get("pooled"), inputs.get("first_order"))
                    out = {"probs": torch.sigmoid(logits.float())}
                _sync(dev)
        except Exception:
            _diagnose(spec, stage, header, arrays)  # DataError when the input is at fault
            raise
        t1 = time.perf_counter()
        result = {k: v.float().cpu().numpy() for k, v in out.items()}
        return result, (copy_s + time.perf_counter() - t1) * 1e3

    return run


# ---- stages: where each half runs --------------------------------------------------------------


class Stage(Protocol):
    """One half of a partitioned replica: answers ``call(op, arrays)`` with ``(header, arrays)``,
    where the header carries ``compute_ms`` and ``copy_ms``."""

    device: str

    async def start(self) -> None: ...
    async def call(self, op: str, arrays: dict[str, np.ndarray], timeout_s: float,
                   **fields: Any) -> tuple[dict[str, Any], dict[str, np.ndarray]]: ...
    async def restart(self) -> None: ...
    async def stop(self) -> None: ...
    def alive(self) -> bool: ...
    @property
    def pid(self) -> int | None: ...


class ProcessStage:
    """A stage in a worker process built from a ReplicaSpec with ``stage`` "embedding" or "dense"."""

    def __init__(self, spec: ReplicaSpec, *, label: str, start_timeout_s: float = 300.0):
        check(spec.runtime in ("eager", "auto") and not spec.options, f"ReplicaSpec({label})", "runtime",
              spec.runtime, "'eager' or 'auto' without options: partitioned stages run the model eager on their "
              "device")
        self.spec, self.label, self.device = spec, label, device_name(spec)
        self.start_timeout_s = start_timeout_s
        self._config = {"artifact": str(Path(spec.artifact).resolve()), "device": spec.device,
                        "threads": spec.threads, "stage": spec.stage, "scheduling": spec.scheduling}
        self._client: WorkerClient | None = None
        self._lock = asyncio.Lock()  # WorkerClient.acall takes one call at a time

    @property
    def pid(self) -> int | None:
        return self._client.pid if self._client is not None else None

    def alive(self) -> bool:
        return self._client is not None and self._client.alive()

    async def start(self) -> None:
        client = WorkerClient(self._config, label=self.label, start_timeout_s=self.start_timeout_s)
        await asyncio.to_thread(client.start)
        self._client = client

    async def call(self, op: str, arrays: dict[str, np.ndarray], timeout_s: float, **fields: Any):
        client = self._client
        if client is None:
            raise ReplicaError(f"stage {self.label} is not running; restart it")
        async with self._lock:
            if EVENT_LOOP_PIPE:  # no thread hand-off (see replica.py)
                return await client.acall(op, arrays, timeout_s, **fields)
            return await asyncio.to_thread(client.call, op, arrays, timeout_s, **fields)

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    async def stop(self) -> None:
        if self._client is not None:
            await asyncio.to_thread(self._client.stop)
            self._client = None


class LocalStage:
    """A stage run by :func:`stage_handler` in a one-thread executor of this process (same code as a worker)."""

    def __init__(self, model: CTRModel, stage: str, device: str = "cpu", *, label: str, catalog_device: str):
        self.model, self.stage, self.torch_device, self.label = model, stage, device, label
        self.device = catalog_device
        self._executor: ThreadPoolExecutor | None = None
        self._handler: Handler | None = None
        self._hung = False

    pid = None

    def alive(self) -> bool:
        return self._executor is not None and not self._hung

    async def start(self) -> None:
        self._handler = stage_handler(self.model, self.stage, self.torch_device, own=False)
        self._executor, self._hung = ThreadPoolExecutor(1, thread_name_prefix=f"stage {self.label}"), False

    def _run(self, op: str, arrays: dict[str, np.ndarray], fields: dict) -> tuple[dict, dict]:
        t0 = time.perf_counter()
        out, copy_ms = self._handler(op, fields, arrays)
        return {"compute_ms": (time.perf_counter() - t0) * 1e3 - copy_ms, "copy_ms": copy_ms}, out

    async def call(self, op: str, arrays: dict[str, np.ndarray], timeout_s: float, **fields: Any):
        if not self.alive():
            raise ReplicaError(f"stage {self.label} is not running (hung or stopped); restart it")
        fut = asyncio.get_running_loop().run_in_executor(self._executor, self._run, op, arrays, fields)
        try:
            return await asyncio.wait_for(fut, timeout_s)
        except TimeoutError:
            self._hung = True
            raise ReplicaError(f"stage {self.label} hung: no answer within {timeout_s} s") from None
        except (ValueError, IndexError, KeyError) as exc:
            raise DataError(f"stage {self.label} rejected the batch: {type(exc).__name__}: {exc}") from exc
        except Exception as exc:
            raise ReplicaError(f"stage {self.label} failed: {type(exc).__name__}: {exc}") from exc

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    async def stop(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None


# ---- transfer accounting -----------------------------------------------------------------------


@dataclass(frozen=True)
class BatchTransfer:
    """What one batch cost: items, stage-to-stage bytes, and ms per part (see the module docstring)."""

    items: int
    transfer_bytes: int
    embedding_ms: float
    dense_ms: float
    transfer_ms: float
    total_ms: float


@dataclass(frozen=True, kw_only=True)
class TransferStats(Config):
    """Measured transfer cost of a partitioned replica: totals since the last reset, percentiles over the
    last ``window`` batches. ``transfer_fraction`` = transfer time / total time (totals).

    >>> s = TransferStats.from_batches("cpu", "h100-sxm", [BatchTransfer(4, 512, 1.0, 2.0, 1.0, 4.0)])
    >>> s.bytes_per_item, s.transfer_fraction, s.source
    (128.0, 0.25, 'measured')
    """

    embedding_device: str
    dense_device: str
    batches: int = 0
    items: int = 0
    transfer_bytes: int = 0
    bytes_per_item: float = 0.0
    transfer_ms_p50: float = 0.0
    transfer_ms_p99: float = 0.0
    transfer_ms_mean: float = 0.0
    embedding_ms_p50: float = 0.0
    dense_ms_p50: float = 0.0
    total_ms_p50: float = 0.0
    transfer_fraction: float = 0.0
    window: int = 0
    source: Literal["measured"] = "measured"

    @staticmethod
    def from_batches(embedding_device: str, dense_device: str, batches: Sequence[BatchTransfer],
                     totals: tuple[int, int, int, float, float] | None = None) -> TransferStats:
        """From per-batch records; ``totals`` = (batches, items, bytes, transfer ms, total ms) if they
        cover more batches than ``batches`` holds."""
        if totals is None:
            totals = (len(batches), sum(b.items for b in batches), sum(b.transfer_bytes for b in batches),
                      sum(b.transfer_ms for b in batches), sum(b.total_ms for b in batches))
        n, items, nbytes, transfer_ms, total_ms = totals
        if not batches:
            return TransferStats(embedding_device=embedding_device, dense_device=dense_device)
        p50 = lambda attr: percentile([getattr(b, attr) for b in batches], 50)
        return TransferStats(
            embedding_device=embedding_device, dense_device=dense_device, batches=n, items=items,
            transfer_bytes=nbytes, bytes_per_item=nbytes / items if items else 0.0,
            transfer_ms_p50=p50("transfer_ms"), transfer_ms_p99=percentile([b.transfer_ms for b in batches], 99),
            transfer_ms_mean=transfer_ms / n, embedding_ms_p50=p50("embedding_ms"), dense_ms_p50=p50("dense_ms"),
            total_ms_p50=p50("total_ms"), transfer_fraction=transfer_ms / total_ms if total_ms > 0 else 0.0,
            window=len(batches))


# ---- the replica -------------------------------------------------------------------------------


class PartitionedReplica(Replica):
    """An embedding stage chained with a dense stage (see the module docstring).

    >>> from crossrec.models import ModelSpec, TableSpec, build
    >>> m = build(ModelSpec(num_dense=1, tables=(TableSpec(name="a", num_embeddings=3),), embedding_dim=2,
    ...                     bottom_mlp=(2,), top_mlp=(4,)))
    >>> r = PartitionedReplica.in_process("m/cpu+cpu#0", "m", m, catalog_devices=("epyc-9654", "h100-sxm"))
    >>> r.device, r.devices, r.transfer_stats().batches
    ('h100-sxm', ('epyc-9654', 'h100-sxm'), 0)
    """

    def __init__(self, name: str, model: str, embedding: Stage, dense: Stage, *, num_dense: int,
                 cardinalities: Sequence[int], version: str, start_timeout_s: float = 300.0,
                 window: int = 4096, **kwargs: Any):
        super().__init__(name, model, device=dense.device, runtime="eager", version=version, **kwargs)
        self.embedding, self.dense = embedding, dense
        self.devices = (embedding.device, dense.device)
        self.start_timeout_s = start_timeout_s
        self._shape = (num_dense, list(cardinalities))
        self._lock = asyncio.Lock()
        self._window: deque[BatchTransfer] = deque(maxlen=window)
        self._totals = [0, 0, 0, 0.0, 0.0]

    @classmethod
    def from_specs(cls, name: str, model: str, embedding: ReplicaSpec, dense: ReplicaSpec, *,
                   timeout_s: float = 5.0, start_timeout_s: float = 300.0, **kwargs: Any) -> PartitionedReplica:
        """Two worker processes, one per stage spec; both must name the same artifact."""
        from crossrec.artifact import read_manifest

        _check_pair(name, embedding, dense)
        spec = read_manifest(embedding.artifact)["model_spec"]
        kwargs.setdefault("profile_sizes", sorted({*PROFILE_SIZES, int(dense.batching.max_batch_items)}))
        return cls(name, model, ProcessStage(embedding, label=f"{name}:embedding", start_timeout_s=start_timeout_s),
                   ProcessStage(dense, label=f"{name}:dense", start_timeout_s=start_timeout_s),
                   num_dense=spec["num_dense"], cardinalities=[t["num_embeddings"] for t in spec["tables"]],
                   version=artifact_version(embedding.artifact), timeout_s=timeout_s,
                   start_timeout_s=start_timeout_s, **kwargs)

    @classmethod
    def in_process_from_specs(cls, name: str, model: str, embedding: ReplicaSpec, dense: ReplicaSpec, *,
                              timeout_s: float = 5.0, **kwargs: Any) -> PartitionedReplica:
        """Both stages in this process (``--workers 0``), the artifact loaded once here."""
        from crossrec.artifact import load_artifact

        _check_pair(name, embedding, dense)
        kwargs.setdefault("profile_sizes", sorted({*PROFILE_SIZES, int(dense.batching.max_batch_items)}))
        return cls.in_process(name, model, load_artifact(embedding.artifact).model, embedding_device=embedding.device,
                              dense_device=dense.device, catalog_devices=(device_name(embedding), device_name(dense)),
                              version=artifact_version(embedding.artifact), timeout_s=timeout_s, **kwargs)

    @classmethod
    def in_process(cls, name: str, model: str, ctr_model: CTRModel, *, embedding_device: str = "cpu",
                   dense_device: str = "cpu", catalog_devices: tuple[str, str] | None = None, version: str = "local",
                   **kwargs: Any) -> PartitionedReplica:
        """Both stages of ``ctr_model`` in this process (tests, demos); ``ctr_model`` is not modified."""
        if catalog_devices is None:
            catalog_devices = (device_name(ReplicaSpec(artifact="-", device=embedding_device)),
                               device_name(ReplicaSpec(artifact="-", device=dense_device)))
        stages = [LocalStage(ctr_model, s, d, label=f"{name}:{s}", catalog_device=c)
                  for s, d, c in zip(("embedding", "dense"), (embedding_device, dense_device), catalog_devices)]
        spec = ctr_model.spec
        return cls(name, model, *stages, num_dense=spec.num_dense,
                   cardinalities=[t.num_embeddings for t in spec.tables], version=version, **kwargs)

    @property
    def pid(self) -> int | None:
        """The dense worker's pid (the stage on the accelerator); :attr:`pids` gives both."""
        return self.dense.pid

    @property
    def pids(self) -> tuple[int | None, int | None]:
        return self.embedding.pid, self.dense.pid

    def alive(self) -> bool:
        return self.embedding.alive() and self.dense.alive()

    async def start(self) -> None:
        async with self._lock:  # so a stop() never races a start
            results = await asyncio.gather(self.embedding.start(), self.dense.start(), return_exceptions=True)
            failed = [r for r in results if isinstance(r, BaseException)]
            if failed:  # don't leave the half that started running
                await asyncio.gather(self.embedding.stop(), self.dense.stop(), return_exceptions=True)
                raise failed[0]
        if not self.latency_curve and self.profile_sizes:
            num_dense, cards = self._shape
            await self.measure_latency_curve(lambda b: synthetic_batch(num_dense, cards, b),
                                             functools.partial(self._run, timeout_s=self.start_timeout_s))
            self.reset_transfer_stats()  # report served traffic, not the warm-up

    async def _run(self, batch: Batch, timeout_s: float) -> np.ndarray:
        if not self.alive():
            raise ReplicaError(f"replica {self.name} is not running (a stage died, hung or stopped); restart it")
        b = batch.batch_size
        async with self._lock:
            t0 = self._clock()
            h1, mid = await self.embedding.call("embed", {"ids": batch.ids.numpy(), "offsets": batch.offsets.numpy()},
                                                timeout_s, batch_size=b)
            h2, out = await self.dense.call("dense", {"dense": batch.dense.numpy(), **mid}, timeout_s)
            total_ms = (self._clock() - t0) * 1e3
        e_ms, d_ms = float(h1["compute_ms"]), float(h2["compute_ms"])
        self._record(BatchTransfer(b, sum(int(a.nbytes) for a in mid.values()), e_ms, d_ms,
                                   max(total_ms - e_ms - d_ms, 0.0), total_ms))
        return out["probs"]

    async def infer(self, batch: Batch) -> np.ndarray:
        if batch.batch_size == 0:
            return np.zeros(0, dtype=np.float32)
        return await self._run(batch, self.timeout_s)

    def _record(self, t: BatchTransfer) -> None:
        self._window.append(t)
        for i, v in enumerate((1, t.items, t.transfer_bytes, t.transfer_ms, t.total_ms)):
            self._totals[i] += v

    def transfer_stats(self) -> TransferStats:
        """Measured transfer cost of the batches served since start (or the last reset)."""
        return TransferStats.from_batches(*self.devices, list(self._window), tuple(self._totals))

    def reset_transfer_stats(self) -> None:
        self._window.clear()
        self._totals = [0, 0, 0, 0.0, 0.0]

    async def restart(self) -> None:
        """Restart the stage(s) that died; both when neither did (a failed call leaves no clue which)."""
        async with self._lock:
            dead = [s for s in (self.embedding, self.dense) if not s.alive()] or [self.embedding, self.dense]
            await asyncio.gather(*(s.restart() for s in dead))

    async def stop(self) -> None:
        async with self._lock:
            await asyncio.gather(self.embedding.stop(), self.dense.stop())

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "devices": list(self.devices), "pids": list(self.pids),
                "transfer": self.transfer_stats().to_dict()}


def _check_pair(name: str, embedding: ReplicaSpec, dense: ReplicaSpec) -> None:
    if (embedding.stage, dense.stage) != ("embedding", "dense"):
        raise ConfigError(f"partitioned replica {name}: expected an 'embedding' and a 'dense' stage spec, got "
                          f"{embedding.stage!r} and {dense.stage!r}")
    if Path(embedding.artifact).resolve() != Path(dense.artifact).resolve():
        raise ConfigError(f"partitioned replica {name}: both stages must serve one artifact; embedding stage has "
                          f"{embedding.artifact!r}, dense stage {dense.artifact!r}")
