"""Serving benchmark (issue #5): sustained throughput at a p99 SLO, crossrec vs naive vs Ray Serve.

    python benchmarks/serve.py [--max-rows 100000] [--slo-ms 25] [--step-s 8]

Workload: ranking queries on a Criteo-shaped DLRM (26 tables capped at --max-rows rows, dim 64,
bottom 512-256-64, top 512-256), each request one user's candidate list of 1-700 items (MLPerf-like
Beta size distribution, mean 300; see crossrec.serve.loadgen), ``application/x-npz`` bodies for every
server, open-loop Poisson arrivals from a client process on the same 2-core machine (the client's
own CPU use is part of what the servers compete with — say so when quoting). Weights are random (speed
does not depend on them); the variant is int8 tables + static int8 MLPs, calibrated on synthetic rows.

For each server the offered rate climbs by --factor from --start-qps; each step runs --step-s
seconds; the sustained throughput is the best items/s of a step with p99 <= --slo-ms and no error.
Servers, measured one after the other in the same run:

- ``in-process``: the same variant on the same runtime (``--runtime``; tables in huge pages, as the replicas
  have them) called directly (best of batch 300 / 1024, 2 threads) — the ceiling;
- ``crossrec``: ``crossrec serve`` with the local engine (2 single-thread worker processes, SLO batching,
  admission with SLO feedback, requests of >= 2 x ``--split-items`` split across idle replicas, tables in
  transparent huge pages: the plan's ``hugepages=True``, BENCHMARKS.md §5);
- ``naive``: FastAPI + FP32 eager, one request at a time (benchmarks/naive_server.py);
- ``ray``: the same variant on Ray Serve with ``@serve.batch`` (crossrec's Ray engine), if Ray is installed;
- ``crossrec-asyncio`` (only when named in ``--servers``): crossrec on the standard library's asyncio loop
  instead of its default, uvloop (:mod:`crossrec.serve.eventloop`), to measure what the loop is worth;
- ``crossrec-normal`` (only when named): crossrec with its workers under the default scheduling policy instead
  of ``SCHED_BATCH`` (``ReplicaSpec.scheduling``), to measure what that is worth;
- ``crossrec-learnt`` (only when named): crossrec whose admission feedback raises its target to 1.2x the
  learnt unloaded p99 (``AdmissionConfig.unloaded_margin=1.2``, opt-in), to measure what learning the floor
  is worth.

The load generator runs on uvloop where it is installed (``crossrec.serve.loadgen``'s default), for every server.

And one row that is **modeled, not measured**: ``ideal (modeled)``, a zero-overhead server (no HTTP, no IPC, no
client on the cores) whose 2 single-thread replicas take exactly the single-thread compute times measured in this
run, under the same arrivals and sizes (:func:`ideal_p99_ms`). It shows how much of the gap to the target is this
CPU's compute and how much is everything else.

Then overload (crossrec only): ``--overload-s`` seconds at twice its capacity — the highest offered rate it
served cleanly with p99 inside the loosest SLO (100 ms) — p99 of
the admitted requests, how many were refused and how fast (503 + Retry-After), and whether the
server is ready and answering right afterwards.

Appends to benchmarks/results/serve.jsonl and writes docs/results/serve.md (``--md`` names another file).
"""

from __future__ import annotations

import argparse
import copy
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import torch
from common import DOCS, append_jsonl, environment

from crossrec.artifact import save_artifact
from crossrec.compress import CompressContext, DenseQuantConfig, EmbeddingQuantConfig, PipelineConfig, compress_
from crossrec.data.synthetic import SyntheticConfig, generate
from crossrec.hardware import profile
from crossrec.models import ModelSpec, build
from crossrec.runtime import load as load_runtime
from crossrec.serve.loadgen import loadgen
from crossrec.serve.plan import AdmissionConfig, BatchingConfig, RoutingConfig, ServePlan

VARIANT = PipelineConfig(steps=(EmbeddingQuantConfig(precision="int8"), DenseQuantConfig(mode="int8-static")))
ROOT = Path(__file__).resolve().parents[1]
CROSSREC_VARIANTS = {"crossrec": {}, "crossrec-asyncio": {"event_loop": "asyncio"},
                     "crossrec-normal": {"scheduling": "normal"}, "crossrec-learnt": {"unloaded_margin": 1.2}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(url: str, proc: subprocess.Popen | None, timeout_s: float = 300.0) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout_s:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url + "/v1/models", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not come up in {timeout_s} s")


def build_artifacts(out: Path, max_rows: int) -> tuple[Path, Path, object, object]:
    data = generate(SyntheticConfig(rows=20_000, max_rows=max_rows, seed=0))
    spec = ModelSpec.for_schema(data.schema, interaction="dot", embedding_dim=64, bottom_mlp=(512, 256, 64),
                                top_mlp=(512, 256), name="dlrm")
    model = build(spec, seed=0).eval()
    variant = compress_(copy.deepcopy(model), VARIANT, CompressContext(train_data=data))
    fp32 = save_artifact(out / "fp32", model, data.schema)
    var = save_artifact(out / "variant", variant, data.schema)
    return fp32, var, variant, data


def ideal_p99_ms(curve_ms: dict[int, float], rate_qps: float, *, replicas: int = 2, split_items: int | None = 128,
                 requests: int = 20_000, seed: int = 0) -> float:
    """Modeled, not measured: the p99 latency (ms) of a zero-overhead server under the benchmark's workload.

    Poisson arrivals at ``rate_qps``, MLPerf-like sizes (the load generator's); each of ``replicas`` single-thread
    workers takes ``curve_ms`` (batch size -> ms, interpolated) for a batch. A request of >= 2 x ``split_items``
    items is split evenly across the replicas idle when it arrives (crossrec's rule); otherwise it runs whole on
    the replica free first, first come first served. No batching across requests (compute per item is near-linear
    here, so it would save only the per-call fixed cost). The first 10% of requests warm the queue up.

    >>> flat = {1: 1.0, 1000: 1.0}  # 1 ms whatever the size, one replica: an M/D/1 queue at 10% load
    >>> ideal_p99_ms(flat, 100.0, replicas=1, split_items=None) < 2.0
    True
    """
    from crossrec.serve.loadgen import SizeDistribution

    rng = np.random.default_rng(seed)
    sizes = SizeDistribution.parse("mlperf").sample(rng, requests)
    arrivals = np.cumsum(rng.exponential(1e3 / rate_qps, requests))
    xs, ys = zip(*sorted(curve_ms.items()))
    free = [0.0] * replicas  # when each replica is next free (ms)
    latency = np.empty(requests)
    for i, (t, n) in enumerate(zip(arrivals, sizes)):
        idle = [r for r in range(replicas) if free[r] <= t]
        k = min(len(idle), int(n) // split_items) if split_items else 0
        if k >= 2:
            done = t + float(np.interp(n / k, xs, ys))
            for r in idle[:k]:
                free[r] = done
        else:
            r = min(range(replicas), key=free.__getitem__)
            done = free[r] = max(t, free[r]) + float(np.interp(n, xs, ys))
        latency[i] = done - t
    return float(np.percentile(latency[requests // 10:], 99))


def ideal_ladder(curve_ms: dict[int, float], args) -> dict:
    """The ladder of :func:`ladder` run on :func:`ideal_p99_ms` (modeled): the best rate inside each SLO."""
    from crossrec.serve.loadgen import MLPERF_BETA

    mean_items = 1 + 699 * MLPERF_BETA[0] / sum(MLPERF_BETA)
    steps, rate = [], args.start_qps
    while rate <= args.max_qps:
        p99 = ideal_p99_ms(curve_ms, rate, split_items=args.split_items or None)
        steps.append({"offered_qps": rate, "p99_ms": p99, "items_s": rate * mean_items, "clean": True})
        if p99 > 4 * max(SLOS_MS):
            break
        rate *= args.factor
    by_slo = {str(slo): max((s for s in steps if s["p99_ms"] <= slo), key=lambda s: s["items_s"], default=None)
              for slo in sorted({args.slo_ms, *SLOS_MS})}
    return {"modeled": True, "curve_ms": {str(k): v for k, v in curve_ms.items()}, "steps": steps, "by_slo": by_slo,
            "best": by_slo[str(args.slo_ms)]}


SLOS_MS = (25.0, 50.0, 100.0)  # the SLO first; the others show where each server stands


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants, from /proc (Linux); ``[pid]`` where /proc has no such information."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(entry.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # exited meanwhile, or not a process entry
        children.setdefault(ppid, []).append(int(entry.parent.name))
    tree, todo = [], [pid]
    while todo:
        tree.append(todo.pop())
        todo.extend(children.get(tree[-1], []))
    return tree


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds ``pid`` has used (Linux /proc); 0.0 once it has exited or off Linux.

    >>> import os
    >>> cpu_seconds(os.getpid()) > 0 or not Path("/proc/self/stat").exists()
    True
    """
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU time per request of a server during a ladder step, split into its front (the process the
    benchmark started) and everything below it (worker processes), and of this process (the client)."""

    def __init__(self, server_pid: int | None):
        self.server_pid = server_pid

    def start(self) -> None:
        self._client = self._client_s()
        self._tree = {p: cpu_seconds(p) for p in process_tree(self.server_pid)} if self.server_pid else {}

    @staticmethod
    def _client_s() -> float:
        use = resource.getrusage(resource.RUSAGE_SELF)
        return use.ru_utime + use.ru_stime

    def stop(self, requests: int) -> dict[str, float]:
        """ms of CPU per request since :meth:`start` (a worker restarted meanwhile counts from zero)."""
        n = max(requests, 1)
        out = {"client_cpu_ms": (self._client_s() - self._client) / n * 1e3}
        if self.server_pid:
            used = {p: cpu_seconds(p) - self._tree.get(p, 0.0) for p in process_tree(self.server_pid)}
            out["front_cpu_ms"] = used.pop(self.server_pid, 0.0) / n * 1e3
            out["workers_cpu_ms"] = sum(used.values()) / n * 1e3
        return out


def ladder(url: str, args, schema, model: str, server_pid: int | None = None) -> dict:
    """Climb the offered rate until p99 passes 4x the largest SLO or more than 5% of requests fail; for
    each SLO, the best step whose p99 stays inside it with no error ("best" is --slo-ms's). Each step
    also records the CPU per request of the client and, given ``server_pid``, of the server's front
    and of its worker processes (:class:`CpuMeter`)."""
    steps, rate = [], args.start_qps
    meter = CpuMeter(server_pid)
    while rate <= args.max_qps:
        meter.start()
        r = loadgen(url, mode="open", rate_qps=rate, duration_s=args.step_s, size_dist="mlperf", model=model,
                    client=args.client,
                    schema=schema, binary=True, seed=len(steps), timeout_s=10.0)
        cpu = meter.stop(r.requests)
        clean = r.ok == r.requests and r.p99_ms is not None
        steps.append({"offered_qps": rate, "p50_ms": r.p50_ms, "p99_ms": r.p99_ms, "items_s": r.throughput_items_s,
                      "rps": r.throughput_rps, "counts": r.counts, "errors": r.errors, "clean": clean, **cpu})
        print(f"  {rate:7.1f} req/s offered: {r.summary()}; CPU ms/request: "
              + ", ".join(f"{k[:-7]} {v:.2f}" for k, v in cpu.items()), flush=True)
        # keep climbing past a step with a few refusals (admission control sheds a transient burst);
        # stop once more than 5% fail or p99 passes 4x the largest SLO. Only clean steps count below.
        if r.ok < 0.95 * r.requests or r.p99_ms is None or r.p99_ms > 4 * max(SLOS_MS):
            break
        rate *= args.factor
    by_slo = {}
    for slo in sorted({args.slo_ms, *SLOS_MS}):
        inside = [s for s in steps if s["clean"] and s["p99_ms"] <= slo]
        by_slo[str(slo)] = max(inside, key=lambda s: s["items_s"]) if inside else None
    return {"steps": steps, "by_slo": by_slo, "best": by_slo[str(args.slo_ms)]}


def overload(url: str, args, schema, rate: float) -> dict:
    """Twice the sustainable rate for --overload-s seconds, then check the server recovered."""
    import json as _json

    print(f"  overload: {rate:.1f} req/s offered for {args.overload_s:.0f} s", flush=True)
    log = Path(tempfile.mkdtemp()) / "overload.jsonl"
    r = loadgen(url, mode="open", rate_qps=rate, duration_s=args.overload_s, size_dist="mlperf", model="dlrm",
                client=args.client,
                schema=schema, binary=True, seed=99, timeout_s=10.0, jsonl=log)
    rows = [_json.loads(line) for line in log.read_text().splitlines()]
    refused = sorted(x["latency_ms"] for x in rows if x.get("kind") == "request" and x["status"] in ("503", "429"))
    after = loadgen(url, mode="open", rate_qps=rate / 4, duration_s=5.0, size_dist="mlperf", model="dlrm",
                    client=args.client,
                    schema=schema, binary=True, seed=100, timeout_s=10.0)
    ready = httpx.get(url + "/readyz", timeout=5).status_code
    out = {"offered_qps": rate, "requests": r.requests, "admitted_ok": r.ok, "counts": r.counts,
           "admitted_p99_ms": r.p99_ms, "refused": len(refused),
           "refusal_p50_ms": refused[len(refused) // 2] if refused else None,
           "refusal_p99_ms": refused[int(0.99 * (len(refused) - 1))] if refused else None,
           "after": {"ok": after.ok, "requests": after.requests, "p99_ms": after.p99_ms}, "readyz_after": ready}
    print(f"  overload: {r.summary()}; refused {len(refused)} (p50 {out['refusal_p50_ms']} ms); after: "
          f"{after.summary()}; /readyz {ready}", flush=True)
    return out


def serve_crossrec(var: Path, port: int, slo_ms: float, max_wait_ms: float = 0.0, runtime: str = "auto",
                   split_items: int | None = 128, target_fraction: float = 0.7, event_loop: str = "auto",
                   slo_factor: float = 1.5, scheduling: str = "batch", unloaded_margin: float | None = None):
    # hugepages=True rather than the default "auto": on even when --max-rows makes the tables < 64 MiB
    # (the runtime still moves only lookup groups >= 32 MiB; without THP nothing moves)
    plan = ServePlan.for_artifact(var, port=port, count=2, threads=1, model="dlrm", slo_p99_ms=slo_ms,
                                  batching=BatchingConfig(max_batch_items=2048, max_wait_ms=max_wait_ms, mode="slo"),
                                  hugepages=True, runtime=runtime,
                                  routing=RoutingConfig(split_items=split_items),
                                  admission=AdmissionConfig(target_fraction=target_fraction, slo_factor=slo_factor,
                                                            unloaded_margin=unloaded_margin),
                                  event_loop=event_loop, scheduling=scheduling)
    path = Path(tempfile.mkdtemp()) / "plan.json"
    path.write_text(plan.to_json())
    code = ("import sys; from crossrec.serve.plan import ServePlan; from crossrec.serve.server import serve; "
            f"serve(ServePlan.from_json(open({str(path)!r}).read()))")
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f} ms"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--max-rows", type=int, default=100_000)
    p.add_argument("--slo-ms", type=float, default=25.0)
    p.add_argument("--step-s", type=float, default=8.0)
    p.add_argument("--start-qps", type=float, default=20.0)
    p.add_argument("--max-qps", type=float, default=5000.0)
    p.add_argument("--factor", type=float, default=1.3)
    p.add_argument("--servers", default="crossrec,naive,ray")
    p.add_argument("--overload-s", type=float, default=60.0, help="seconds at 2x capacity (0: skip)")
    p.add_argument("--max-wait-ms", type=float, default=0.0,
                   help="batching wait (crossrec and Ray); 0 = work-conserving: an idle replica takes what is queued, "
                        "and batches form while replicas are busy")
    p.add_argument("--runtime", default="auto", choices=("auto", "eager", "script"),
                   help="runtime of the variant in-process, in crossrec's replicas and on Ray (default auto, crossrec "
                   "serve's own default: script on this CPU; the naive server is FP32 eager by definition)")
    p.add_argument("--target-fraction", type=float, default=0.7,
                   help="crossrec: the admission feedback holds the server-measured p99 under this x --slo-ms")
    p.add_argument("--split-items", type=int, default=128,
                   help="crossrec: smallest part of a request split across idle replicas (0: never split)")
    p.add_argument("--slo-factor", type=float, default=1.5,
                   help="crossrec: admission refuses a request whose predicted finish exceeds this x --slo-ms "
                   "while every replica is busy (the budget the feedback cuts from; default 1.5, as AdmissionConfig)")
    p.add_argument("--client", default="auto", choices=("auto", "raw", "aiohttp"),
                   help="the load generator's HTTP client (crossrec.serve.loadgen; auto: its lean raw client)")
    p.add_argument("--md", default="serve.md", help="Markdown file written under docs/results (default serve.md)")
    args = p.parse_args(argv)
    known = [*CROSSREC_VARIANTS, "naive", "ray"]
    unknown = [x for x in args.servers.split(",") if x not in known]
    if unknown:
        p.error(f"--servers: unknown {', '.join(map(repr, unknown))}; choose from {', '.join(known)}")
    env = environment()
    tmp = Path(tempfile.mkdtemp(prefix="crossrec-serve-bench-"))
    fp32, var, variant, data = build_artifacts(tmp, args.max_rows)
    schema = data.schema
    torch.set_num_threads(2)
    rt = load_runtime(variant, args.runtime, hugepages=True)  # as the replicas run it
    big = data.slice(0, 1024).to_batch()
    prof = profile(rt, lambda b: big if b == 1024 else data.slice(0, b).to_batch(), batch_sizes=(300, 1024),
                   repeats=30)
    inproc = max(bp.samples_per_s for bp in prof.batches)
    print(f"in-process: {inproc:,.0f} items/s (best of batch 300 / 1024, 2 threads, {args.runtime})", flush=True)
    torch.set_num_threads(1)  # leave the cores to the servers; the client is this process
    sizes = (1, 32, 100, 200, 350, 500, 700)  # the single-thread compute curve the modeled ideal server runs on
    one = profile(rt, lambda b: data.slice(0, b).to_batch(), batch_sizes=sizes, repeats=15)
    curve = {bp.batch_size: bp.p50_ms for bp in one.batches}
    ideal = ideal_ladder(curve, args)
    print("single-thread compute (p50 ms): " + ", ".join(f"{k}: {v:.2f}" for k, v in curve.items()), flush=True)
    print("ideal (modeled: zero-overhead server on that curve): " + ", ".join(
        f"p99 <= {slo} ms up to {s['items_s']:,.0f} items/s" if s else f"p99 <= {slo} ms: none"
        for slo, s in ideal["by_slo"].items()), flush=True)
    results = {"in-process": {"items_s": inproc}, "ideal (modeled)": ideal}
    for server in args.servers.split(","):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        proc, ray_dep = None, None
        print(f"{server}:", flush=True)
        if server in CROSSREC_VARIANTS:  # crossrec, or crossrec with one default changed
            proc = serve_crossrec(var, port, args.slo_ms, args.max_wait_ms, args.runtime, args.split_items or None,
                                  args.target_fraction, slo_factor=args.slo_factor, **CROSSREC_VARIANTS[server])
        elif server == "naive":
            proc = subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "naive_server.py"), str(fp32),
                                     "--port", str(port), "--model", "dlrm", "--threads", "2"], cwd=ROOT)
        elif server == "ray":
            try:
                from crossrec.serve import ray_engine
            except ImportError:
                print("  Ray not installed: skipped")
                continue
            plan = ServePlan.for_artifact(var, port=port, count=2, threads=1, model="dlrm", runtime=args.runtime,
                                          batching=BatchingConfig(max_batch_items=2048, max_wait_ms=args.max_wait_ms))
            ray_dep = ray_engine.deploy(plan)
        try:
            wait_up(url, proc)
            results[server] = ladder(url, args, schema, "dlrm", proc.pid if proc is not None else None)
            # capacity: the highest rate it served cleanly with p99 inside the loosest SLO (not the --slo-ms
            # one: on a CPU that holds it only at the lowest rate, twice that is no overload at all)
            cap = results[server]["by_slo"][str(max(args.slo_ms, *SLOS_MS))]
            if server == "crossrec" and args.overload_s > 0 and cap:
                results["overload"] = overload(url, args, schema, 2 * cap["offered_qps"])
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(60)
            if ray_dep is not None:
                ray_dep.stop()
    best = {k: (v["best"]["items_s"] if v.get("best") else v.get("items_s", 0.0))
            for k, v in results.items() if k != "overload"}
    ratios = {"crossrec / in-process": best.get("crossrec", 0) / inproc,
              "crossrec / naive": best.get("crossrec", 0) / max(best.get("naive", 0), 1e-9),
              "crossrec / ray": best.get("crossrec", 0) / max(best.get("ray", 0), 1e-9) if "ray" in best else None,
              "crossrec / ideal (modeled)": best.get("crossrec", 0) / max(best.get("ideal (modeled)", 0), 1e-9)}
    record = {"benchmark": "serve", "args": vars(args), "results": results, "sustained_items_s": best,
              "ratios": ratios, "env": env}
    append_jsonl("serve", record)
    lines = [f"# Serving: sustained throughput at p99 <= {args.slo_ms:.0f} ms (client-measured, loopback)", "",
             f"Command: `python benchmarks/serve.py {' '.join(argv or sys.argv[1:])}`  ",
             f"Machine: {env['cpu']}, {env['cores']} cores, torch {env['torch']}, {env['date']}; client "
             f"({args.client}) on the same machine", "",
             "| server | sustained items/s at the SLO | p99 at that rate (ms) |", "|---|---|---|"]
    for k, v in best.items():
        p99 = results[k]["best"]["p99_ms"] if results[k].get("best") else None
        lines.append(f"| {k} | {v:,.0f} | {'' if p99 is None else f'{p99:.1f}'} |" if v else
                     f"| {k} | none: no step kept p99 inside {args.slo_ms:.0f} ms without errors | |")
    lines += ["", "`ideal (modeled)` is modeled, not measured: a zero-overhead server (no HTTP, IPC or client on the "
              "cores) whose 2 single-thread replicas take this run's single-thread compute times (p50 ms: "
              + ", ".join(f"{k} items {v:.2f}" for k, v in curve.items()) + "), same arrivals and sizes."]
    lines += ["", "Ratios at the SLO: " + ", ".join(f"{k} = {v:.2f}" for k, v in ratios.items()
                                                   if v is not None and 0 < v < 1e6), "",
              "Sustained items/s by p99 SLO (best clean step whose p99 is inside it):", "",
              "| server | " + " | ".join(f"p99 <= {x:.0f} ms" for x in SLOS_MS) + " |",
              "|---|" + "---|" * len(SLOS_MS)]
    for k, v in results.items():
        if "by_slo" in v:
            cells = [v["by_slo"][str(x)] for x in SLOS_MS]
            lines.append(f"| {k} | " + " | ".join("-" if c is None else f"{c['items_s']:,.0f} (p99 {c['p99_ms']:.1f})"
                                                    for c in cells) + " |")
    cpu_rows = []
    for k, v in results.items():
        clean = [s for s in v.get("steps", []) if s.get("clean") and "client_cpu_ms" in s]
        if clean:
            top = max(clean, key=lambda s: s["offered_qps"])
            server_cells = ("-" if x not in top else f"{top[x]:.2f}" for x in ("front_cpu_ms", "workers_cpu_ms"))
            cpu_rows.append(f"| {k} | {top['offered_qps']:.1f} | {top['client_cpu_ms']:.2f} | "
                            + " | ".join(server_cells) + " |")
    if cpu_rows:
        lines += ["", "CPU per request (ms; /proc and getrusage) at each server's highest clean step — the front is "
                  "the process the benchmark started, workers everything below it:", "",
                  "| server | offered req/s | client | front | workers |", "|---|---|---|---|---|", *cpu_rows]
    if "overload" in results:
        o = results["overload"]
        lines += ["", f"Overload, {args.overload_s:.0f} s at {o['offered_qps']:.1f} req/s (2x capacity, the highest "
                  f"clean rate within {max(args.slo_ms, *SLOS_MS):.0f} ms): "
                  f"{o['admitted_ok']} admitted and answered (p99 {_ms(o['admitted_p99_ms'])}), {o['refused']} refused "
                  f"(p50 {_ms(o['refusal_p50_ms'])}, p99 {_ms(o['refusal_p99_ms'])}), statuses {o['counts']}; "
                  f"afterwards {o['after']['ok']}/{o['after']['requests']} answered, /readyz {o['readyz_after']}."]
    DOCS.mkdir(parents=True, exist_ok=True)
    (DOCS / args.md).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
