"""`crossrec serve`, `crossrec loadgen` and `crossrec plan`: the serving commands (issue #5)."""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

from crossrec.cli import _console
from crossrec.errors import ConfigError


def _plan_overrides(args) -> dict:
    over = {"host": args.host, "port": args.port, "count": args.replicas, "runtime": args.runtime,
            "threads": args.threads, "slo_p99_ms": args.slo_ms, "model": args.model}
    if getattr(args, "policy", None):
        from crossrec.serve.plan import RoutingConfig

        over["routing"] = RoutingConfig(policy=args.policy)
    return {k: v for k, v in over.items() if v is not None}


def load_plan(target: str, args) -> object:
    """A plan from an artifact directory (sensible defaults) or a plan file (YAML/JSON) plus overrides."""
    from crossrec.config import load
    from crossrec.serve.plan import ServePlan

    path = Path(target)
    if (path / "manifest.json").is_file():
        return ServePlan.for_artifact(path, **_plan_overrides(args))
    if not path.is_file():
        raise ConfigError(f"{target} is neither an artifact directory (with manifest.json) nor a plan file; "
                          "pass an artifact from `crossrec train`/`crossrec compress` or a plan from `crossrec plan`")
    plan = load(path, ServePlan)
    top = {k: v for k, v in {"host": args.host, "port": args.port, "slo_p99_ms": args.slo_ms}.items()
           if v is not None}
    ignored = [k for k in ("replicas", "runtime", "threads", "model") if getattr(args, k, None) is not None]
    if ignored:
        raise ConfigError(f"--{', --'.join(ignored)} apply when serving an artifact directly; edit the plan file "
                          f"{target} instead")
    return dataclasses.replace(plan, **top) if top else plan


def cmd_serve(args) -> int:
    from crossrec.serve.server import serve

    plan = load_plan(args.target, args)
    token = None
    if args.admin_token_env:
        token = os.environ.get(args.admin_token_env)
        if not token:
            raise ConfigError(f"--admin-token-env {args.admin_token_env}: that environment variable is unset or "
                              "empty; export it with the bearer token admin calls must send")
    con = _console()
    names = ", ".join(d.name for d in plan.deployments)
    con.print(f"starting {names} ({args.engine} engine); first start loads the models and profiles each replica")
    serve(plan, engine=args.engine, workers=args.workers > 0, admin_token=token,
          ready_callback=lambda url: con.print(f"serving {names} on {url}  (POST {url}/v1/predict, docs {url}/docs; "
                                               "Ctrl-C stops)"))
    return 0


def cmd_loadgen(args) -> int:
    from crossrec.serve.loadgen import loadgen

    res = loadgen(args.url, mode=args.mode, rate_qps=args.rate, concurrency=args.concurrency,
                  duration_s=args.duration, size_dist=args.sizes, priorities=args.priorities, model=args.model,
                  binary=not args.json, seed=args.seed, deadline_ms=args.deadline_ms, jsonl=args.out,
                  timeout_s=args.timeout, client=args.client)
    print(res.summary())
    if args.out:
        _console().print(f"per-request lines and a summary line in {args.out}")
    return 0 if res.ok else 1


def cmd_plan(args) -> int:
    from crossrec.config import dump
    from crossrec.serve.plan import ServePlan

    if Path(args.out).exists() and not args.force:
        raise ConfigError(f"{args.out} already exists; choose another --out or pass --force")
    over = _plan_overrides(args)
    if args.catalog_device:
        over["catalog_device"] = args.catalog_device
    if args.device:
        over["device"] = args.device
    path = dump(ServePlan.for_artifact(args.artifact, **over), args.out)
    _console().print(f"wrote {path}; serve it with `crossrec serve {path}`")
    return 0


def _plan_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", help="address to bind (default 127.0.0.1: loopback only)")
    p.add_argument("--port", type=int, help="port (default 8000)")
    p.add_argument("--replicas", type=int, help="worker replicas (default 2 on >= 2 cores)")
    p.add_argument("--runtime", help="auto (default: script on a CPU, i.e. TorchScript, the fastest measured here, "
                   "or eager where the model does not trace; cuda on a GPU), eager, script, compiled, onnx or "
                   "onnx-int8")
    p.add_argument("--threads", type=int, help="torch threads per replica (default 1)")
    p.add_argument("--slo-ms", type=float, help="p99 latency SLO that batching and admission aim for (default 25)")
    p.add_argument("--model", help="name clients use (default: the artifact's model name)")
    p.add_argument("--policy", help="routing policy: latency-aware (default), least-outstanding, round-robin, "
                                    "cost-aware, power-aware")


def add_parsers(sub) -> None:
    p = sub.add_parser("serve", help="serve an artifact or a plan over HTTP (POST /v1/predict)",
                       description="Serve a model: TARGET is an artifact directory (served with sensible defaults) "
                                   "or a plan file (YAML/JSON, e.g. from `crossrec plan`).")
    p.add_argument("target", help="artifact directory or plan file")
    _plan_args(p)
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local worker processes (default) or Ray Serve (pip install 'crossrec[ray]')")
    p.add_argument("--workers", type=int, default=1, help="0 computes in the server process (no worker processes)")
    p.add_argument("--admin-token-env", metavar="VAR",
                   help="enable admin endpoints (hot swap); the bearer token is read from environment variable VAR")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("loadgen", help="send load to a crossrec server and report p50/p95/p99 and throughput")
    p.add_argument("url", help="server URL, e.g. http://127.0.0.1:8000")
    p.add_argument("--mode", choices=("open", "closed"), default="open",
                   help="open: Poisson arrivals at --rate (default); closed: --concurrency users back to back")
    p.add_argument("--rate", type=float, default=50.0, help="requests/s offered in open mode (default 50)")
    p.add_argument("--concurrency", type=int, default=8, help="users in closed mode (default 8)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds of load (default 10)")
    p.add_argument("--sizes", default="mlperf", help="items per request: mlperf (1-700, mean 300), fixed:N, "
                                                     "uniform:A:B")
    p.add_argument("--priorities", default=None, help="priority mix, e.g. 0:0.1,1:0.9 (0 = most urgent)")
    p.add_argument("--model", default=None, help="model name (default: the server's only model)")
    p.add_argument("--json", action="store_true", help="JSON bodies instead of the compact application/x-npz")
    p.add_argument("--deadline-ms", type=float, default=None, help="deadline sent with every request")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=30.0, help="client timeout per request, s (default 30)")
    p.add_argument("--client", default="auto", choices=("auto", "raw", "aiohttp", "httpx"),
                   help="HTTP client that sends the load (default auto: crossrec's lean keep-alive client for "
                        "http://, aiohttp for https://)")
    p.add_argument("--out", default=None, help="write per-request JSON lines and a summary line here")
    p.set_defaults(func=cmd_loadgen)

    p = sub.add_parser("plan", help="write a serving plan (YAML/JSON) for an artifact, to edit and serve")
    p.add_argument("artifact", help="artifact directory")
    p.add_argument("--out", default="plan.yaml", help="plan file to write (default plan.yaml)")
    p.add_argument("--force", action="store_true", help="overwrite --out")
    p.add_argument("--device", help="torch device of the replicas (default cpu)")
    p.add_argument("--catalog-device", help="hardware catalog name of that device (default: detected CPU class)")
    _plan_args(p)
    p.set_defaults(func=cmd_plan)
