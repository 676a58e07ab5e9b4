"""The survey's Table 1 and Figure 1 on measured data (issue #3).

    python benchmarks/table1.py movielens            # MovieLens-100K (random split)
    python benchmarks/table1.py criteo               # the 10k-row Criteo sample
    python benchmarks/table1.py synthetic [--max-rows 1000000 --rows 1000000]   # >= 1 GB FP32 tables
    python benchmarks/table1.py movielens --runtimes eager   # time the rows on eager PyTorch only

Trains a DLRM baseline, builds the Table 1 variants (INT8, structured pruning 50%, distillation,
combined), measures each on this CPU (test AUC, bytes on disk, samples/s at batch 512) and gives
the GPU column from the local CUDA GPU when there is one and the variant has CUDA kernels (bf16
dense, fp16 tables; never run yet: no GPU has been lent), else from the roofline model (labelled
modeled). Figure 1 plots
FP32/BF16/INT8/INT4 variants: CPU measured (eager, so its points compare precisions on one runtime),
GPU and FPGA modeled.

CPU speed-ups are **pairwise**: each variant is built, timed round-robin with the FP32 baseline alone
(blocks of 10 calls per model over 8 distinct test batches, 2 threads), scored and freed, so no
variant's memory slows another's lookups; a row's samples/s is its ratio in its pair times the
baseline's mean over all pairs. Each Table 1 row is timed on every runtime of ``--runtimes`` (default
``eager,script``), one pair per runtime and always against the plain **FP32 eager** baseline: ``eager``
is the variant as a PyTorch module; ``script`` is crossrec's TorchScript runtime (trace + freeze, checked
against eager at load; built from a copy of the variant with ``hugepages=True``, which moves the copy's
tables of >= 32 MiB into huge pages, so the eager figure stays one of ordinary pages). The table shows
the faster runtime, named; both figures stay in the JSON and CSV. A variant that does not trace
(``BackendError``) keeps eager, and says so. A row's AUC is measured through the runtime it shows (the
traced graph reproduces eager to rounding).
**Combined** = distillation into a compact student (dim d/8, at least 8; its tables start fresh), 50%
structured pruning, then the quantization that ``auto_compress`` finds fastest within what is left of
the 1% budget, timed on the runtime the row is deployed on (``script`` when it is in ``--runtimes``); the
student is kept un-quantized when the pick measures slower than the student on that same runtime.

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
from crossrec.errors import BackendError, ConfigError
from crossrec.hardware import estimate, get_device, profile_many
from crossrec.models import ModelSpec, build
from crossrec.report import figure1, write_table1
from crossrec.runtime import load as load_runtime
from crossrec.train import TrainConfig, evaluate, train

GPU, FPGA = "h100-sxm", "alveo-u280"
# CPU runtimes a row may be timed on, in timing order. Every ratio is against FP32 *eager*.
RUNTIMES = ("eager", "script")


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


def parse_runtimes(text: str) -> tuple[str, ...]:
    """``"script,eager"`` -> ``("eager", "script")`` (timing order); argparse reports anything else.

    >>> parse_runtimes("script, eager"), parse_runtimes("eager")
    (('eager', 'script'), ('eager',))
    """
    names = [t.strip() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in RUNTIMES]
    if not names or bad:
        raise argparse.ArgumentTypeError(f"--runtimes takes a comma-separated subset of {','.join(RUNTIMES)}; "
                                         f"got {text!r}")
    return tuple(r for r in RUNTIMES if r in names)


def time_pair(baseline: nn.Module, timed, batches, batch_size: int = 512) -> tuple[float, float, float]:
    """(variant/baseline samples/s, baseline samples/s, variant p50 ms): the two timed round-robin alone
    (blocks of 10 calls over ``batches``, 2 threads)."""
    prof = profile_many({"b": baseline, "v": timed}, lambda _b: batches, batch_sizes=(batch_size,), repeats=40,
                        threads=2, block=10)
    b, v = prof["b"].at(batch_size), prof["v"].at(batch_size)
    return v.samples_per_s / b.samples_per_s, b.samples_per_s, v.p50_ms


def runtime_figures(baseline: nn.Module, model: nn.Module, runtimes: tuple[str, ...], test, batches,
                    batch_size: int = 512) -> tuple[dict[str, dict], list[float]]:
    """{runtime: {ratio, latency_ms, auc[, info]} or {error}} for ``model`` timed on each runtime in its own
    pair with the FP32 eager baseline, and the baseline's samples/s in each pair. A runtime that cannot
    run the model (``BackendError``: the trace failed or differs from eager) is recorded, and eager is
    timed in its place when it was not asked for."""
    figs: dict[str, dict] = {}
    rates: list[float] = []
    order = list(runtimes)
    for name in order:  # grows by "eager" when the only asked-for runtime fails
        try:
            # a copy, so huge pages leave the eager variant's tables as they were (and the trace starts from no
            # eager-filled int8 weight cache: an object packed outside a trace cannot be traced)
            timed = model if name == "eager" else load_runtime(copy.deepcopy(model), name, hugepages=True)
        except BackendError as exc:
            figs[name] = {"error": str(exc)}
            print(f"  {name} failed: {exc}; keeping eager", flush=True)
            if "eager" not in order:
                order.append("eager")
            continue
        ratio, base_rate, p50 = time_pair(baseline, timed, batches, batch_size)
        rates.append(base_rate)
        figs[name] = {"ratio": ratio, "latency_ms": p50, "auc": evaluate(timed, test).auc}
        if name != "eager":
            figs[name]["info"] = dict(timed.info)
        del timed
        gc.collect()
    return figs, rates


def measure(baseline: nn.Module, builders: dict, schema, test, runtimes: tuple[str, ...] = ("eager",),
            batch_size: int = 512) -> dict[str, dict]:
    """Every builder's variant, measured pairwise (Figure 1's ``fig1 *`` ones on eager only); the table
    figure (``cpu``, ``ratio``, ``auc``) is the fastest runtime's, and ``cpu_runtimes`` keeps them all."""
    bigs = test.distinct_batches(batch_size, 8)  # rows wrap around on small test sets (1,000-row Criteo split)
    out, base_rates = {}, []
    for name, make in builders.items():
        print(f"building {name}", flush=True)
        m = make()
        v = {"name": name, "size_bytes": disk_bytes(m, schema), "gpu": gpu_figure(m, batch_size, GPU),
             "fpga": gpu_figure(m, batch_size, FPGA),
             "recipe": [c.to_dict() for c in getattr(m, "compression_recipe", [])]}
        figs, rates = runtime_figures(baseline, m, ("eager",) if name.startswith("fig1") else runtimes, test, bigs,
                                      batch_size)
        base_rates += rates
        best = max((r for r in figs if "error" not in figs[r]), key=lambda r: figs[r]["ratio"])
        out[name] = {**v, "auc": figs[best]["auc"], "ratio": figs[best]["ratio"],
                     "cpu": {"latency_ms": figs[best]["latency_ms"], "source": "measured", "runtime": best},
                     "cpu_runtimes": figs}
        shown = ", ".join(f"{r} {f['ratio']:.2f}x" if "error" not in f else f"{r} failed" for r, f in figs.items())
        print(f"  {name}: {shown}; AUC {out[name]['auc']:.4f} ({best})", flush=True)
        del m
        gc.collect()
    mean = sum(base_rates) / len(base_rates)
    base_auc = evaluate(baseline, test).auc
    base = {"name": "Baseline (FP32)", "auc": base_auc, "size_bytes": disk_bytes(baseline, schema),
            "ratio": 1.0, "cpu": {"samples_per_s": mean, "latency_ms": batch_size / mean * 1e3, "source": "measured",
                                  "runtime": "eager"},
            "gpu": gpu_figure(baseline, batch_size, GPU), "fpga": gpu_figure(baseline, batch_size, FPGA)}
    base["cpu_runtimes"] = {"eager": {"ratio": 1.0, "samples_per_s": mean, "latency_ms": base["cpu"]["latency_ms"],
                                      "auc": base_auc}}
    for v in out.values():  # samples/s = the pairwise ratio x the baseline's mean over all pairs
        v["cpu"]["samples_per_s"] = v["ratio"] * mean
        for f in v["cpu_runtimes"].values():
            if "ratio" in f:
                f["samples_per_s"] = f["ratio"] * mean
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
             dim: int | None = None, runtime: str = "eager"):
    """The combined row: the pruned student, then the fastest quantization ``auto_compress`` finds inside
    what the student left of ``budget`` (relative AUC drop vs the FP32 baseline, on validation rows), every
    candidate timed on ``runtime`` (the one the row is deployed on). Returns (model, selection or None, the
    runtime the choice was timed on: ``eager`` if ``runtime`` could not run a candidate)."""
    student = compress_(copy.deepcopy(model), combined_student(model.spec, epochs, dim), ctx)
    left = budget - relative_drop(base_auc, evaluate(student, ctx.val_data).auc)
    if left <= 0:
        print(f"combined: the student alone loses more than {budget:.1%}; no quantization on top", flush=True)
        return student, None, runtime
    pick = lambda rt: auto_compress(student, ctx.val_data, AccuracyBudget(max_relative_auc_drop=left),
                                    train_data=ctx.train_data, mixed_precision=False, repeats=20, threads=2,
                                    runtime=rt, runtime_options={"hugepages": True} if rt == "script" else None)
    try:
        sel, variant = pick(runtime)
    except BackendError as exc:  # a candidate (or the student) that does not trace: select on eager instead
        if runtime == "eager":
            raise
        print(f"combined: {runtime} could not run a candidate ({exc}); selecting on eager", flush=True)
        runtime = "eager"
        sel, variant = pick(runtime)
    print(f"combined: auto_compress chose {sel.chosen.name!r} within {left:.2%} on {runtime}", flush=True)
    # sel.baseline is the student itself, timed in the same run on the same runtime as every candidate
    if sel.chosen.scores["throughput"] <= sel.baseline.scores["throughput"]:  # quantizing a tiny student can slow it
        print(f"combined: {sel.chosen.name!r} measured slower than the student itself on {runtime}; keeping the "
              "student", flush=True)
        return student, sel, runtime
    return variant, sel, runtime


def notes(runtimes: tuple[str, ...], combined_runtime: str) -> str:
    """The results record's one-line method note (the table's ``Notes:`` line)."""
    cpu = "CPU: measured at batch 512, pairwise vs FP32 eager"
    if len(runtimes) > 1:
        cpu += f" on {', '.join(runtimes)} (the faster shown, named)"
    else:
        cpu += f" on {runtimes[0]}"
    if "script" in runtimes:
        cpu += "; script = TorchScript trace + freeze, tables >= 32 MiB in huge pages"
    return (f"{cpu}; GPU: {GPU}, FPGA: {FPGA} (modeled); accuracy: test AUC measured on CPU through the runtime "
            "shown (a script row's traced graph reproduces eager to rounding); the combined row's quantization "
            f"chosen by auto_compress timed on {combined_runtime}; see the module docstring")


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
    p.add_argument("--runtimes", type=parse_runtimes, default="eager,script",
                   help="CPU runtimes each row is timed on, comma-separated subset of eager,script (default both; "
                   "every ratio is vs FP32 eager; the table shows the faster)")
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
    select_on = "script" if "script" in args.runtimes else "eager"  # the combined row's deployment runtime

    def build_combined():
        variant, sel, rt = combined(model, ctx, base_val, args.student_epochs or args.epochs, dim=args.student_dim,
                                    runtime=select_on)
        chosen["selection"] = sel.to_dict() if sel is not None else None
        chosen["runtime"] = rt
        return variant

    builders["Combined (distill + prune + quantize)"] = build_combined
    for prec in ("bf16", "int8", "int4"):  # Figure 1: tables and dense at one precision where it exists
        steps = [EmbeddingQuantConfig(precision=prec)]
        if prec in ("bf16", "int8"):
            steps.append(DenseQuantConfig(mode="int8-static" if prec == "int8" else prec))
        builders[f"fig1 {prec}"] = lambda steps=tuple(steps): compress_(copy.deepcopy(model),
                                                                         PipelineConfig(steps=steps), ctx)
    measured = measure(model, builders, tr.schema, te, runtimes=args.runtimes)
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
               "notes": notes(args.runtimes, chosen.get("runtime", select_on)),
               "runtimes": list(args.runtimes), "variants": variants, "figure1": fig,
               "combined_selection": chosen.get("selection"), "combined_runtime": chosen.get("runtime"),
               "seconds": round(time.perf_counter() - start), "env": env}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"table1_{args.data}.json").write_text(json.dumps(results, indent=1))
    md, _ = write_table1(results, DOCS, stem=f"table1_{args.data}")
    figure1(fig, DOCS / f"figure1_{args.data}.png", title=f"Figure 1 on {args.data}", subtitle=results["machine"])
    print(md.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
