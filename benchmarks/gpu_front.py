"""Re-time a search's GPU front on a real CUDA GPU (issue #4): were the predicted latencies and verdicts right?

    PYTHONPATH=src python3 benchmarks/gpu_front.py FRONT.json --out "$OUT"        # on a GPU machine
    PYTHONPATH=src python3 benchmarks/gpu_front.py FRONT.json --device cpu --out /tmp/f   # plumbing check, no GPU

``benchmarks/search.py --gpu h200-sxm --predictor benchmarks/results/predictor_h200.json`` judges the GPU column
with a LatencyPredictor fitted on measurements of an H200, never by timing a candidate there. This script takes
the front file such a search wrote and times, on the local GPU, the baseline and the GPU front's members (fastest
first, up to ``--members``), each in the form crossrec runs there (``crossrec.search.objectives.gpu_deployable``:
int8/int4 tables and int8 dense layers become fp16 tables + bf16 dense) on eager PyTorch — what the predictor's
records were measured on. Weights are random and the ids synthetic (each model's own tables): speed does not depend
on the values, so the AUCs are the search's.

Each member is timed round-robin with the baseline in its own run (``crossrec.search.timing.time_models``:
``--rounds`` rounds of 5 calls each over 4 distinct batches, a device sync after every call) at the front's GPU
batch size. Reported per member: predicted and measured ms, the measured speed-up over the baseline, and whether
it dominates the baseline on the real GPU (AUC >= the baseline's, strictly or within the search's tolerance, and
>= 2x faster). Writes ``gpu_front.md`` and ``gpu_front.json`` under ``--out`` (copy them into docs/results and
benchmarks/results). With ``--device cpu`` the same code runs on the CPU and every line says it is a plumbing check.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path

import numpy as np
import torch

from crossrec.data.synthetic import SyntheticConfig, generate
from crossrec.hardware import profile_many
from crossrec.hardware.spec import load_catalog
from crossrec.models import build
from crossrec.search.objectives import gpu_deployable
from crossrec.search.pareto import Candidate, ParetoFront, non_dominated_sort
from crossrec.search.timing import time_models

if str(Path(__file__).resolve().parent) not in sys.path:  # common.py sits beside this script
    sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PLUMBING, start_gpu_script, write_page

SPEEDUP = 2.0  # the dominance bar


def gpu_device(front: ParetoFront) -> str:
    """The front's GPU (the first of its devices the catalog calls a gpu)."""
    catalog = load_catalog()
    found = [d for d in front.devices if d in catalog and catalog[d].kind == "gpu"]
    if not found:
        raise SystemExit(f"the front's devices {list(front.devices)} include no catalog GPU; run the search with "
                         "--gpu h200-sxm (benchmarks/search.py) first")
    return found[0]


def batches_for(cand: Candidate, size: int, seed: int, n: int = 4) -> list:
    """``n`` distinct batches of synthetic ids for ``cand``'s own tables (and dense width)."""
    spec = cand.arch.spec
    data = generate(SyntheticConfig(rows=size * n, num_dense=spec.num_dense, num_sparse=len(spec.tables),
                                    cardinalities=tuple(t.num_embeddings for t in spec.tables), max_rows=None,
                                    seed=seed))
    return data.distinct_batches(size, n)


def deployed(cand: Candidate, device: str):
    """(model on ``device`` in crossrec's GPU form, the compression label it runs as)."""
    spec = cand.arch.spec
    choice = gpu_deployable(cand.arch.compression, spec)
    model = choice.apply_(build(spec, seed=0)).to(device).eval()
    return model, choice.label


def retime(front: ParetoFront, gpu: str, device: str, size: int, members: int, rounds: int, log,
           every: bool = False) -> dict:
    base = front.baseline[gpu]
    verdict = front.dominance.get(gpu)
    tolerance = verdict.auc_tolerance if verdict is not None else None
    profiler = functools.partial(profile_many, device=device)
    base_model, base_runs_as = deployed(base, device)
    base_batches = [b.to(device) for b in batches_for(base, size, seed=0)]
    rows = []
    order = (sorted(range(len(front.candidates)), key=lambda i: front.candidates[i].latency(gpu) or float("inf"))
             if every else list(front.fronts[gpu]))
    for rank, index in enumerate(order[:members]):
        cand = front.candidates[index]
        model, runs_as = deployed(cand, device)
        mine = [b.to(device) for b in batches_for(cand, size, seed=rank + 1)]
        prof = time_models({"baseline": (base_model, base_batches), "member": (model, mine)}, warmup=5,
                           repeats=rounds * 5, block=5, threads=None, profiler=profiler)
        b_ms, m_ms = prof["baseline"].at(size).p50_ms, prof["member"].at(size).p50_ms
        auc, base_auc = cand.evaluation.auc, base.evaluation.auc
        row = {"index": index, "key": cand.key, "auc": auc, "compression": cand.arch.compression.label,
               "runs_as": runs_as, "predicted_ms": cand.latency(gpu), "source": cand.evaluation.latency_source[gpu],
               "measured_ms": m_ms, "baseline_measured_ms": b_ms, "measured_speedup": b_ms / m_ms,
               "predicted_speedup": base.latency(gpu) / cand.latency(gpu),
               "prediction_error": cand.latency(gpu) / m_ms - 1.0,
               "arch": {"interaction": cand.arch.spec.interaction, "features": len(cand.arch.features),
                        "dims": list(cand.arch.spec.dims()), "bottom": list(cand.arch.spec.bottom_mlp),
                        "top": list(cand.arch.spec.top_mlp)}}
        row["dominates_strict"] = auc >= base_auc and row["measured_speedup"] >= SPEEDUP
        row["dominates_within_tolerance"] = (tolerance is not None and auc >= base_auc - tolerance
                                             and row["measured_speedup"] >= SPEEDUP)
        rows.append(row)
        log(f"member {rank + 1} (trial key {cand.key[:10]}, AUC {auc:.4f}, {runs_as}): {m_ms:.3f} ms measured vs "
            f"{row['predicted_ms']:.3f} predicted; baseline {b_ms:.3f} ms -> {row['measured_speedup']:.2f}x")
        del model
        if device == "cuda":
            torch.cuda.empty_cache()
    measured_front = [rows[i]["index"] for i in non_dominated_sort(
        [(r["auc"], r["measured_ms"]) for r in rows], (True, False))[0]] if rows else []
    predicted = [r["predicted_ms"] for r in rows]
    return {"gpu": gpu, "batch_size": size, "timed": "every candidate" if every else "the GPU front",
            "measured_front": measured_front,
            "spearman_predicted_vs_measured": _spearman(predicted, [r["measured_ms"] for r in rows]),
            "baseline": {"auc": base.evaluation.auc, "runs_as": base_runs_as, "predicted_ms": base.latency(gpu)},
            "auc_tolerance": tolerance, "members": rows,
            "search_said": {"dominates_strict": verdict.dominates_strict if verdict else None,
                            "dominates_within_tolerance": verdict.dominates_tolerant if verdict else None},
            "measured": {"dominates_strict": any(r["dominates_strict"] for r in rows),
                         "dominates_within_tolerance": any(r["dominates_within_tolerance"] for r in rows)}}


def _spearman(a: list[float], b: list[float]) -> float | None:
    if len(a) < 3:
        return None
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def yes(flag: bool) -> str:
    return "yes" if flag else "no"


def markdown(rec: dict) -> str:
    r = rec["result"]
    lines = [f"# The search's {r['gpu']} front, re-timed on {rec['device']}", "",
             f"Command: `{rec['command']}`  ", f"Front: `{rec['front']}`  ", f"Date: {rec['date']}  ",
             f"Batch {r['batch_size']}; each member timed round-robin with the baseline (FP32, eager) in its own run, "
             f"{rec['rounds']} rounds of 5 calls over 4 distinct batches of synthetic ids, a device sync after each "
             "call; members run in crossrec's GPU form (int8/int4 tables and int8 dense layers as fp16 tables + "
             "bf16 dense), random weights; AUC from the search. Predicted = what the search used.", "",
             "| # | AUC | compression (runs as) | architecture | predicted ms | measured ms | baseline ms | "
             "predicted × | measured × | prediction error | dominates (strict / within tol.) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for i, m in enumerate(r["members"], 1):
        a = m["arch"]
        arch = f"{a['interaction']}, {a['features']} feats, bottom {a['bottom']}, top {a['top']}"
        lines.append(f"| {i} | {m['auc']:.4f} | {m['compression']} ({m['runs_as']}) | {arch} | "
                     f"{m['predicted_ms']:.4g} | {m['measured_ms']:.4g} | {m['baseline_measured_ms']:.4g} | "
                     f"{m['predicted_speedup']:.2f}× | {m['measured_speedup']:.2f}× | {m['prediction_error']:+.0%} | "
                     f"{yes(m['dominates_strict'])} / {yes(m['dominates_within_tolerance'])} |")
    s, m = r["search_said"], r["measured"]
    rho = r["spearman_predicted_vs_measured"]
    lines += ["", f"Timed: {r['timed']} ({len(r['members'])}). Measured front (AUC up, measured ms down): candidates "
              f"{r['measured_front']}. Spearman rank correlation, predicted vs measured ms: "
              f"{'-' if rho is None else format(rho, '.3f')}."]
    lines += ["", f"Baseline AUC {r['baseline']['auc']:.4f}, predicted {r['baseline']['predicted_ms']:.4g} ms; AUC "
              f"tolerance {'none' if r['auc_tolerance'] is None else format(r['auc_tolerance'], '.4f')}.",
              f"Dominance (≥ {SPEEDUP:g}× faster): the search said strict {s['dominates_strict']}, within tolerance "
              f"{s['dominates_within_tolerance']}; measured here: strict {m['dominates_strict']}, within tolerance "
              f"{m['dominates_within_tolerance']}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("front", type=Path, help="front.json of a search with a GPU among its devices")
    p.add_argument("--out", type=Path, required=True, help="folder for gpu_front.md and gpu_front.json")
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                   help="cuda (default): the measurement; cpu: a plumbing check of the same code")
    p.add_argument("--members", type=int, default=12, help="fastest GPU front members to time (default 12)")
    p.add_argument("--rounds", type=int, default=10, help="rounds of 5 calls per member and baseline (default 10)")
    p.add_argument("--batch-size", type=int, default=None, help="default: the front's GPU batch size (4096)")
    p.add_argument("--all", action="store_true", help="time every candidate of the search (fastest predicted first, "
                   "up to --members), not only the GPU front: the measured front and the predictor's ranking")
    status, args, log = start_gpu_script(p, argv, markdown)
    if status is not None:
        return status
    start = time.perf_counter()
    front = ParetoFront.load(args.front)
    gpu = gpu_device(front)
    size = args.batch_size or int(front.info.get("batch_size", {}).get(gpu, 4096))
    name = torch.cuda.get_device_name(0) if args.device == "cuda" else PLUMBING
    log(f"{gpu} front of {args.front}: {len(front.fronts[gpu])} members; timing up to {args.members} on {name}")
    result = retime(front, gpu, args.device, size, args.members, args.rounds, log, every=args.all)
    rec = {"benchmark": "gpu_front", "device": name, "torch": torch.__version__, "front": str(args.front),
           "command": "python3 benchmarks/gpu_front.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "rounds": args.rounds,
           "source": "measured" if args.device == "cuda" else "plumbing", "result": result,
           "seconds": round(time.perf_counter() - start, 1)}
    write_page(args.out, "gpu_front", rec, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
