"""The worker process behind a :class:`~crossrec.serve.replica.ProcessReplica`: its main loop, its protocol
and the parent's handle, :class:`WorkerClient`.

A replica's model runs in a child process so inference never contends for the GIL with the
HTTP front. Children come from a ``forkserver`` that has preloaded torch and crossrec (see
:func:`_context`; ``spawn`` where there is none), never from a ``fork`` of the server itself.
Parent and child talk over one duplex ``Pipe`` in the wire format of :mod:`crossrec.serve.pipe`
(JSON header + raw array frames, no pickle; its names are re-exported here).

**Protocol.** The child loads the artifact (``crossrec.artifact.load_artifact``: sha256-checked
safetensors, nothing unpickled), builds its stage, then sends ``{"op": "ready"}`` (or
``{"op": "failed", "error": <class name>, "message": ...}`` and exits). Then, per request
``{"op": "infer" | "embed" | "dense" | "ping", "id": n}`` it answers ``{"op": "ok", "id": n,
"compute_ms", "copy_ms"}`` with the output arrays, or ``{"op": "error", "id": n, "kind":
"data" | "internal", ...}`` (the worker stays up); ``{"op": "stop"}`` or a closed pipe ends it.

This module imports only the standard library, numpy and :mod:`crossrec.errors` at import time:
torch and the model code are imported inside :func:`main`, after the thread count is set. The wire
format (``send_message`` / ``recv_message``, re-exported here) lives in :mod:`crossrec.serve.pipe`.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import multiprocessing.connection
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from crossrec import errors
from crossrec.config import check
from crossrec.errors import DataError, ReplicaError
from crossrec.serve.pipe import (
    DTYPES,
    MAX_HEADER_BYTES,
    AsyncPipe,
    ProtocolError,
    recv_message,
    send_message,
)

__all__ = ["DTYPES", "MAX_HEADER_BYTES", "PRELOAD", "STAGE_OPS", "START_METHODS", "AsyncPipe", "Handler",
           "ProtocolError", "WorkerClient", "main", "recv_message", "runtime_options", "send_message", "startup_error",
           "table_bytes"]

# ops a worker answers with arrays, by stage
STAGE_OPS: dict[str, str] = {"full": "infer", "embedding": "embed", "dense": "dense"}

Handler = Callable[[str, dict, dict[str, np.ndarray]], tuple[dict[str, np.ndarray], float]]


def table_bytes(model: Any) -> int:
    """Bytes of a model's embedding tables (the fused lookup groups huge pages would move).

    >>> from crossrec.models import ModelSpec, TableSpec, build
    >>> spec = ModelSpec(num_dense=1, tables=(TableSpec(name="a", num_embeddings=10),), embedding_dim=4,
    ...                  bottom_mlp=(4,), top_mlp=(4,))
    >>> table_bytes(build(spec))  # 10 rows x 4 fp32
    160
    """
    from crossrec.models import FusedEmbeddingBag

    return sum(bag.weight.numel() * bag.weight.element_size() for m in model.modules()
               if isinstance(m, FusedEmbeddingBag) for bag in m.bags)


def runtime_options(model: Any, runtime: str, device: str, options: dict[str, Any],
                    hugepages: bool | str = False) -> dict[str, Any]:
    """The options to load ``model`` with: ``options``, plus ``hugepages=True`` where a replica's
    ``hugepages`` setting (:attr:`crossrec.serve.plan.ReplicaSpec.hugepages`) resolves to on for this
    runtime and model (:func:`crossrec.serve.plan.resolve_hugepages`). An explicit
    ``options["hugepages"]`` is kept as it is.

    >>> from crossrec.models import ModelSpec, TableSpec, build
    >>> spec = ModelSpec(num_dense=1, tables=(TableSpec(name="a", num_embeddings=10),), embedding_dim=4,
    ...                  bottom_mlp=(4,), top_mlp=(4,))
    >>> runtime_options(build(spec), "eager", "cpu", {}, "auto"), runtime_options(build(spec), "eager", "cpu", {}, True)
    ({}, {'hugepages': True})
    >>> runtime_options(build(spec), "onnx", "cpu", {}, "auto")
    {}
    """
    from crossrec.runtime import RUNTIMES, options_of
    from crossrec.serve.plan import resolve_hugepages

    out = dict(options)
    if "hugepages" in out or hugepages is False:
        return out
    effective = "cuda" if str(device).startswith("cuda") and runtime in ("eager", "auto") else runtime
    cls = RUNTIMES.get(effective)
    supported = cls is not None and "hugepages" in options_of(cls)
    if resolve_hugepages(hugepages, supported=supported, table_bytes=table_bytes(model)):
        out["hugepages"] = True
    return out


def _build_handler(config: dict[str, Any]) -> tuple[Handler, dict[str, Any]]:
    """Load the artifact; return (handler(op, header, arrays) -> (arrays, copy_ms), info)."""
    import torch

    from crossrec.artifact import load_artifact

    artifact = load_artifact(config["artifact"])
    stage, device = config.get("stage", "full"), config.get("device", "cpu")
    info: dict[str, Any] = {"pid": os.getpid(), "stage": stage, "torch_threads": torch.get_num_threads()}
    if stage == "full":
        from crossrec.data.batch import Batch
        from crossrec.runtime import load

        name = config.get("runtime", "eager")
        options = runtime_options(artifact.model, name, device, config.get("options", {}),
                                  config.get("hugepages", False))
        runtime = load(artifact.model, name, device, **options)
        info["hugepages"] = bool(options.get("hugepages", False))
        info["runtime"] = {k: v for k, v in runtime.info.items() if isinstance(v, (str, int, float, bool))}
        num_sparse, cards = len(artifact.spec.tables), tuple(t.num_embeddings for t in artifact.spec.tables)

        def full(op: str, header: dict, arrays: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], float]:
            batch = Batch(dense=torch.from_numpy(arrays["dense"]), ids=torch.from_numpy(arrays["ids"]),
                          offsets=torch.from_numpy(arrays["offsets"]), num_sparse=num_sparse)
            try:
                return {"probs": runtime.predict(batch).numpy().astype(np.float32, copy=False)}, 0.0
            except Exception:
                # torch reports bad ids/shapes as RuntimeError; validating (O(nnz), slow) only after a
                # failure tells bad input (DataError, the worker is fine) from a broken worker.
                batch.validate(cards, artifact.spec.num_dense)
                raise

        return full, info
    from crossrec.serve.partition import stage_handler

    return stage_handler(artifact.model, stage, device, options=config.get("options", {})), info


def set_scheduling(policy: str) -> str:
    """Put this process under ``policy`` ("batch": Linux ``SCHED_BATCH``; "normal": leave it) and say what
    it runs under. Threads started afterwards (torch's pool) inherit the policy.

    ``SCHED_BATCH`` keeps a worker's CPU share but stops it preempting the thread that woke it: the HTTP
    front, which is writing the request into the worker's pipe (and may have a second replica to feed
    and other clients to answer). No privilege is needed to enter it.

    >>> set_scheduling("normal")
    'normal'
    """
    if policy != "batch":
        return "normal"
    if not hasattr(os, "SCHED_BATCH"):
        return "normal (SCHED_BATCH is Linux-only)"
    try:
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    except OSError as exc:
        return f"normal (SCHED_BATCH refused: {exc.strerror})"
    return "batch"


def _answer(conn: Any, handler: Handler, header: dict, arrays: dict[str, np.ndarray], recv_at: float) -> None:
    """Compute one request and send the answer. ``recv_at``: when the request was read whole
    (``time.perf_counter``, system-wide on Linux, so the parent can set it against its own send time);
    the answer carries it and its own ``sent_at`` (:func:`ipc_legs`)."""
    rid = header.get("id")
    t0 = time.perf_counter()
    try:
        out, copy_ms = handler(header["op"], header, arrays)
    except (ValueError, IndexError, KeyError) as exc:  # bad input (ids out of range, wrong shapes): not our fault
        send_message(conn, {"op": "error", "id": rid, "kind": "data", "error": type(exc).__name__,
                            "message": str(exc)[:2000]})
        return
    except Exception as exc:  # the model failed: the parent treats the replica as broken
        send_message(conn, {"op": "error", "id": rid, "kind": "internal", "error": type(exc).__name__,
                            "message": str(exc)[:2000]})
        return
    done = time.perf_counter()
    compute_ms = (done - t0) * 1e3 - copy_ms
    send_message(conn, {"op": "ok", "id": rid, "compute_ms": compute_ms, "copy_ms": copy_ms, "recv_at": recv_at,
                        "sent_at": done}, out)


def ipc_legs(header: dict[str, Any], sent: float, received: float) -> tuple[float, float] | None:
    """The two legs of a worker call across the process boundary, in ms, from the parent's ``sent``
    (before writing the request) and ``received`` (answer read whole) and the worker's ``recv_at`` and
    ``sent_at`` in its answer: ``(request, answer)`` — parent's write + the worker's wake-up and read,
    then the worker's write + the parent's wake-up (its event loop may be busy elsewhere) and read.
    None when the answer has no timestamps, or a clock disagrees (a leg < 0).

    >>> ipc_legs({"recv_at": 10.0012, "sent_at": 10.0062}, sent=10.0, received=10.0070)
    (1.2, 0.8)
    >>> ipc_legs({"op": "ok"}, sent=1.0, received=2.0) is None
    True
    """
    recv_at, sent_at = header.get("recv_at"), header.get("sent_at")
    if not (isinstance(recv_at, float) and isinstance(sent_at, float)):
        return None
    legs = (round((recv_at - sent) * 1e3, 6), round((received - sent_at) * 1e3, 6))
    return legs if min(legs) >= 0 else None


def main(conn: Any, config: dict[str, Any]) -> None:
    """Child-process entry point: load, announce ``ready``, answer requests until ``stop`` or EOF.

    ``config`` holds plain values: ``artifact`` (path), ``runtime``, ``device``, ``options``,
    ``threads``, ``stage`` ("full" | "embedding" | "dense"), ``hugepages`` (True, False or "auto",
    as :attr:`~crossrec.serve.plan.ReplicaSpec.hugepages`; stage "full" only; absent = False) and
    ``scheduling`` ("batch" or "normal", as :attr:`~crossrec.serve.plan.ReplicaSpec.scheduling`;
    absent = "normal"; the ``ready`` info says what the worker runs under).
    """
    scheduling = set_scheduling(config.get("scheduling", "normal"))  # first, so torch's threads inherit it
    threads = int(config.get("threads", 1))
    # N workers x T threads should fit the cores. set_num_threads sizes torch's pool (torch is already
    # loaded in a fork-server child); the variable covers a spawned child and libraries loaded later.
    os.environ["OMP_NUM_THREADS"] = str(threads)
    try:
        import torch

        torch.set_num_threads(threads)
        handler, info = _build_handler(config)
        info["scheduling"] = scheduling
    except BaseException as exc:  # report *why* (bad artifact, bad option, missing engine) and exit
        send_message(conn, {"op": "failed", "error": type(exc).__name__, "message": str(exc)[:4000]})
        conn.close()
        return
    send_message(conn, {"op": "ready", "info": info})
    expected = STAGE_OPS[config.get("stage", "full")]
    while True:
        try:
            header, arrays = recv_message(conn)
        except (EOFError, OSError):  # the parent is gone: nothing left to serve
            return
        recv_at = time.perf_counter()
        op = header.get("op")
        if op == "stop":
            conn.close()
            # nothing to flush (no files, no logs): skip interpreter teardown, which takes seconds
            # with torch loaded on a busy machine, so a stop or a swap releases its cores at once
            os._exit(0)
        if op == "ping":
            send_message(conn, {"op": "ok", "id": header.get("id"), "compute_ms": 0.0, "copy_ms": 0.0})
        elif op == expected:
            _answer(conn, handler, header, arrays, recv_at)
        else:
            send_message(conn, {"op": "error", "id": header.get("id"), "kind": "internal", "error": "ProtocolError",
                                "message": f"this worker answers {expected!r} and 'ping', not {op!r}"})


class _Watchdog:
    """One thread per worker that kills it when a call outlives its deadline. A kill closes the child's
    end of the pipe, which wakes the parent wherever it is blocked — in ``poll``, or in a ``send`` whose
    payload fills the pipe of a stopped child. (A ``threading.Timer`` per call costs ~0.2 ms; this, µs.)

    The thread sleeps until ``_wake_at`` — the armed deadline, or one timeout (the last armed) ahead
    when none is armed — and :meth:`arm` wakes it only when the new deadline comes sooner. Calls that
    end inside their deadline (all of them, normally) then cost no thread wake-up: the thread wakes
    about once per timeout instead of once per call (issue #5). A deadline is still enforced on time:
    ``_wake_at`` is never later than an armed deadline.
    """

    def __init__(self, on_expire: Callable[[], None]):
        self._on_expire = on_expire
        self._timeout_s = 1.0  # the last armed timeout: how long an idle sleep lasts
        self._cond = threading.Condition()
        self._deadline: float | None = None
        self._wake_at = -1.0  # not asleep yet: the first arm() wakes the thread
        self._closed = False
        self.wakeups = 0  # how often the thread woke (tests check arm() does not wake it per call)
        self._thread = threading.Thread(target=self._run, name="crossrec-worker-watchdog", daemon=True)
        self._thread.start()

    def arm(self, timeout_s: float) -> None:
        with self._cond:
            self._deadline = time.monotonic() + timeout_s
            self._timeout_s = timeout_s
            if self._deadline < self._wake_at or self._wake_at < 0:
                self._cond.notify()

    def disarm(self) -> None:
        with self._cond:
            self._deadline = None

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()

    def _run(self) -> None:
        with self._cond:
            while not self._closed:
                now = time.monotonic()
                if self._deadline is not None and self._deadline <= now:
                    self._deadline = None
                    self._on_expire()
                    continue
                self._wake_at = self._deadline if self._deadline is not None else now + self._timeout_s
                self._cond.wait(self._wake_at - now)
                self.wakeups += 1


def startup_error(label: str, error: str, message: str) -> Exception:
    """A worker's start-up failure as the same crossrec error class where it is one of ours (a bad
    runtime option stays a ConfigError, a corrupted artifact an IntegrityError), else ReplicaError."""
    allowed = ("ConfigError", "ArtifactError", "IntegrityError", "BackendError", "DataError")
    cls = getattr(errors, error) if error in allowed else ReplicaError
    return cls(f"replica {label}: the worker failed to start: {error}: {message}")


START_METHODS = ("forkserver", "spawn")
# What the fork server imports once, so each worker forks with torch and the model code loaded (the
# bulk of a worker's start-up: seconds on 2 busy cores) and only reads its artifact.
PRELOAD = ["torch", "crossrec.artifact", "crossrec.runtime", "crossrec.serve.partition"]


def _context(method: str) -> Any:
    """``spawn`` or ``forkserver`` — never plain ``fork``, which would copy the server's threads, event
    loop and locks into the child. The fork server is a fresh single-threaded interpreter (started like
    ``spawn``) that has imported :data:`PRELOAD` and forks a worker per request."""
    if method == "forkserver" and "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(PRELOAD)
        return ctx
    return multiprocessing.get_context("spawn")


class WorkerClient:
    """Parent-side handle of one worker process. :meth:`call` blocks (thread-safe); :meth:`acall` is
    the same exchange on the running event loop, with no thread hand-off (one call at a time: the
    caller serializes, as :class:`~crossrec.serve.replica.ProcessReplica` does). Any failure to
    answer — death, a hang past the deadline, a broken pipe — kills the process and raises
    :class:`ReplicaError`; a new client is needed to go on.

    >>> client = WorkerClient({"artifact": "artifacts/dlrm", "stage": "full"}, label="dlrm/cpu#0")
    >>> client.alive(), client.pid  # start() forks the worker and waits for its "ready"
    (False, None)
    """

    def __init__(self, config: dict[str, Any], *, label: str, start_timeout_s: float = 300.0,
                 poll_s: float = 0.05, start_method: str = "forkserver"):
        check(start_method in START_METHODS, "WorkerClient", "start_method", start_method, f"one of {START_METHODS}")
        self.config, self.label, self.start_method = dict(config), label, start_method
        self.start_timeout_s, self.poll_s = start_timeout_s, poll_s
        self.info: dict[str, Any] = {}
        self._proc: Any = None
        self._conn: Any = None
        self._lock = threading.Lock()
        self._next_id = 0
        self._broken = False
        self._expired = False
        self._watchdog: _Watchdog | None = None
        self._apipe: AsyncPipe | None = None  # set while the socket is in non-blocking (acall) mode
        self._abusy = False

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def alive(self) -> bool:
        return self._proc is not None and not self._broken and self._proc.is_alive()

    def start(self) -> dict[str, Any]:
        """Spawn the worker and wait until it has loaded the model; returns its ``info``."""
        ctx = _context(self.start_method)
        parent, child = ctx.Pipe(duplex=True)
        proc = ctx.Process(target=main, args=(child, self.config), name=f"crossrec-worker[{self.label}]", daemon=True)
        proc.start()
        child.close()  # so the child's death reads as EOF here
        self._proc, self._conn = proc, parent
        self._watchdog = _Watchdog(self._expire)
        header, _ = self._exchange(None, {}, self.start_timeout_s, "start")
        if header.get("op") == "failed":
            self.kill()
            raise startup_error(self.label, str(header.get("error")), str(header.get("message")))
        if header.get("op") != "ready":
            self.kill()
            raise ReplicaError(f"replica {self.label}: the worker sent {header.get('op')!r} instead of 'ready'")
        self.info = header.get("info", {})
        return self.info

    def call(self, op: str, arrays: dict[str, np.ndarray], timeout_s: float,
             **fields: Any) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Send one request and wait for its answer: ``(header, arrays)``; DataError for bad input."""
        with self._lock:
            if not self.alive():
                raise ReplicaError(f"replica {self.label}: the worker is not running (dead, hung or stopped)")
            self._next_id += 1
            rid = self._next_id
            header, out = self._exchange({"op": op, "id": rid, **fields}, arrays, timeout_s, op)
            return self._checked(header, out, rid, self.kill)

    def _checked(self, header: dict[str, Any], out: dict[str, np.ndarray], rid: int, kill: Callable[[], None]
                 ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        if header.get("id") != rid:
            kill()
            raise ReplicaError(f"replica {self.label}: answer {header.get('id')} to request {rid}; worker killed")
        if header.get("op") == "error":
            msg = f"replica {self.label}: {header.get('error')}: {header.get('message')}"
            if header.get("kind") == "data":
                raise DataError(f"{msg} (the batch does not fit the model's schema)")
            raise ReplicaError(msg)
        return header, out

    async def acall(self, op: str, arrays: dict[str, np.ndarray], timeout_s: float,
                    **fields: Any) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """:meth:`call` on the running event loop: the request is written and the answer read by
        non-blocking I/O woken by the loop (``add_reader``), not by a thread. The watchdog still kills a
        worker that outlives ``timeout_s`` (its EOF ends the wait). Cancelled mid-exchange, the pipe's
        framing is lost, so the worker is killed (a later call raises ReplicaError; ``restart`` it)."""
        if not self.alive():
            raise ReplicaError(f"replica {self.label}: the worker is not running (dead, hung or stopped)")
        if self._abusy:
            raise RuntimeError(f"WorkerClient({self.label}).acall: one call at a time (serialize the callers)")
        pipe = self._apipe
        if pipe is None or pipe.loop is not asyncio.get_running_loop():
            os.set_blocking(self._conn.fileno(), False)
            pipe = self._apipe = AsyncPipe(self._conn.fileno(), asyncio.get_running_loop(),
                                            self._proc.is_alive, self.poll_s)
        self._next_id += 1
        rid = self._next_id
        self._abusy, self._expired = True, False
        self._watchdog.arm(timeout_s)
        try:
            sent = time.perf_counter()
            await pipe.send({"op": op, "id": rid, **fields}, arrays)
            header, out = await pipe.recv()
            header["ipc_ms"] = ipc_legs(header, sent, time.perf_counter())
        except (EOFError, OSError, ProtocolError) as exc:
            hung = self._expired
            self._kill_nowait()
            await asyncio.to_thread(self._proc.join, 5.0)  # reap it, as kill() does (a failure path only)
            raise self._failure(hung, op, timeout_s, exc) from None
        except BaseException:  # cancelled (or a bug) mid-exchange: the stream is out of step
            self._kill_nowait()
            raise
        finally:
            self._watchdog.disarm()
            self._abusy = False
        return self._checked(header, out, rid, self._kill_nowait)

    def _failure(self, hung: bool, what: str, timeout_s: float, exc: BaseException) -> ReplicaError:
        if hung:
            return ReplicaError(f"replica {self.label} hung: no answer to {what!r} within {timeout_s} s; "
                                "worker killed")
        return ReplicaError(f"replica {self.label}: the worker died during {what!r} (exit code "
                            f"{self._proc.exitcode}): {type(exc).__name__}")

    def _exchange(self, request: dict | None, arrays: dict[str, np.ndarray], timeout_s: float, what: str
                  ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        self._expired = False
        if self._apipe is not None:  # back from acall's non-blocking mode
            os.set_blocking(self._conn.fileno(), True)
            self._apipe = None
        self._watchdog.arm(timeout_s)
        try:
            sent = time.perf_counter()
            if request is not None:
                send_message(self._conn, request, arrays)
            while not self._conn.poll(self.poll_s):
                if not self._proc.is_alive():
                    break
            header, out = recv_message(self._conn)
            header["ipc_ms"] = ipc_legs(header, sent, time.perf_counter())
            return header, out
        except (EOFError, OSError, ProtocolError) as exc:
            hung = self._expired
            self.kill()
            raise self._failure(hung, what, timeout_s, exc) from None
        finally:
            self._watchdog.disarm()

    def _expire(self) -> None:
        self._expired = True
        if self._proc is not None and self._proc.is_alive():
            self._proc.kill()

    def kill(self) -> None:
        """SIGKILL the worker (works on a stopped or hung one), release the pipe and reap it; idempotent."""
        self._kill_nowait()
        if self._proc is not None:
            self._proc.join(5.0)

    def _kill_nowait(self) -> None:
        """:meth:`kill` without waiting for the process to be reaped (``join``), so the event loop never
        blocks; the next kill() or stop() reaps it."""
        self._broken = True
        if self._proc is not None and self._proc.is_alive():
            self._proc.kill()
        if self._conn is not None:
            self._conn.close()
        self._apipe = None
        if self._watchdog is not None:
            self._watchdog.close()

    def stop(self, timeout_s: float = 2.0) -> None:
        """Ask the worker to exit, wait ``timeout_s``, then kill it; idempotent."""
        if self._proc is not None and self.alive():
            with self._lock:
                with contextlib.suppress(OSError):
                    send_message(self._conn, {"op": "stop"})
                self._proc.join(timeout_s)
        self.kill()
