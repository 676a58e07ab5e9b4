"""The survey's Table 1 and Figure 1 on measured data (issue #3).

    python benchmarks/table1.py movielens            # MovieLens-100K (random split)
    python benchmarks/table1.py criteo               # the 10k-row Criteo sample
    python benchmarks/table1.py synthetic [--max-rows 1000000 --rows 1000000]   # >= 1 GB FP32 tables

Trains a DLRM baseline, builds the Table 1 variants (INT8, structured pruning 50%, distillation,
combined), measures each on this CPU (test AUC, bytes on disk, samples/s at batch 512) and gives
the GPU column from the local CUDA GPU when there is one and the variant has CUDA kernels (bf16
dense, fp16 tables; never run yet: no GPU has been lent), else from the roofline model (labelled
modeled). Figure 1 plots
FP32/BF16/INT8/INT4 variants: CPU measured, GPU and FPGA modeled.

CPU speed-ups are **pairwise**: each variant is built, timed round-robin with the FP32 baseline alone
(blocks of 10 calls per model over 8 distinct test batches, 2 threads), scored and freed, so no
variant's memory slows another's lookups; a row's samples/s is its ratio in its pair times the
baseline's mean over all pairs. **Combined** = distillation into a compact student (dim d/8, at least
8; its tables start fresh), 50% structured pruning, then the quantization that
``auto_compress`` finds fastest on this CPU within what is left of the 1% budget.

Writes benchmarks/results/table1_<data>.json and docs/results/table1_<data>.{md,csv}, figure1_<data>.png.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import gc
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import DOCS, RESULTS, environment
from torch import nn

from crossrec.artifact import save_artifact
from crossrec.compress import (
    AccuracyBudget,
    CompressContext,
    DenseQuantConfig,
    EmbeddingQuantConfig,
    PipelineConfig,
    auto_compress,
    compress_,
    relative_drop,
)
from crossrec.data.sources import load_splits
from crossrec.data.synthetic import SyntheticConfig, generate
from crossrec.errors import ConfigError
from crossrec.hardware import estimate, get_device, profile_many
from crossrec.models import ModelSpec, build
from crossrec.report import figure1, write_table1
from crossrec.runtime import load as load_runtime
from crossrec.train import TrainConfig, evaluate, train

GPU, FPGA = "h100-sxm", "alveo-u280"


def effective_spec(model: nn.Module) -> ModelSpec:
    """The spec the model's *current* layers implement (pruning/distillation change widths)."""
    spec = model.spec
    def widths(seq) -> tuple[int, ...]:
        if hasattr(seq, "dims"):  # Int8StaticMLP: (in, out) per layer
            return tuple(o for _, o in seq.dims)
        return tuple(m.out_features for m in seq if hasattr(m, "out_features"))

    bottom = widths(model.bottom) if model.bottom is not None else ()
    top = widths(model.top)[:-1] if model.top is not None else ()
    return dataclasses.replace(spec, bottom_mlp=bottom, top_mlp=top)


def precisions(model: nn.Module) -> tuple[str, str]:
    """(embedding precision, dense precision) of a (compressed) model, for the roofline model."""
    emb, dense = "fp32", "fp32"
    for cfg in getattr(model, "compression_recipe", []):
        for step in getattr(cfg, "steps", (cfg,)):
            if isinstance(step, EmbeddingQuantConfig):
                emb = step.precision
            if isinstance(step, DenseQuantConfig):
                dense = "int8" if step.mode == "int8-static" else step.mode
    return emb, dense


def disk_bytes(model, schema) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        return (save_artifact(Path(tmp) / "a", model, schema) / "weights.safetensors").stat().st_size


def gpu_figure(model, batch, device_name: str) -> dict:
    emb, dense = precisions(model)
    if torch.cuda.is_available() and device_name == GPU:  # pragma: no cover - no GPU session has run this yet
        measured = cuda_figure(model, batch)
        if measured is not None:
            return measured
    dev = get_device(device_name)
    if dense not in dev.peak_tops:  # e.g. no fp32 on the FPGA: model its nearest supported format
        dense = next((p for p in ("bf16", "fp16", "int8") if p in dev.peak_tops), dense)
    try:
        est = estimate(effective_spec(model), dev, batch, embedding_precision=emb, dense_precision=dense)
    except ConfigError as exc:
        return {"samples_per_s": float("nan"), "latency_ms": float("nan"), "source": "modeled",
                "device": device_name, "unsupported": str(exc)}
    return {"samples_per_s": est.samples_per_s, "latency_ms": est.latency_ms, "source": "modeled",
            "device": device_name}


def cuda_figure(model, batch: int) -> dict | None:  # pragma: no cover - needs a CUDA GPU
    """Measured on the local CUDA GPU (bf16 dense, fp16 tables) when the variant has CUDA kernels, else None
    (the caller models it; that cell's ratio is then modeled against a measured baseline — rough). Written
    for a GPU session; never run yet (no GPU was lent so far)."""
    from crossrec.runtime.compiled import example_batch
    from crossrec.runtime.cuda import cuda_blockers

    if cuda_blockers(model):
        return None
    # the FP32 baseline runs in fp32 on the GPU too; compressed variants in bf16 dense / fp16 tables
    fp32 = not getattr(model, "compression_recipe", None)
    rt = load_runtime(model, "cuda", **({"dtype": "fp32", "table_dtype": "fp32"} if fp32 else {}))
    b = example_batch(model.spec.num_dense, len(model.spec.tables), batch)
    bp = profile_many({"v": rt}, lambda _n: b, batch_sizes=(batch,), device="cuda", repeats=40)["v"].at(batch)
    return {"samples_per_s": bp.samples_per_s, "latency_ms": bp.p50_ms, "source": "measured",
            "device": rt.info["gpu"]}


def time_pairs(baseline: nn.Module, builders: dict, test, batch_size: int = 512):
    """Yield (name, model, ratio, p50 ms) per builder: each variant timed round-robin with the baseline
    alone (blocks of 10 calls, 8 distinct test batches, 2 threads); the caller frees the model."""
    # 8 distinct batches (rows wrap around on small test sets, e.g. the 1,000-row Criteo sample split)
    bigs = test.distinct_batches(batch_size, 8)
    for name, make in builders.items():
        print(f"building {name}", flush=True)
        m = make()
        prof = profile_many({"b": baseline, "v": m}, lambda _b: bigs, batch_sizes=(batch_size,), repeats=40,
                            threads=2, block=10)
        b, v = prof["b"].at(batch_size), prof["v"].at(batch_size)
        yield name, m, v.samples_per_s / b.samples_per_s, b.samples_per_s, v.p50_ms


def measure(baseline: nn.Module, builders: dict, schema, test, batch_size: int = 512) -> dict[str, dict]:
    out, base_rates = {}, []
    for name, m, ratio, base_rate, p50 in time_pairs(baseline, builders, test, batch_size):
        base_rates.append(base_rate)
        out[name] = {"name": name, "auc": evaluate(m, test).auc, "size_bytes": disk_bytes(m, schema),
                     "ratio": ratio, "cpu": {"latency_ms": p50, "source": "measured"},
                     "gpu": gpu_figure(m, batch_size, GPU), "fpga": gpu_figure(m, batch_size, FPGA),
                     "recipe": [c.to_dict() for c in getattr(m, "compression_recipe", [])]}
        print(f"  {name}: {ratio:.2f}x, AUC {out[name]['auc']:.4f}", flush=True)
        del m
        gc.collect()
    mean = sum(base_rates) / len(base_rates)
    base = {"name": "Baseline (FP32)", "auc": evaluate(baseline, test).auc, "size_bytes": disk_bytes(baseline, schema),
            "ratio": 1.0, "cpu": {"samples_per_s": mean, "source": "measured"},
            "gpu": gpu_figure(baseline, batch_size, GPU), "fpga": gpu_figure(baseline, batch_size, FPGA)}
    base["cpu"]["latency_ms"] = batch_size / mean * 1e3
    for v in out.values():  # samples/s = the pairwise ratio x the baseline's mean over all pairs
        v["cpu"]["samples_per_s"] = v["ratio"] * mean
    return {"Baseline (FP32)": base, **out}


def splits_for(args):
    if args.data == "synthetic":
        cfg = SyntheticConfig(rows=args.rows, max_rows=args.max_rows, seed=0)
        return generate(cfg).split((0.8, 0.1, 0.1), seed=0)
    return tuple(load_splits({"movielens": "movielens-100k"}.get(args.data, args.data), seed=0))


def baseline_spec(args, schema) -> ModelSpec:
    dim = 64 if args.data == "synthetic" else 16
    return ModelSpec.for_schema(schema, interaction="dot", embedding_dim=dim, bottom_mlp=(512, 256, dim),
                                top_mlp=(512, 256), name="dlrm")


def table1_variants(spec: ModelSpec, epochs: int) -> dict[str, object]:
    """Name -> compression config for the survey's Table 1 rows (the combined row is built by ``combined``)."""
    from crossrec.compress.distill import DistillConfig, StudentSpec
    from crossrec.compress.prune import StructuredPruneConfig

    d = spec.embedding_dim
    # INT8: row-wise int8 tables + static int8 MLPs (calibrated on the training data).
    int8 = (EmbeddingQuantConfig(precision="int8"), DenseQuantConfig(mode="int8-static"))
    prune = StructuredPruneConfig(ratio=0.5, finetune_epochs=1)
    # Student: same tables, a quarter of the dense widths (its tables are the teacher's, kept frozen).
    distill = DistillConfig(student=StudentSpec(bottom_mlp=(128, 64, d), top_mlp=(128, 64)), epochs=epochs,
                            freeze_tables=True)
    return {"INT8 (tables + dense)": PipelineConfig(steps=int8), "Structured pruning 50%": prune,
            "Distillation": distill}


def combined_student(spec: ModelSpec, epochs: int, dim: int | None = None) -> PipelineConfig:
    """Distill into a compact student (dim d/8 by default, at least 8; MLP widths 8*dim-dim / 8*dim; its tables
    start fresh: projecting the teacher's measured worse), then prune half of its hidden neurons with a short
    fine-tune."""
    from crossrec.compress.distill import DistillConfig, StudentSpec
    from crossrec.compress.prune import StructuredPruneConfig

    d = dim or max(8, spec.embedding_dim // 8)
    student = StudentSpec(embedding_dim=d, bottom_mlp=(8 * d, d), top_mlp=(8 * d,))
    return PipelineConfig(steps=(DistillConfig(student=student, epochs=epochs),
                                 StructuredPruneConfig(ratio=0.5, finetune_epochs=1)))


def combined(model: nn.Module, ctx: CompressContext, base_auc: float, epochs: int, budget: float = 0.01,
             dim: int | None = None):
    """The combined row: the pruned student, then the fastest quantization ``auto_compress`` finds inside
    what the student left of ``budget`` (relative AUC drop vs the FP32 baseline, on validation rows)."""
    student = compress_(copy.deepcopy(model), combined_student(model.spec, epochs, dim), ctx)
    left = budget - relative_drop(base_auc, evaluate(student, ctx.val_data).auc)
    if left <= 0:
        print(f"combined: the student alone loses more than {budget:.1%}; no quantization on top", flush=True)
        return student, None
    sel, variant = auto_compress(student, ctx.val_data, AccuracyBudget(max_relative_auc_drop=left),
                                 train_data=ctx.train_data, mixed_precision=False, repeats=20, threads=2)
    print(f"combined: auto_compress chose {sel.chosen.name!r} within {left:.2%}", flush=True)
    if sel.chosen.scores["throughput"] <= sel.baseline.scores["throughput"]:  # quantizing a tiny student can slow it
        print(f"combined: {sel.chosen.name!r} measured slower than the student itself; keeping the student", flush=True)
        return student, sel
    return variant, sel


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", choices=("movielens", "criteo", "synthetic"))
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--max-rows", type=int, default=1_000_000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--student-dim", type=int, default=None, help="embedding dim of the combined row's student "
                   "(default: the baseline's / 8, at least 8)")
    p.add_argument("--student-epochs", type=int, default=None, help="distillation epochs of the combined row's "
                   "student (default: --epochs)")
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    env, start = environment(), time.perf_counter()
    tr, va, te = splits_for(args)
    model = build(baseline_spec(args, tr.schema), seed=0)
    train(model, tr, va, TrainConfig(epochs=args.epochs, batch_size=1024, embedding_lr=3e-3 if args.data != "synthetic"
                                     else 3e-2, embedding_l2=1e-2 if args.data != "synthetic" else 0.0, patience=2))
    ctx = CompressContext(train_data=tr, val_data=va, log=print)
    base_val = evaluate(model, va).auc
    builders = {name: (lambda cfg=cfg: compress_(copy.deepcopy(model), cfg, ctx))
                for name, cfg in table1_variants(model.spec, args.epochs).items()}
    chosen = {}

    def build_combined():
        variant, sel = combined(model, ctx, base_val, args.student_epochs or args.epochs, dim=args.student_dim)
        chosen["selection"] = sel.to_dict() if sel is not None else None
        return variant

    builders["Combined (distill + prune + quantize)"] = build_combined
    for prec in ("bf16", "int8", "int4"):  # Figure 1: tables and dense at one precision where it exists
        steps = [EmbeddingQuantConfig(precision=prec)]
        if prec in ("bf16", "int8"):
            steps.append(DenseQuantConfig(mode="int8-static" if prec == "int8" else prec))
        builders[f"fig1 {prec}"] = lambda steps=tuple(steps): compress_(copy.deepcopy(model),
                                                                         PipelineConfig(steps=steps), ctx)
    measured = measure(model, builders, tr.schema, te)
    variants = [v for k, v in measured.items() if not k.startswith("fig1")]
    fig = []
    for key, prec in (("Baseline (FP32)", "fp32"), ("fig1 bf16", "bf16"), ("fig1 int8", "int8"),
                      ("fig1 int4", "int4")):
        m = measured[key]
        fig.append({"precision": prec, "device": "cpu (this machine)", "latency_ms": m["cpu"]["latency_ms"],
                    "auc": m["auc"], "source": "measured"})
        for dev in ("gpu", "fpga"):
            fig.append({"precision": prec, "device": m[dev]["device"], "latency_ms": m[dev]["latency_ms"],
                        "auc": m["auc"], "source": m[dev]["source"]})
    results = {"title": f"Table 1 on {args.data}: compression of a DLRM, ratios vs FP32 eager in the same run",
               "machine": f"{env['cpu']}, {env['cores']} cores, torch {env['torch']}, {env['date']}",
               "command": f"python benchmarks/table1.py {' '.join(argv or sys.argv[1:])}",
               "notes": "CPU: measured at batch 512, interleaved; GPU: " + GPU + ", FPGA: " + FPGA + " (modeled); "
                        "accuracy: test AUC measured on CPU; CPU speed-ups pairwise (see the module docstring)",
               "variants": variants, "figure1": fig, "combined_selection": chosen.get("selection"),
               "seconds": round(time.perf_counter() - start), "env": env}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"table1_{args.data}.json").write_text(json.dumps(results, indent=1))
    md, _ = write_table1(results, DOCS, stem=f"table1_{args.data}")
    figure1(fig, DOCS / f"figure1_{args.data}.png", title=f"Figure 1 on {args.data}", subtitle=results["machine"])
    print(md.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
