"""The survey's Table 1 and Figure 1 on measured data (issue #3).

    python benchmarks/table1.py movielens            # MovieLens-100K (random split)
    python benchmarks/table1.py criteo               # the 10k-row Criteo sample
    python benchmarks/table1.py synthetic [--max-rows 1000000 --rows 1000000]   # >= 1 GB FP32 tables

Trains a DLRM baseline, builds the Table 1 variants (INT8, structured pruning 50%, distillation,
combined), measures each on this CPU (test AUC, bytes on disk, samples/s at batch 512 —
interleaved in one run), and gives the GPU column from a CUDA device when one is present,
else from the roofline model (labelled modeled). Figure 1 plots FP32/BF16/INT8/INT4 variants:
CPU measured, GPU and FPGA modeled. Writes benchmarks/results/table1_<data>.json and
docs/results/table1_<data>.{md,csv}, figure1_<data>.png.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import DOCS, RESULTS, environment
from torch import nn

from crossrec.artifact import save_artifact
from crossrec.compress import CompressContext, DenseQuantConfig, EmbeddingQuantConfig, PipelineConfig, compress_
from crossrec.data.sources import load_splits
from crossrec.data.synthetic import SyntheticConfig, generate
from crossrec.errors import ConfigError
from crossrec.hardware import estimate, get_device, profile_many
from crossrec.models import ModelSpec, build
from crossrec.report import figure1, write_table1
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
    if torch.cuda.is_available():  # pragma: no cover - no GPU session has run this yet
        raise NotImplementedError("measured GPU figures are not written yet (issue #3): the GPU column is "
                                  "modeled only; run on a CPU machine or add the crossrec.runtime 'cuda' path here")
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


def measure(models: dict[str, nn.Module], schema, test, batch_size: int = 512) -> dict[str, dict]:
    big = test.slice(0, batch_size).to_batch()
    profiles = profile_many(models, lambda _b: big, batch_sizes=(batch_size,), repeats=40, threads=2)
    out = {}
    for name, m in models.items():
        bp = profiles[name].at(batch_size)
        out[name] = {"name": name, "auc": evaluate(m, test).auc, "size_bytes": disk_bytes(m, schema),
                     "cpu": {"samples_per_s": bp.samples_per_s, "latency_ms": bp.p50_ms, "source": "measured"},
                     "gpu": gpu_figure(m, batch_size, GPU), "fpga": gpu_figure(m, batch_size, FPGA)}
    return out


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
    """Name -> compression config for the survey's Table 1 rows."""
    from crossrec.compress.distill import DistillConfig, StudentSpec
    from crossrec.compress.prune import StructuredPruneConfig

    d = spec.embedding_dim
    # INT8: row-wise int8 tables + static int8 MLPs (calibrated on the training data).
    int8 = (EmbeddingQuantConfig(precision="int8"), DenseQuantConfig(mode="int8-static"))
    prune = StructuredPruneConfig(ratio=0.5, finetune_epochs=1)
    # Student: same tables, a quarter of the dense widths (its tables start from the teacher's).
    distill = DistillConfig(student=StudentSpec(bottom_mlp=(128, 64, d), top_mlp=(128, 64)), epochs=epochs)
    # Combined: a half-dim student (tables trained anew, distilled), pruned, int4 tables + static int8 MLPs.
    small = DistillConfig(student=StudentSpec(embedding_dim=d // 2, bottom_mlp=(128, 64, d // 2), top_mlp=(128, 64)),
                          init_from_teacher=False, epochs=epochs)
    combined = (small, prune, EmbeddingQuantConfig(precision="int4"), DenseQuantConfig(mode="int8-static"))
    return {"INT8 (tables + dense)": PipelineConfig(steps=int8), "Structured pruning 50%": prune,
            "Distillation": distill, "Combined (distill + prune + int4/int8)": PipelineConfig(steps=combined)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", choices=("movielens", "criteo", "synthetic"))
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--max-rows", type=int, default=1_000_000)
    p.add_argument("--epochs", type=int, default=3)
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    env, start = environment(), time.perf_counter()
    tr, va, te = splits_for(args)
    model = build(baseline_spec(args, tr.schema), seed=0)
    train(model, tr, va, TrainConfig(epochs=args.epochs, batch_size=1024, embedding_lr=3e-3 if args.data != "synthetic"
                                     else 3e-2, embedding_l2=1e-2 if args.data != "synthetic" else 0.0, patience=2))
    ctx = CompressContext(train_data=tr, val_data=va, log=print)
    models = {"Baseline (FP32)": model}
    for name, cfg in table1_variants(model.spec, args.epochs).items():
        print(f"building {name}", flush=True)
        models[name] = compress_(copy.deepcopy(model), cfg, ctx)
    for prec in ("bf16", "int8", "int4"):  # Figure 1: tables and dense at one precision where it exists
        steps = [EmbeddingQuantConfig(precision=prec)]
        if prec in ("bf16", "int8"):
            steps.append(DenseQuantConfig(mode="int8-static" if prec == "int8" else prec))
        models[f"fig1 {prec}"] = compress_(copy.deepcopy(model), PipelineConfig(steps=tuple(steps)), ctx)
    measured = measure(models, tr.schema, te)
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
                        "accuracy: test AUC measured on CPU", "variants": variants, "figure1": fig,
               "seconds": round(time.perf_counter() - start), "env": env}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"table1_{args.data}.json").write_text(json.dumps(results, indent=1))
    md, _ = write_table1(results, DOCS, stem=f"table1_{args.data}")
    figure1(fig, DOCS / f"figure1_{args.data}.png", title=f"Figure 1 on {args.data}", subtitle=results["machine"])
    print(md.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
