"""Memory bandwidth of this machine, STREAM-style, and the fused FP32 embedding lookup against it (issue #3).

    python benchmarks/stream.py [--array-mb 512] [--repeats 7] [--table-rows-cap 1000000]

STREAM kernels (McCalpin) on float64 arrays far larger than the L3 cache, best of ``--repeats``:
``copy`` (c = a: 16 B per element) and ``triad`` (a = b + s*c: 24 B per element) with torch (its intra-op
threads) and numpy ``copy`` / ``add`` (one thread). Bytes follow STREAM's convention (no write-allocate
traffic). ``OPENBLAS_CORETYPE`` only selects BLAS kernels: it does not affect copy/triad.

Fused lookup: one ``embedding_bag`` (sum) over 26 Criteo-Kaggle-shaped FP32 tables of dim 64 concatenated
(cardinalities capped at ``--table-rows-cap``: 1M rows -> 1.43 GB), uniform random ids, one id per bag, at
batch 2048 (rotating through batches so the looked-up rows do not sit in the L3) and batch 1. Bytes =
looked-up rows x 256 B (ids, offsets and the pooled output are not counted). The Criteo shape includes
tiny tables (3-30 rows) that stay in cache; the ``uniform`` variant draws ids over all rows of the
concatenated table instead, so nearly every row comes from DRAM; the ``zipf`` variant takes the ids of
crossrec's synthetic Criteo data (Zipf(1.05) per table: hot rows hit the cache). Issue #3 target: the
fused lookup at batch 2048 (Criteo-shaped) reaches >= 60% of STREAM (best of torch copy/triad).

Also records ``THP_MEM_ALLOC_ENABLE`` (torch's transparent-huge-page allocation, read at start-up): on the
2-vCPU KVM dev machine it made the uniform lookup slower (6 vs 10 GB/s), so it is left off by default —
it advises every large allocation, so each call's output buffer is faulted in 2 MiB at a time. The
``*_hugepages`` rows instead copy only the table into ``MADV_HUGEPAGE`` memory
(:mod:`crossrec.models.hugepages`; skipped where THP is ``never``).

Appends one JSON line with the environment and load averages to benchmarks/results/stream.jsonl.
The machine is shared: a load average above ~0.5 at start means other work competed for the 2 cores.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from common import append_jsonl, environment

from crossrec.data.synthetic import CRITEO_KAGGLE_CARDINALITIES, SyntheticConfig, generate
from crossrec.models.hugepages import hugepage_copy, thp_mode

DIM = 64


Kernel = tuple  # (fn, calls per timing, bytes per call)


def stream_kernels(array_mb: int) -> dict[str, Kernel]:
    n = array_mb * 2**20 // 8
    a, b, c = (np.full(n, v) for v in (1.0, 2.0, 0.0))
    ta, tb, tc = (torch.from_numpy(x) for x in (a, b, c))
    return {"torch_copy": (lambda: tc.copy_(ta), 1, 16 * n),
            "torch_triad": (lambda: torch.add(tb, tc, alpha=3.0, out=ta), 1, 24 * n),
            "numpy_copy": (lambda: np.copyto(c, a), 1, 16 * n),
            "numpy_add": (lambda: np.add(a, b, out=c), 1, 24 * n)}


def lookup_kernels(rows_cap: int, seed: int = 0) -> tuple[dict[str, Kernel], dict]:
    sizes = [min(c, rows_cap) for c in CRITEO_KAGGLE_CARDINALITIES]
    total, f = sum(sizes), len(sizes)
    base = torch.tensor([0, *np.cumsum(sizes)[:-1].tolist()], dtype=torch.int64)  # (F,) first row of each table
    weight = torch.empty(total, DIM).uniform_(-0.05, 0.05)  # (rows, 64) fp32, every page touched
    gen = torch.Generator().manual_seed(seed)
    card = torch.tensor(sizes, dtype=torch.float64)

    def criteo_ids(b: int) -> torch.Tensor:  # (b*F,) sample-major, uniform within each table
        local = (torch.rand(b, f, generator=gen, dtype=torch.float64) * card).long()
        return (local + base).reshape(-1)

    def uniform_ids(b: int) -> torch.Tensor:  # (b*F,) uniform over the whole concatenated table
        return torch.randint(0, total, (b * f,), generator=gen)

    zipf = iter(np.asarray(generate(SyntheticConfig(rows=32 * 2048, num_dense=1, max_rows=rows_cap, seed=seed)).ids)
                .reshape(32, 2048, f))

    def zipf_ids(b: int) -> torch.Tensor:  # (b*F,) the synthetic data's Zipf(1.05) ids per table
        return (torch.from_numpy(next(zipf)[:b].copy()) + base).reshape(-1)

    kernels = {}
    # the same table copied into transparent huge pages (crossrec.models.hugepages), when the kernel offers them
    huge = hugepage_copy(weight)
    # Rotate through distinct batches: 32 x 2048 x 26 rows x 256 B = 436 MB touched, far beyond the 32 MiB L3.
    for name, make, b, batches, table in (("lookup_b2048", criteo_ids, 2048, 32, weight),
                                          ("lookup_b2048_uniform", uniform_ids, 2048, 32, weight),
                                          ("lookup_b2048_zipf", zipf_ids, 2048, 32, weight),
                                          ("lookup_b1", criteo_ids, 1, 2048, weight),
                                          ("lookup_b2048_hugepages", criteo_ids, 2048, 32, huge),
                                          ("lookup_b2048_uniform_hugepages", uniform_ids, 2048, 32, huge)):
        if table is None:
            continue
        ids = [make(b) for _ in range(batches)]
        offsets = torch.arange(0, b * f + 1, dtype=torch.int64)
        state = {"i": 0}

        def call(ids=ids, offsets=offsets, state=state, table=table):
            state["i"] = (state["i"] + 1) % len(ids)
            return F.embedding_bag(ids[state["i"]], table, offsets, mode="sum", include_last_offset=True)

        kernels[name] = (call, batches, b * f * DIM * 4)
    info = {"tables": f, "dim": DIM, "rows": total, "table_gb": total * DIM * 4 / 1e9, "rows_cap": rows_cap,
            "thp": thp_mode(), "hugepage_rows": huge is not None}
    return kernels, info


def measure(kernels: dict[str, Kernel], repeats: int) -> dict[str, dict]:
    """Best time per call over ``repeats`` rounds; every round runs every kernel once (interleaved, so
    noise from other jobs on the shared cores hits all kernels alike)."""
    best = dict.fromkeys(kernels, float("inf"))
    with torch.inference_mode():
        for fn, _, _ in kernels.values():
            fn()  # warm: page faults, thread pool start
        for _ in range(repeats):
            for name, (fn, inner, _) in kernels.items():
                t0 = time.perf_counter()
                for _ in range(inner):
                    fn()
                best[name] = min(best[name], (time.perf_counter() - t0) / inner)
    return {name: {"gbps": kernels[name][2] / sec / 1e9, "us_per_call": sec * 1e6} for name, sec in best.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--array-mb", type=int, default=512, help="size of each STREAM array (3 arrays)")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--table-rows-cap", type=int, default=1_000_000)
    args = ap.parse_args()
    env = environment()
    env["load_avg_at_start"] = os.getloadavg()
    env["THP_MEM_ALLOC_ENABLE"] = os.environ.get("THP_MEM_ALLOC_ENABLE")
    t0 = time.perf_counter()
    lookups, info = lookup_kernels(args.table_rows_cap)
    r = measure({**stream_kernels(args.array_mb), **lookups}, args.repeats)
    env["load_avg_at_end"] = os.getloadavg()
    stream_gbps = max(r["torch_copy"]["gbps"], r["torch_triad"]["gbps"])
    ratio = r["lookup_b2048"]["gbps"] / stream_gbps
    record = {"benchmark": "stream", "results": r, "lookup_tables": info, "array_mb": args.array_mb,
              "repeats": args.repeats, "stream_gbps": stream_gbps, "lookup_over_stream": ratio,
              "uniform_lookup_over_stream": r["lookup_b2048_uniform"]["gbps"] / stream_gbps,
              "zipf_lookup_over_stream": r["lookup_b2048_zipf"]["gbps"] / stream_gbps, "target_ratio": 0.6,
              "hugepage_lookup_over_stream": r["lookup_b2048_hugepages"]["gbps"] / stream_gbps
              if "lookup_b2048_hugepages" in r else None,
              "wall_s": round(time.perf_counter() - t0, 1), "env": env}
    append_jsonl("stream", record)
    print(f"STREAM ({args.array_mb} MiB float64 arrays, best of {args.repeats}; torch threads {env['torch_threads']}):")
    for k in ("torch_copy", "torch_triad", "numpy_copy", "numpy_add"):
        print(f"  {k:12s} {r[k]['gbps']:6.1f} GB/s")
    print(f"Fused FP32 lookup, {info['tables']} tables x dim {DIM}, {info['table_gb']:.2f} GB, uniform random ids:")
    for k, what in (("lookup_b2048", "batch 2048, Criteo-shaped"),
                    ("lookup_b2048_uniform", "batch 2048, over all rows"),
                    ("lookup_b2048_zipf", "batch 2048, Zipf(1.05) ids"), ("lookup_b1", "batch 1, Criteo-shaped"),
                    ("lookup_b2048_hugepages", "b2048, Criteo, huge pages"),
                    ("lookup_b2048_uniform_hugepages", "b2048, all rows, huge pages")):
        if k not in r:
            continue
        print(f"  {what:26s} {r[k]['gbps']:6.2f} GB/s  ({r[k]['us_per_call']:.1f} us/call)")
    print(f"lookup / STREAM = {ratio:.2f} (over all rows: {record['uniform_lookup_over_stream']:.2f}, "
          f"Zipf: {record['zipf_lookup_over_stream']:.2f}; "
          f"huge pages: {record['hugepage_lookup_over_stream'] or 0:.2f}); "
          f"target >= 0.60 [{'met' if ratio >= 0.6 else 'NOT met'}]")
    print(f"load average at start {env['load_avg_at_start']}, at end {env['load_avg_at_end']}; {record['wall_s']} s")


if __name__ == "__main__":
    main()
