"""`crossrec search`: hardware-aware architecture search (issue #4)."""

from __future__ import annotations

import json
from pathlib import Path

from crossrec.cli import _console
from crossrec.errors import DataError


def cmd_search(args) -> int:
    from crossrec.report.figure2 import figure2
    from crossrec.search import run_search

    con = _console()

    def progress(event: dict) -> None:
        ev = event.get("evaluation") or {}
        lat = ", ".join(f"{d} " + ("n/a" if ms is None else f"{ms:.3g} ms")
                        + f" ({ev.get('latency_source', {}).get(d, '?')})"
                        for d, ms in (ev.get("latency_ms") or {}).items())
        auc = f"AUC {ev['auc']:.4f}, " if "auc" in ev else ""
        extra = " (cached)" if event.get("cached") else ""
        con.print(f"  trial {event.get('trial', '?')}: {event.get('state')}{extra} {auc}{lat} "
                  f"{event.get('error', '')}".rstrip())

    result = run_search(args.config, out=args.out, n_trials=args.trials, strategy=args.strategy,
                        storage=args.storage, name=args.name, timeout_s=args.timeout_s, seed=args.seed,
                        baseline_seeds=args.baseline_seeds, auc_tolerance=_tolerance(args.auc_tolerance),
                        cpu_runtime=args.cpu_runtime, verify=args.verify, progress=progress)
    con.print(f"{result.finished_trials} trials finished ({result.evaluated} evaluated, {result.cached} cached, "
              f"{result.failed} failed) in {result.seconds:.0f} s")
    if not args.no_figure:
        png = figure2(result.front_path, args.figure or result.front_path.parent / "figure2.png")
        con.print(f"wrote {png}")
    print(json.dumps({"front": str(result.front_path), "history": str(result.history_path),
                      "hypervolume": result.front.hypervolume, "picks": result.front.to_dict()["picks"],
                      "dominance": {d: v.to_dict() for d, v in result.front.dominance.items()}},
                     indent=2, default=str))
    return 0


def _tolerance(text: str | None) -> float | str | None:
    if text is None or text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise DataError(f"--auc-tolerance {text!r}: give 'auto' (one std of the baseline's seed spread) or absolute "
                        "AUC points, e.g. 0.002") from None


def add_parsers(sub) -> None:
    p = sub.add_parser("search", help="hardware-aware architecture search: Pareto fronts per device (+ Figure 2)",
                       description="Search architectures and precisions against AUC and per-device latency "
                                   "(measured here; predicted or modeled elsewhere — each figure says which). "
                                   "CONFIG is a SearchConfig YAML/JSON; the search resumes from its storage.")
    p.add_argument("config", help="search config (YAML/JSON)")
    p.add_argument("--out", help="output folder (front.json, history.jsonl, artifacts, search.db)")
    p.add_argument("--trials", type=int, help="trial budget (overrides the config)")
    p.add_argument("--strategy", choices=("random", "evolution", "nsga2"), help="overrides the config")
    p.add_argument("--storage", help="Optuna storage URL (default sqlite:///<out>/search.db); share it to run "
                                     "several workers")
    p.add_argument("--name", help="study name (default from the config)")
    p.add_argument("--timeout-s", type=float, help="wall-time budget in seconds")
    p.add_argument("--seed", type=int)
    p.add_argument("--baseline-seeds", type=int, help="train the baseline's proxy with this many seeds and report "
                   "its AUC spread (overrides the config)")
    p.add_argument("--auc-tolerance", help="AUC a front member may lose and still count as 'no worse' than the "
                   "baseline: 'auto' (one std of the baseline seeds' spread) or absolute AUC, e.g. 0.002; strict "
                   "dominance is always reported too (overrides the config)")
    p.add_argument("--cpu-runtime", help="crossrec runtime the local CPU's candidates are timed on (default: the "
                   "config's latency.cpu_runtime, 'script'); the baseline is timed on eager and on it")
    p.add_argument("--no-verify", dest="verify", action="store_const", const=False, default=None,
                   help="report the search-time dominance only: do not re-time the claimed winners round-robin "
                   "with the baseline")
    p.add_argument("--figure", type=Path, help="Figure 2 PNG (default <out>/figure2.png)")
    p.add_argument("--no-figure", action="store_true", help="do not draw Figure 2")
    p.set_defaults(func=cmd_search)
