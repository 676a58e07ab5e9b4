"""Heterogeneous serving across a CPU and a CUDA GPU (issue #5), in one short run on a GPU machine.

    PYTHONPATH=src python3 benchmarks/gpu_serve.py --out "$OUT"                # on a GPU machine
    PYTHONPATH=src python3 benchmarks/gpu_serve.py --device cpu --out /tmp/s   # plumbing check, no GPU

Needs the serve extra (fastapi, uvicorn, pydantic); a lent GPU machine's image lacks them, so carry them as
wheels (/work/.library/device/README.md: ``pip download ... --python-version 3.12`` into an ignored ``.whl``,
then ``pip install --no-deps --target /tmp/site .whl/*.whl`` there and ``PYTHONPATH=src:/tmp/site``).

One deployment of the FP32 Criteo-shaped DLRM of ``benchmarks/serve.py`` (26 tables of <= ``--max-rows`` rows,
dim 64, bottom 512-256-64, top 512-256; random weights) with two replicas: one on the CPU (``auto`` runtime:
TorchScript, ``--cpu-threads`` threads) and one on the GPU (``cuda`` runtime: fp16 tables, bf16 dense layers).
For each routing policy in ``--policies`` the server is started afresh and driven open-loop (Poisson arrivals,
MLPerf-like 1-700-item requests, npz bodies) at each rate of ``--rates`` for ``--step-s`` seconds. Per step it
records p50/p99, items/s, errors and, from ``/metrics``, the share of the items each replica computed and its
mean compute time per batch: does the router send the work where it is fastest?

With ``--device cpu`` the "GPU" replica is a second CPU replica and every line says "plumbing check on CPU — not a
GPU measurement". Writes ``gpu_serve.md`` and ``gpu_serve.json`` under ``--out``; ``--render FILE.json`` prints the
page of a returned JSON (a lent machine returns at most 8 files).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import torch

from crossrec.serve.loadgen import loadgen
from crossrec.serve.plan import BatchingConfig, DeploymentSpec, ReplicaSpec, RoutingConfig, ServePlan

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PLUMBING, start_gpu_script, write_page

import serve as serve_bench  # benchmarks/serve.py: the same artifact and server start-up

ROOT = Path(__file__).resolve().parents[1]


def plan_for(artifact: Path, port: int, device: str, policy: str, cpu_threads: int, slo_ms: float) -> ServePlan:
    batching = BatchingConfig(max_batch_items=4096, max_wait_ms=1.0, mode="slo")
    replicas = (ReplicaSpec(artifact=str(artifact), device="cpu", runtime="auto", count=1, threads=cpu_threads,
                            batching=batching),
                ReplicaSpec(artifact=str(artifact), device=device, runtime="auto", count=1, threads=1,
                            batching=batching))
    return ServePlan(name="hetero", port=port, slo_p99_ms=slo_ms, routing=RoutingConfig(policy=policy),
                     deployments=(DeploymentSpec(name="dlrm", replicas=replicas),))


def start(plan: ServePlan) -> subprocess.Popen:
    path = Path(tempfile.mkdtemp()) / "plan.json"
    path.write_text(plan.to_json())
    code = ("from crossrec.serve.plan import ServePlan; from crossrec.serve.server import serve; "
            f"serve(ServePlan.from_json(open({str(path)!r}).read()))")
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)


def per_replica(metrics: str) -> dict[str, dict[str, float]]:
    """{replica: {"items": ..., "batches": ..., "compute_s": ...}} summed from /metrics' histograms."""
    out: dict[str, dict[str, float]] = {}
    for name, key in (("crossrec_batch_items_sum", "items"), ("crossrec_batch_items_count", "batches"),
                      ("crossrec_compute_seconds_sum", "compute_s")):
        for labels, value in re.findall(rf"^{name}{{([^}}]*)}} ([0-9.e+-]+)$", metrics, re.M):
            replica = re.search(r'replica="([^"]+)"', labels).group(1)
            out.setdefault(replica, {"items": 0.0, "batches": 0.0, "compute_s": 0.0})[key] += float(value)
    return out


def delta(after: dict, before: dict) -> dict:
    return {r: {k: v - before.get(r, {}).get(k, 0.0) for k, v in vals.items()} for r, vals in after.items()}


def run_policy(artifact: Path, schema, args, policy: str, log) -> dict:
    port = serve_bench.free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start(plan_for(artifact, port, args.device, policy, args.cpu_threads, args.slo_ms))
    try:
        serve_bench.wait_up(url, proc, timeout_s=args.start_timeout_s)
        models = httpx.get(url + "/v1/models", timeout=10).json()
        steps = []
        for rate in args.rates:
            before = per_replica(httpx.get(url + "/metrics", timeout=10).text)
            r = loadgen(url, mode="open", rate_qps=rate, duration_s=args.step_s, size_dist="mlperf", model="dlrm",
                        schema=schema, binary=True, seed=len(steps), timeout_s=10.0)
            used = delta(per_replica(httpx.get(url + "/metrics", timeout=10).text), before)
            total = sum(v["items"] for v in used.values()) or 1.0
            share = {k: {"items_share": v["items"] / total,
                         "mean_batch_items": v["items"] / v["batches"] if v["batches"] else None,
                         "mean_compute_ms": 1e3 * v["compute_s"] / v["batches"] if v["batches"] else None}
                     for k, v in used.items()}
            steps.append({"offered_qps": rate, "p50_ms": r.p50_ms, "p99_ms": r.p99_ms,
                          "items_s": r.throughput_items_s, "ok": r.ok, "requests": r.requests,
                          "counts": r.counts, "replicas": share})
            log(f"{policy} @ {rate:g} req/s: {r.summary()}; items by replica "
                + ", ".join(f"{k} {v['items_share']:.0%}" for k, v in share.items()))
        return {"policy": policy, "models": models, "steps": steps}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def markdown(rec: dict) -> str:
    lines = [f"# Serving across a CPU and {rec['gpu']}", "", f"Command: `{rec['command']}`  ",
             f"Date: {rec['date']}; host: {rec['host_cores']} cores; torch {rec['torch']}  ",
             "FP32 Criteo-shaped DLRM; replicas: CPU (auto runtime, "
             f"{rec['args']['cpu_threads']} threads) and "
             + ("a second CPU replica" if rec["source"] == "plumbing" else
                f"{rec['gpu']} (cuda runtime: fp16 tables, bf16 dense)") + "; "
             f"open-loop MLPerf-size requests, {rec['args']['step_s']:g} s per rate.", "",
             "| policy | offered req/s | p50 ms | p99 ms | items/s | ok / sent | items on CPU / GPU replica | "
             "mean batch (CPU / GPU) | mean compute ms per batch (CPU / GPU) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for run in rec["runs"]:
        for s in run["steps"]:
            reps = sorted(s["replicas"].items())  # "dlrm/cpu#0" before "dlrm/cuda#0"
            cells = [" / ".join(f"{v[k]:.0%}" if k == "items_share" else ("-" if v[k] is None else f"{v[k]:.3g}")
                                for _, v in reps) for k in ("items_share", "mean_batch_items", "mean_compute_ms")]
            lines.append(f"| {run['policy']} | {s['offered_qps']:g} | {_ms(s['p50_ms'])} | {_ms(s['p99_ms'])} | "
                         f"{s['items_s']:,.0f} | {s['ok']} / {s['requests']} | {cells[0]} | {cells[1]} | {cells[2]} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="folder for gpu_serve.md and gpu_serve.json")
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                   help="cuda (default): the second replica on the GPU; cpu: a plumbing check")
    p.add_argument("--policies", default="round-robin,latency-aware", help="routing policies, comma-separated")
    p.add_argument("--rates", type=lambda s: [float(x) for x in s.split(",")], default=[50.0, 200.0, 800.0],
                   help="offered req/s, comma-separated (default 50,200,800)")
    p.add_argument("--step-s", type=float, default=8.0)
    p.add_argument("--cpu-threads", type=int, default=4)
    p.add_argument("--max-rows", type=int, default=100_000)
    p.add_argument("--slo-ms", type=float, default=25.0)
    p.add_argument("--start-timeout-s", type=float, default=180.0)
    status, args, log = start_gpu_script(p, argv, markdown)
    if status is not None:
        return status
    start_t = time.perf_counter()
    gpu = torch.cuda.get_device_name(0) if args.device == "cuda" else PLUMBING
    fp32, _variant, _model, data = serve_bench.build_artifacts(Path(tempfile.mkdtemp()), args.max_rows)
    log(f"artifact {fp32}; replicas: cpu x{args.cpu_threads} threads + {args.device}")
    runs = [run_policy(fp32, data.schema, args, policy.strip(), log) for policy in args.policies.split(",")]
    rec = {"benchmark": "gpu_serve", "gpu": gpu, "source": "measured" if args.device == "cuda" else "plumbing",
           "command": "python3 benchmarks/gpu_serve.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "torch": torch.__version__,
           "host_cores": os.cpu_count(),
           "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
           "runs": runs, "seconds": round(time.perf_counter() - start_t, 1)}
    write_page(args.out, "gpu_serve", rec, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
