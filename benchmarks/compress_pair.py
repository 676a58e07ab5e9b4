"""Pairwise check of the compression speed-up: the FP32 baseline and ONE variant alone in a process.

    python benchmarks/compress_pair.py [--max-rows 1000000] [--repeats 60]

benchmarks/compress.py holds every variant and two ONNX Runtime sessions at once (~9 GB for the
1.43 GB model), which slows the FP32 lookups most; this script measures the selected variant
(int8 tables + int8-static dense) against FP32 with nothing else resident. Random weights (speed
does not depend on them), activation scales calibrated on synthetic rows; calls interleaved,
batch 512, 2 threads, median. Appends to benchmarks/results/compress_pair.jsonl.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time

import torch
from common import append_jsonl, environment

from crossrec.compress import CompressContext, DenseQuantConfig, EmbeddingQuantConfig, PipelineConfig, compress_
from crossrec.data.synthetic import SyntheticConfig, generate
from crossrec.models import ModelSpec, build


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--max-rows", type=int, default=1_000_000)
    p.add_argument("--repeats", type=int, default=60)
    p.add_argument("--batch-size", type=int, default=512)
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    data = generate(SyntheticConfig(rows=20_000, max_rows=args.max_rows, seed=0))
    spec = ModelSpec.for_schema(data.schema, interaction="dot", embedding_dim=64, bottom_mlp=(512, 256, 64),
                                top_mlp=(512, 256))
    fp32 = build(spec, seed=0).eval()
    variant = compress_(copy.deepcopy(fp32), PipelineConfig(steps=(EmbeddingQuantConfig(precision="int8"),
                                                                 DenseQuantConfig(mode="int8-static"))),
                        CompressContext(train_data=data))
    batch = next(data.batches(args.batch_size))
    times = {"fp32": [], "int8 tables + int8-static dense": []}
    with torch.inference_mode():
        for _ in range(5):
            fp32(batch.dense, batch.ids, batch.offsets)
            variant(batch.dense, batch.ids, batch.offsets)
        for _ in range(args.repeats):
            for name, m in (("fp32", fp32), ("int8 tables + int8-static dense", variant)):
                t = time.perf_counter()
                m(batch.dense, batch.ids, batch.offsets)
                times[name].append(time.perf_counter() - t)
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    rate = {k: args.batch_size / v for k, v in med.items()}
    ratio = rate["int8 tables + int8-static dense"] / rate["fp32"]
    append_jsonl("compress_pair", {"benchmark": "compress_pair", "args": vars(args), "samples_per_s": rate,
                                   "speedup": ratio, "env": environment()})
    print(f"FP32 {rate['fp32']:,.0f} samples/s; int8 tables + int8-static dense "
          f"{rate['int8 tables + int8-static dense']:,.0f} samples/s: {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
