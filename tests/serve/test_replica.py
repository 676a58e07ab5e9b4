"""Replicas: the worker wire format, in-process and worker-process replicas (crash, hang, restart), build_replicas.

Worker processes are real (spawned, loading a real artifact); a crash is a SIGKILL and a hang a SIGSTOP
of the worker, so detection, kill and restart are exercised as they happen in production.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import threading
import time
from multiprocessing import Pipe

import numpy as np
import pytest
import torch

from crossrec.artifact import save_artifact
from crossrec.errors import ArtifactError, ConfigError, DataError, ReplicaError
from crossrec.serve.partition import PartitionedReplica
from crossrec.serve.plan import BatchingConfig, DeploymentSpec, ReplicaSpec, ServePlan
from crossrec.serve.replica import (
    InProcessReplica,
    ProcessReplica,
    Replica,
    artifact_version,
    build_replicas,
    synthetic_batch,
)
from crossrec.serve.worker import ProtocolError, WorkerClient, _Watchdog, recv_message, send_message

CPU = "epyc-zen5-2vcpu"  # a catalog device, so names and devices do not depend on the test machine


@pytest.fixture(scope="module")
def artifact(tiny_dlrm, tmp_path_factory):
    model, data = tiny_dlrm
    return save_artifact(tmp_path_factory.mktemp("serve") / "dlrm", model, data.schema)


@pytest.fixture(scope="module")
def batch(tiny_dlrm):
    return next(iter(tiny_dlrm[1].batches(50)))


def _expected(tiny_dlrm, batch) -> np.ndarray:
    return tiny_dlrm[0].predict_proba(batch).numpy()


# ---- wire format -------------------------------------------------------------------------------


def test_wire_format_round_trips_arrays_of_every_shape():
    a, b = Pipe()
    arrays = {"dense": np.random.rand(4, 3).astype(np.float32), "ids": np.arange(7, dtype=np.int64),
              "empty": np.zeros((0, 5), dtype=np.float32), "no_dense": np.zeros((4, 0), dtype=np.float32)}
    sent = send_message(a, {"op": "infer", "id": 7, "batch_size": 4}, arrays)
    header, got = recv_message(b)
    assert header == {"op": "infer", "id": 7, "batch_size": 4}
    assert sent > sum(x.nbytes for x in arrays.values())
    for k, v in arrays.items():
        assert got[k].dtype == v.dtype and got[k].shape == v.shape and np.array_equal(got[k], v)
        assert got[k].flags.writeable  # torch.from_numpy needs no copy and gives no warning
    # a non-contiguous view goes out contiguous
    send_message(a, {"op": "x"}, {"t": np.arange(12, dtype=np.float32).reshape(3, 4).T})
    assert np.array_equal(recv_message(b)[1]["t"], np.arange(12, dtype=np.float32).reshape(3, 4).T)


def test_wire_format_refuses_unlisted_dtypes_and_garbage():
    a, b = Pipe()
    with pytest.raises(ProtocolError, match="dtype"):
        send_message(a, {"op": "x"}, {"o": np.array([object()], dtype=object)})
    a.send_bytes(b"not json")
    with pytest.raises(ProtocolError, match="malformed"):
        recv_message(b)
    a.send_bytes(b'{"op": "x", "arrays": [["p", "|O", [1]]]}')
    with pytest.raises(ProtocolError, match="dtype"):
        recv_message(b)


def test_arange_arrays_cross_the_pipe_as_no_bytes():
    """One-id-per-bag offsets (= arange) are listed, not sent, and rebuilt exactly (dtype, values)."""
    a, b = Pipe()
    arrays = {"offsets": np.arange(9, dtype=np.int64), "small": np.arange(4, dtype=np.int32),
              "ids": np.array([0, 1, 2, 4], dtype=np.int64), "f": np.arange(3, dtype=np.float32),
              "one": np.array([0], dtype=np.int64), "empty": np.zeros(0, dtype=np.int64)}
    send_message(a, {"op": "x"}, arrays)
    layout = json.loads(b.recv_bytes())["arrays"]  # the raw header frame
    assert [x[0] for x in layout if x[3:] == ["arange"]] == ["offsets", "small", "one"]
    frames = [b.recv_bytes() for _ in range(2)]  # then only the ids and the float frames follow
    assert frames == [arrays["ids"].tobytes(), arrays["f"].tobytes()] and not b.poll(0.05)
    send_message(a, {"op": "x"}, arrays)
    _, got = recv_message(b)
    for k, v in arrays.items():
        assert got[k].dtype == v.dtype and got[k].tolist() == v.tolist() and got[k].flags.writeable
    a.send_bytes(b'{"op": "x", "arrays": [["o", "<i8", [3], "zstd"]]}')
    with pytest.raises(ProtocolError, match="encoding"):
        recv_message(b)
    a.send_bytes(b'{"op": "x", "arrays": [["o", "<f4", [3], "arange"]]}')
    with pytest.raises(ProtocolError, match="encoding"):
        recv_message(b)


def test_a_message_larger_than_the_socket_buffer_arrives_whole():
    """One writev per message, resumed after partial writes while the reader drains the socket."""
    a, b = Pipe()
    big = np.random.default_rng(0).random(3_000_000).astype(np.float32)  # 12 MB >> the socket buffer
    got = {}
    reader = threading.Thread(target=lambda: got.update(msg=recv_message(b)))
    reader.start()
    send_message(a, {"op": "x", "id": 1}, {"big": big, "tail": np.arange(5, dtype=np.float64)})
    reader.join(30)
    header, arrays = got["msg"]
    assert header == {"op": "x", "id": 1} and np.array_equal(arrays["big"], big)
    assert arrays["tail"].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_the_watchdog_sleeps_through_calls_that_end_in_time_and_fires_on_time():
    fired = threading.Event()
    dog = _Watchdog(fired.set)
    try:
        for _ in range(300):  # calls well inside a 5 s deadline
            dog.arm(5.0)
            dog.disarm()
        assert dog.wakeups <= 2 and not fired.is_set()  # (it wakes per call without the lazy arm)
        t0 = time.monotonic()
        dog.arm(0.05)  # a sooner deadline wakes it, and it fires
        assert fired.wait(5.0) and time.monotonic() - t0 >= 0.05
    finally:
        dog.close()


# ---- in-process replica ------------------------------------------------------------------------


def test_in_process_replica_matches_the_model_and_profiles_with_the_injected_clock(tiny_dlrm, batch):
    model, _ = tiny_dlrm
    ticks = itertools.count()
    replica = InProcessReplica("m/cpu#0", "m", model, device=CPU, profile_sizes=(1, 8), profile_repeats=3,
                               clock=lambda: float(next(ticks)))

    async def go():
        await replica.start()
        try:
            probs = await replica.infer(batch)
            info = replica.describe()
        finally:
            await replica.stop()
        return probs, info

    probs, info = asyncio.run(go())
    assert probs.dtype == np.float32 and probs.shape == (50,)
    np.testing.assert_allclose(probs, _expected(tiny_dlrm, batch), atol=1e-6)
    assert replica.latency_curve == {1: 1000.0, 8: 1000.0}  # every timed call = one clock tick = 1 s
    assert info["alive"] and info["device"] == CPU and info["runtime"] == "eager" and info["pid"] is None
    assert not replica.alive()


class _Blocking:
    """A runtime whose first call blocks until released: a hang, as far as the replica can tell."""

    def __init__(self, gate: threading.Event):
        self.gate, self.calls = gate, 0

    def predict(self, batch):
        self.calls += 1
        if self.calls == 1:
            self.gate.wait(10)
        return torch.full((batch.batch_size,), 0.5)


def test_in_process_hang_fails_fast_and_restart_recovers(batch):
    gate = threading.Event()
    made = []

    def factory():
        made.append(_Blocking(gate))
        return made[-1]

    replica = InProcessReplica("m/cpu#0", "m", factory, device=CPU, timeout_s=0.2, profile_sizes=())

    async def go():
        await replica.start()
        t0 = time.monotonic()
        with pytest.raises(ReplicaError, match="hung"):
            await replica.infer(batch)
        assert time.monotonic() - t0 < 2.0
        assert not replica.alive()
        with pytest.raises(ReplicaError, match="not running"):
            await replica.infer(batch)
        await replica.restart()  # a fresh runtime from the factory; the hung thread is abandoned
        assert replica.alive() and len(made) == 2
        made[1].calls = 1  # the new runtime answers at once
        out = await replica.infer(batch)
        await replica.stop()
        return out

    try:
        assert np.all(asyncio.run(go()) == 0.5)
    finally:
        gate.set()


def test_in_process_tells_bad_input_from_a_broken_runtime(tiny_dlrm, batch):
    model, _ = tiny_dlrm

    class Broken:
        def predict(self, b):
            raise RuntimeError("CUDA error: an illegal memory access")

    bad_ids = batch.ids.clone()
    bad_ids[-1] = 10**6  # beyond every table
    bad = type(batch)(dense=batch.dense, ids=bad_ids, offsets=batch.offsets, num_sparse=batch.num_sparse)
    wrong_features = type(batch)(dense=batch.dense, ids=batch.ids[: 50 * 5], offsets=torch.arange(50 * 5 + 1),
                                 num_sparse=5)

    async def go():
        good = InProcessReplica("m/cpu#0", "m", model, device=CPU, profile_sizes=())
        broken = InProcessReplica("m/cpu#1", "m", Broken(), device=CPU, profile_sizes=())
        await good.start()
        await broken.start()
        with pytest.raises(DataError, match="outside"):
            await good.infer(bad)
        with pytest.raises(DataError, match="sparse features"):
            await good.infer(wrong_features)
        assert good.alive()  # bad input does not break the replica
        with pytest.raises(ReplicaError, match="illegal memory access"):
            await broken.infer(batch)
        await good.stop()
        await broken.stop()

    asyncio.run(go())


def test_in_process_start_failure_propagates_and_leaves_nothing_running():
    def factory():
        raise ArtifactError("artifacts/x is not an artifact directory")

    replica = InProcessReplica("m/cpu#0", "m", factory, device=CPU)
    with pytest.raises(ArtifactError, match="not an artifact"):
        asyncio.run(replica.start())
    assert not replica.alive() and replica._executor is None


def test_replica_is_an_abstract_contract():
    with pytest.raises(TypeError):
        Replica("x", "m", device=CPU, runtime="eager", version="v")  # abstract methods
    with pytest.raises(ConfigError, match="timeout_s"):
        InProcessReplica("m/cpu#0", "m", lambda: None, device=CPU, timeout_s=0)


def test_synthetic_batch_draws_valid_rows():
    b = synthetic_batch(3, (2, 1000, 7), 500, seed=1)
    b.validate((2, 1000, 7), 3)
    assert b.batch_size == 500 and int(b.ids.view(500, 3)[:, 1].max()) > 500  # spread over the table


# ---- worker-process replica --------------------------------------------------------------------


def test_process_replica_answers_survives_a_crash_and_kills_a_hung_worker(tiny_dlrm, artifact, batch):
    spec = ReplicaSpec(artifact=str(artifact), catalog_device=CPU, batching=BatchingConfig(max_batch_items=100))
    replica = ProcessReplica("dlrm/cpu#0", "dlrm", spec, timeout_s=1.0, profile_repeats=1)
    assert replica.version == artifact_version(artifact) and len(replica.version) == 12
    assert replica.pid is None and not replica.alive()

    async def go():
        await replica.start()
        try:
            assert replica.alive() and replica.pid not in (None, os.getpid())
            assert sorted(replica.latency_curve) == [1, 64, 100, 256, 1024]  # plan's max batch included
            np.testing.assert_allclose(await replica.infer(batch), _expected(tiny_dlrm, batch), atol=1e-6)
            assert (await replica.infer(type(batch)(dense=batch.dense[:0], ids=batch.ids[:0],
                                                    offsets=batch.offsets[:1], num_sparse=6))).shape == (0,)
            bad_ids = batch.ids.clone()
            bad_ids[-1] = 10**6
            with pytest.raises(DataError, match="outside"):
                await replica.infer(type(batch)(dense=batch.dense, ids=bad_ids, offsets=batch.offsets, num_sparse=6))
            assert replica.alive()

            first = replica.pid  # crash: noticed at once, not after the timeout
            os.kill(first, signal.SIGKILL)
            t0 = time.monotonic()
            with pytest.raises(ReplicaError, match="died|not running"):
                await replica.infer(batch)
            assert time.monotonic() - t0 < 0.9 and not replica.alive()
            await replica.restart()
            assert replica.alive() and replica.pid != first
            np.testing.assert_allclose(await replica.infer(batch), _expected(tiny_dlrm, batch), atol=1e-6)

            hung = replica.pid  # hang: answered with ReplicaError after timeout_s, and the worker is killed
            os.kill(hung, signal.SIGSTOP)
            t0 = time.monotonic()
            with pytest.raises(ReplicaError, match="hung"):
                await replica.infer(batch)
            assert 0.9 <= time.monotonic() - t0 < 5.0
            assert not replica.alive()
            with pytest.raises(ProcessLookupError):
                for _ in range(50):  # reaped by the kill: the pid disappears
                    os.kill(hung, 0)
                    time.sleep(0.1)
            await replica.restart()
            assert replica.pid != hung
            np.testing.assert_allclose(await replica.infer(batch), _expected(tiny_dlrm, batch), atol=1e-6)
        finally:
            await replica.stop()
        assert not replica.alive() and replica.pid is None

    asyncio.run(go())


@pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="SCHED_BATCH is Linux-only")
@pytest.mark.parametrize("scheduling, policy", [("batch", "SCHED_BATCH"), ("normal", "SCHED_OTHER")])
def test_a_worker_runs_under_the_plans_scheduling_policy_threads_and_restarts_included(tiny_dlrm, artifact, batch,
                                                                                      scheduling, policy):
    spec = ReplicaSpec(artifact=str(artifact), catalog_device=CPU, threads=2, scheduling=scheduling)
    replica = ProcessReplica("dlrm/cpu#0", "dlrm", spec, profile_repeats=1)
    replica.profile_sizes = (1,)

    def policies() -> set[int]:  # every thread of the worker, torch's pool included (started by now)
        return {os.sched_getscheduler(int(tid)) for tid in os.listdir(f"/proc/{replica.pid}/task")}

    async def go():
        await replica.start()
        try:
            np.testing.assert_allclose(await replica.infer(batch), _expected(tiny_dlrm, batch), atol=1e-6)
            assert replica.runtime_info["scheduling"] == scheduling
            assert policies() == {getattr(os, policy)}
            await replica.restart()
            assert policies() == {getattr(os, policy)} and replica.runtime_info["scheduling"] == scheduling
            assert os.sched_getscheduler(0) == os.SCHED_OTHER  # the parent (the HTTP front) is left as it was
        finally:
            await replica.stop()

    asyncio.run(asyncio.wait_for(go(), 120))


def test_metrics_separate_the_workers_own_model_time_from_the_round_trip(tiny_dlrm, artifact, batch):
    """crossrec_model_seconds is the worker's timing of its model call; crossrec_compute_seconds the front's
    round trip around it (pipe, wake-ups): the first is never the larger, and in-process replicas have none."""
    from crossrec.serve.policy import get_policy
    from crossrec.serve.router import Router

    spec = ReplicaSpec(artifact=str(artifact), catalog_device=CPU)
    replica = ProcessReplica("dlrm/cpu#0", "dlrm", spec, profile_repeats=1)
    replica.profile_sizes = (1,)

    async def go():
        async with Router({"dlrm": [replica]}, get_policy("round-robin")) as router:
            for _ in range(3):
                await router.predict("dlrm", batch)
            assert replica.last_model_ms > 0 and len(replica.last_ipc_ms) == 2
            return router.render_metrics().decode()

    text = asyncio.run(asyncio.wait_for(go(), 120))

    def value(name: str) -> float:
        (line,) = [x for x in text.splitlines() if x.startswith(name + "{")]
        return float(line.rsplit(" ", 1)[1])

    assert value("crossrec_model_seconds_count") == value("crossrec_compute_seconds_count") == 3
    assert 0 < value("crossrec_model_seconds_sum") < value("crossrec_compute_seconds_sum")
    # the two legs across the boundary are disjoint from the model's time, all inside the round trip
    def leg_value(name: str, leg: str) -> float:
        (line,) = [x for x in text.splitlines() if x.startswith(name + "{") and f'leg="{leg}"' in x]
        return float(line.rsplit(" ", 1)[1])

    legs = {leg: (leg_value("crossrec_ipc_seconds_count", leg), leg_value("crossrec_ipc_seconds_sum", leg))
            for leg in ("request", "answer")}
    assert all(count == 3 and total > 0 for count, total in legs.values())
    inside = value("crossrec_model_seconds_sum") + sum(total for _, total in legs.values())
    assert inside <= value("crossrec_compute_seconds_sum")


def test_a_bad_scheduling_policy_is_refused_with_the_choices_and_a_good_one_round_trips(tmp_path):
    with pytest.raises(ConfigError, match=r"ReplicaSpec.scheduling = 'fifo' is invalid: 'batch' .* or 'normal'"):
        ReplicaSpec(artifact="a", scheduling="fifo")
    assert ReplicaSpec(artifact="a").scheduling == "batch"
    spec = ReplicaSpec(artifact="a", scheduling="normal")
    plan = ServePlan(deployments=(DeploymentSpec(name="m", replicas=(spec,)),))
    assert ServePlan.from_json(plan.to_json()).deployments[0].replicas[0].scheduling == "normal"


def test_the_event_loop_call_matches_the_blocking_one_and_keeps_the_stream_in_step(tiny_dlrm, artifact):
    """WorkerClient.acall (no thread hop): big messages both ways (partial writes, reads past the 64 KiB
    buffer), a bad batch, the blocking call after it, and a cancellation mid-call (the worker is killed:
    its stream is out of step)."""
    model, data = tiny_dlrm
    big = synthetic_batch(model.spec.num_dense, [t.num_embeddings for t in model.spec.tables], 30_000, seed=1)
    small = next(iter(data.batches(7)))

    def arrays(b):
        return {"dense": b.dense.numpy(), "ids": b.ids.numpy(), "offsets": b.offsets.numpy()}

    client = WorkerClient({"artifact": str(artifact), "stage": "full"}, label="dlrm/cpu#0")
    client.start()
    try:
        async def go():
            h, out = await client.acall("infer", arrays(big), 30.0)  # ~1.5 MB in, 120 KB out
            np.testing.assert_allclose(out["probs"], model.predict_proba(big).numpy(), atol=1e-6)
            bad = arrays(small)
            bad["ids"] = bad["ids"].copy()
            bad["ids"][0] = 10**6
            with pytest.raises(DataError, match="outside"):
                await client.acall("infer", bad, 5.0)
            h2, out2 = await client.acall("infer", arrays(small), 5.0)
            assert h2["id"] == h["id"] + 2 and out2["probs"].shape == (7,)
            return out2["probs"]

        probs = asyncio.run(go())
        _, out = client.call("infer", arrays(small), 5.0)  # blocking again after the async calls
        assert np.array_equal(out["probs"], probs)

        async def cancelled():
            task = asyncio.create_task(client.acall("infer", arrays(big), 30.0))
            await asyncio.sleep(0)  # the request is on its way; the answer is not
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            with pytest.raises(ReplicaError, match="not running"):
                await client.acall("infer", arrays(small), 5.0)

        asyncio.run(cancelled())
        assert not client.alive()
    finally:
        client.stop()


def test_process_replica_start_failure_keeps_its_error_class(artifact):
    # the worker's runtime rejects the option value: the ConfigError crosses the process boundary
    spec = ReplicaSpec(artifact=str(artifact), runtime="compiled", options={"mode": "warp-speed"},
                       catalog_device=CPU)
    replica = ProcessReplica("dlrm/cpu#0", "dlrm", spec)
    with pytest.raises(ConfigError, match="failed to start.*mode"):
        asyncio.run(replica.start())
    assert not replica.alive()


# ---- build_replicas ----------------------------------------------------------------------------


def _plan(artifact, *replicas) -> ServePlan:
    return ServePlan(deployments=(DeploymentSpec(name="dlrm", replicas=tuple(replicas)),), replica_timeout_s=3.0)


def test_build_replicas_names_devices_versions_and_partitions(artifact, tmp_path):
    a = str(artifact)
    plan = _plan(artifact, ReplicaSpec(artifact=a, catalog_device=CPU, count=2),
                 ReplicaSpec(artifact=a, catalog_device="epyc-9654", count=1, batching=BatchingConfig(mode="slo")),
                 ReplicaSpec(artifact=a, catalog_device=CPU, stage="embedding"),
                 ReplicaSpec(artifact=a, catalog_device="h100-sxm", stage="dense"))
    built = build_replicas(plan)  # nothing starts: no process yet
    reps = built["dlrm"]
    assert [r.name for r in reps] == ["dlrm/cpu#0", "dlrm/cpu#1", "dlrm/cpu#2", "dlrm/cpu+cpu#0"]
    assert [type(r) for r in reps] == [ProcessReplica] * 3 + [PartitionedReplica]
    assert [r.device for r in reps] == [CPU, CPU, "epyc-9654", "h100-sxm"]
    assert reps[3].devices == (CPU, "h100-sxm")
    assert {r.version for r in reps} == {artifact_version(artifact)}
    assert all(r.timeout_s == 3.0 and not r.alive() and r.model == "dlrm" for r in reps)
    assert reps[2].batching.mode == "slo" and reps[0].batching == BatchingConfig()

    in_proc = build_replicas(plan, workers=False)["dlrm"]
    assert [type(r) for r in in_proc] == [InProcessReplica] * 3 + [PartitionedReplica]
    assert [r.name for r in in_proc] == [r.name for r in reps]

    with pytest.raises(ConfigError, match="as many stage='embedding'"):
        build_replicas(_plan(artifact, ReplicaSpec(artifact=a, catalog_device=CPU, stage="embedding", count=2),
                             ReplicaSpec(artifact=a, catalog_device=CPU, stage="dense")))
    with pytest.raises(ArtifactError, match="not an artifact directory"):
        build_replicas(_plan(artifact, ReplicaSpec(artifact=str(tmp_path / "missing"), catalog_device=CPU)))


def test_in_process_replicas_from_a_plan_serve_the_artifact(tiny_dlrm, artifact, batch, tmp_path):
    plan = _plan(artifact, ReplicaSpec(artifact=str(artifact), catalog_device=CPU))
    replica = build_replicas(plan, workers=False)["dlrm"][0]
    replica.profile_sizes = (1, 4)

    async def go():
        await replica.start()
        try:
            return await replica.infer(batch)
        finally:
            await replica.stop()

    np.testing.assert_allclose(asyncio.run(go()), _expected(tiny_dlrm, batch), atol=1e-6)
    assert sorted(replica.latency_curve) == [1, 4]
    # a different artifact is a different version (what a hot swap shows)
    model, data = tiny_dlrm
    other = save_artifact(tmp_path / "v2", model, data.schema, metrics={"note": 2})
    assert artifact_version(other) != replica.version
