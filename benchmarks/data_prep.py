"""Criteo preprocessing throughput: ``prepare_criteo`` in hash and vocab mode, against baselines.

Generates a large Criteo-format TSV in a temp dir (by resampling the real rows of
``../shared/data/criteo-sample/train.txt`` when present, else synthetic rows in the same format),
then times, excluding file generation:

* ``arrow_parse_only``: Arrow's CSV reader with every column as raw bytes (no decode, no output) —
  the floor any Arrow-based reader pays;
* ``prepare_hash`` / ``prepare_vocab``: ``prepare_criteo`` end to end (parse, validate, decode,
  encode, write the memory-mapped cache), each into a fresh cache;
* ``python_per_line``: an obvious per-line Python reader (split, int(), int(x, 16)) on the first
  ``--python-rows`` rows, as the naive baseline.

Prints rows/s (wall) and rows per CPU-second (less sensitive to other jobs on a shared machine),
ratios, and appends one JSON line with the environment to ``benchmarks/results/data_prep.jsonl``. Usage::

    .venv/bin/python benchmarks/data_prep.py [--rows 1000000] [--repeats 1]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv

from crossrec.data.categorical import CategoricalEncoding
from crossrec.data.criteo import CRITEO_DENSE, CRITEO_SPARSE, CriteoConfig, prepare_criteo

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT.parent / "shared" / "data" / "criteo-sample" / "train.txt"
RESULTS = ROOT / "benchmarks" / "results" / "data_prep.jsonl"
NAMES = ["label", *CRITEO_DENSE, *CRITEO_SPARSE]


def generate(path: Path, rows: int, seed: int = 0) -> str:
    """Write ``rows`` Criteo lines to ``path``; returns how they were made."""
    rng = np.random.default_rng(seed)
    if SAMPLE.is_file():
        lines = SAMPLE.read_bytes().split(b"\n")[:-1]
        source = f"resampled from {SAMPLE.name} ({len(lines)} real rows)"
        make = lambda n: [lines[i] for i in rng.integers(0, len(lines), n)]
    else:
        source = "synthetic (../shared/data absent)"
        make = lambda n: _synthetic(rng, n)
    with path.open("wb") as f:
        for start in range(0, rows, 100_000):
            f.write(b"\n".join(make(min(100_000, rows - start))) + b"\n")
    return source


def _synthetic(rng: np.random.Generator, n: int) -> list[bytes]:
    labels = (rng.random(n) < 0.25).astype(int)
    ints = np.where(rng.random((n, 13)) < 0.2, -1, rng.zipf(1.5, (n, 13)) % 100_000)
    cats = (rng.zipf(1.2, (n, 26)) * 2654435761) % (1 << 32)
    missing = rng.random((n, 26)) < 0.1
    out = []
    for i in range(n):
        dense = "\t".join("" if v < 0 else str(v) for v in ints[i])
        sparse = "\t".join("" if m else f"{c:08x}" for c, m in zip(cats[i], missing[i], strict=True))
        out.append(f"{labels[i]}\t{dense}\t{sparse}".encode())
    return out


def arrow_parse_only(path: Path) -> int:
    reader = pcsv.open_csv(path, read_options=pcsv.ReadOptions(column_names=NAMES, block_size=4 << 20),
                           parse_options=pcsv.ParseOptions(delimiter="\t", quote_char=False),
                           convert_options=pcsv.ConvertOptions(column_types=dict.fromkeys(NAMES, pa.binary())))
    return sum(batch.num_rows for batch in reader)


def python_per_line(path: Path, rows: int, buckets: int) -> int:
    n = 0
    with path.open() as f:
        for n, line in enumerate(f, 1):
            fields = line.rstrip("\n").split("\t")
            _label = float(fields[0])
            _dense = [math.log1p(max(int(x), 0)) if x else 0.0 for x in fields[1:14]]
            _ids = [1 + int(c, 16) % (buckets - 1) if c else 0 for c in fields[14:]]
            if n >= rows:
                break
    return n


def timed(fn) -> tuple[int, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    rows = fn()
    return rows, time.perf_counter() - wall, time.process_time() - cpu


def environment() -> dict:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    versions = {}
    for pkg in ("numpy", "pyarrow", "torch"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "cpu": cpu,
            "cores": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)),
            "load_avg_1m_at_start": round(os.getloadavg()[0], 2), "python": platform.python_version(),
            **versions, "platform": platform.platform(), "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--repeats", type=int, default=1, help="timed runs per case; the best is reported")
    p.add_argument("--hash-size", type=int, default=1 << 22)
    p.add_argument("--min-count", type=int, default=10)
    p.add_argument("--python-rows", type=int, default=100_000)
    p.add_argument("--results", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    env = environment()
    hash_cfg = CriteoConfig(encoding=CategoricalEncoding(mode="hash", num_embeddings=args.hash_size))
    vocab_cfg = CriteoConfig(encoding=CategoricalEncoding(mode="vocab", min_count=args.min_count))
    with tempfile.TemporaryDirectory(prefix="crossrec-bench-") as tmp_name:
        tmp = Path(tmp_name)
        data = tmp / "day_0"
        source = generate(data, args.rows)
        cases = {
            "arrow_parse_only": lambda i: arrow_parse_only(data),
            "prepare_hash": lambda i: len(prepare_criteo(data, tmp / f"hash{i}", hash_cfg)),
            "prepare_vocab": lambda i: len(prepare_criteo(data, tmp / f"vocab{i}", vocab_cfg)),
            "python_per_line": lambda i: python_per_line(data, args.python_rows, args.hash_size),
        }
        results = {}
        for name, fn in cases.items():
            runs = [timed(lambda i=i, fn=fn: fn(i)) for i in range(args.repeats)]  # fresh cache per run
            rows, wall, cpu = min(runs, key=lambda r: r[1])
            results[name] = {"rows": rows, "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
                             "rows_per_s": round(rows / wall), "rows_per_cpu_s": round(rows / cpu)}
        size = data.stat().st_size
    base = results["python_per_line"]["rows_per_s"]
    for name, r in results.items():
        print(f"{name:18s} {r['rows_per_s']:>11,} rows/s ({r['rows_per_cpu_s']:>11,} per cpu-s)  "
              f"wall {r['wall_s']:6.2f} s  cpu {r['cpu_s']:6.2f} s  "
              f"x{r['rows_per_s'] / base:5.1f} vs python_per_line  "
              f"({r['rows_per_s'] / results['arrow_parse_only']['rows_per_s']:.2f} of arrow_parse_only)")
    env["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2)  # other jobs on a shared machine skew wall time
    print(f"file: {args.rows:,} rows, {size / 1e6:.0f} MB, {source}; "
          f"load avg {env['load_avg_1m_at_start']} at start, {env['load_avg_1m_at_end']} at end")
    record = {"benchmark": "data_prep", "rows": args.rows, "file_bytes": size, "source": source,
              "hash_size": args.hash_size, "min_count": args.min_count, "repeats": args.repeats,
              "results": results, "env": env}
    args.results.parent.mkdir(parents=True, exist_ok=True)
    with args.results.open("a") as f:
        f.write(json.dumps(record) + "\n")
    print(f"appended to {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
