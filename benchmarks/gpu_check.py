"""Table 1's GPU column, measured on the local CUDA GPU (issue #3), in one short run guarded by --budget-s.

    PYTHONPATH=src python3 benchmarks/gpu_check.py --out "$OUT"     # on a GPU machine; files under $OUT
    PYTHONPATH=src python3 benchmarks/gpu_check.py                  # docs/results/ + benchmarks/results/gpu.jsonl
    PYTHONPATH=src python3 benchmarks/gpu_check.py --device cpu --tiny --out /tmp/g   # plumbing check, no GPU

benchmarks/table1.py gives Table 1's GPU column from the roofline model (``crossrec.hardware.estimate``,
labelled modeled) because no GPU had been lent. This script times the *architectures* of Table 1's rows
on a real GPU, on the synthetic Criteo-shaped DLRM of ``table1.baseline_spec`` (26 tables of dim 64 capped
at ``--max-rows`` rows: ~1.4 GB FP32 at the default 1,000,000; bottom MLP 512-256-64, top 512-256-1):

- **Baseline (FP32)** runs on the ``cuda`` runtime in fp32 (``dtype="fp32", table_dtype="fp32"``; fp32
  matmuls at torch's default precision, no TF32). Every speed-up is against it, measured in the same run.
- Every other row runs on ``load(model, "cuda")``: fp16 tables, bf16 dense layers. **INT8** has no CUDA
  kernel in crossrec (FBGEMM row-wise int8 tables and ``quantized::linear`` are CPU-only), so its row times
  the GPU-deployable precision of its architecture, fp16 tables + bf16 dense, and says so.
- Structured pruning 50% (genuinely smaller Linear layers), distillation (``table1_variants``' student) and
  combined (``combined_student``: the dim-8 student, pruned) are built from their configs with
  ``crossrec.compress.restore_``: the same layer shapes, no data, no training. Combined's quantization
  (picked by auto_compress on the CPU) runs as fp16 tables + bf16 dense.

Weights are random: speed does not depend on weight values, so **accuracy is not measured here**; Table 1's
accuracy column comes from the CPU runs (docs/results/table1_synthetic.md).

Timing: each row is timed in a pair with the FP32 baseline, round-robin (``crossrec.hardware.profile_many``
with ``device="cuda"``, which calls ``torch.cuda.synchronize`` after the warm-up and after every timed call),
blocks of 10 calls over 8 distinct batches of synthetic (Zipf) ids, at batch 1, 512 and 4096, two ways:
*resident* (inputs already on the GPU: kernels + launches) and *host->host* (inputs from host memory, logits
copied back: what a server pays per call; the roofline estimate counts those transfers too). A row's speed-up
is its samples/s over the baseline's in its own pair; the baseline's figures are its mean over the pairs. The
"modeled" column is ``estimate`` for the catalog entry matching the GPU (else h100-sxm) at the precisions
timed; "Table 1 modeled" is the speed-up the committed Table 1 shows (benchmarks/results/table1_synthetic.json).

``--budget-s`` (default 240) is a hard guard: a row that would not fit in what is left is skipped and named,
and the files are still written. ``--compile`` adds torch.compile (inductor) rows while the budget lasts.

Without CUDA it exits with status 2, unless ``--device cpu``: then the same code runs on the CPU eager runtime
(``--tiny``: small tables and batches, few repeats) and every line and file says "plumbing check on CPU — not
a GPU measurement". With ``--out DIR`` it writes DIR/table1_gpu.md, DIR/table1_gpu.json and DIR/gpu.jsonl
(the one line to append to benchmarks/results/gpu.jsonl); without, docs/results/table1_gpu.md and a line
appended to benchmarks/results/gpu.jsonl.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import json
import subprocess
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path

import torch

from crossrec.compress import DenseQuantConfig, DistillConfig, EmbeddingQuantConfig, recipe_to_dicts, restore_
from crossrec.data.synthetic import SyntheticConfig, generate
from crossrec.errors import CrossrecError
from crossrec.hardware import estimate, get_device, match_catalog, profile_many
from crossrec.models import ModelSpec, build
from crossrec.runtime import load as load_runtime
from crossrec.runtime.cuda import cuda_blockers

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:  # common.py and table1.py sit beside us: a test that imports this file needs them too
    sys.path.insert(0, _HERE)
from common import DOCS, RESULTS, append_jsonl, environment
from table1 import GPU, baseline_spec, combined_student, effective_spec, table1_variants

PLUMBING = "plumbing check on CPU — not a GPU measurement"
NO_CUDA = ("no CUDA GPU: this script measures the GPU column of Table 1 (issue #3) and torch.cuda.is_available() "
           "is False (torch {torch}); run it on a GPU machine, or use --device cpu for a plumbing check")
BASELINE, COMBINED = "Baseline (FP32)", "Combined (distill + prune + quantize)"
NO_ACCURACY = ("accuracy is not measured here: weights are random (speed does not depend on weight values); "
               "Table 1's accuracy column comes from the CPU runs (docs/results/table1_synthetic.md)")
COMPILE_GUESS_S = 60.0  # budget reserved for a first compiled row: inductor compiles 3 shapes (not measured yet)
_QUANT = (EmbeddingQuantConfig, DenseQuantConfig)


@dataclasses.dataclass(frozen=True)
class Timing:
    """How each pair is timed (``profile_many`` arguments) and on which batch sizes."""

    batch_sizes: tuple[int, ...] = (1, 512, 4096)
    distinct: int = 8
    warmup: int = 10
    repeats: int = 50
    min_time_s: float = 0.25
    block: int = 10


TINY = Timing(batch_sizes=(1, 64, 256), distinct=2, warmup=2, repeats=3, min_time_s=0.0, block=2)


# ------------------------------------------------------------------------------------------- the rows


def table1_rows(spec: ModelSpec) -> dict[str, list]:
    """Name -> compression recipe of Table 1's rows, in Table 1's order (combined: without the quantization
    auto_compress picks on the CPU; on the GPU it runs at the cuda runtime's fp16/bf16)."""
    rows: dict[str, list] = {BASELINE: []}
    rows.update({name: [cfg] for name, cfg in table1_variants(spec, epochs=1).items()})
    rows[COMBINED] = [combined_student(spec, epochs=1)]
    return rows


def steps(recipe: list) -> list:
    return [s for c in recipe for s in getattr(c, "steps", (c,))]


def architecture(spec: ModelSpec, recipe: list, seed: int = 0):
    """A fresh model with the layer shapes ``recipe`` gives ``spec``; random weights, for timing only."""
    for s in steps(recipe):
        if isinstance(s, DistillConfig):  # distillation replaces the model: build the student, not the teacher
            spec = s.student.resolve(spec)
    return restore_(build(spec, seed=seed), list(recipe))


def deployable(spec: ModelSpec, recipe: list) -> tuple[list, list[str]]:
    """(recipe to time on CUDA, what blocked the original): quantization steps without a CUDA kernel are dropped,
    and the cuda runtime runs the architecture left at fp16 tables + bf16 dense. Probed on 2-row tables (cheap)."""
    small = dataclasses.replace(spec, tables=tuple(dataclasses.replace(t, num_embeddings=2) for t in spec.tables))
    found = cuda_blockers(architecture(small, recipe))
    if not found:
        return list(recipe), []
    return [s for s in steps(recipe) if not isinstance(s, _QUANT)], found


def runtime_choice(device: str, fp32: bool, compiled: bool,
                   mode: str = "default") -> tuple[str, dict, tuple[str, str], str]:
    """(runtime, options, (table precision, dense precision), label) a row is timed with on ``device``."""
    if device == "cpu":
        name = "compiled" if compiled else "eager"
        return name, {}, ("fp32", "fp32"), f"{name} fp32 ({PLUMBING})"
    opts = {"dtype": "fp32", "table_dtype": "fp32"} if fp32 else {}
    opts = {**opts, "compile": True, "compile_mode": mode} if compiled else opts
    prec = ("fp32", "fp32") if fp32 else ("fp16", "bf16")
    how = (", torch.compile" + ("" if mode == "default" else f" ({mode}{': CUDA graphs' * ('reduce' in mode)})")
           if compiled else "")
    return "cuda", opts, prec, f"{prec[0]} tables + {prec[1]} dense{how}"


# ------------------------------------------------------------------------------------------- timing


class HostToHost:
    """A runtime fed from host memory whose logits come back to host memory (``.cpu()`` waits for the GPU)."""

    def __init__(self, runtime):
        self.runtime = runtime

    def eval(self) -> HostToHost:
        return self

    def __call__(self, dense, ids, offsets):
        return self.runtime(dense, ids, offsets).cpu()


def _figures(bp) -> dict:
    return {"samples_per_s": bp.samples_per_s, "p50_ms": bp.p50_ms, "p99_ms": bp.p99_ms, "calls": len(bp.latencies_ms)}


def time_pair(base, runtime, batches: dict, device: str, t: Timing) -> dict:
    """{"resident"|"host_to_host": {batch size: {"base": figures, "row": figures}}}: the two timed round-robin.
    Resident inputs are moved to ``device`` once; host->host ones stay on the CPU (``profile_many`` then has no
    CUDA sync to do: ``.cpu()`` of the logits is it)."""
    out = {}
    for mode, dev, wrap in (("resident", device, lambda r: r), ("host_to_host", "cpu", HostToHost)):
        prof = profile_many({"base": wrap(base), "row": wrap(runtime)}, lambda bs: batches[bs],
                            batch_sizes=t.batch_sizes, device=dev, warmup=t.warmup, repeats=t.repeats,
                            min_time_s=t.min_time_s, block=t.block)
        out[mode] = {bs: {who: _figures(prof[who].at(bs)) for who in ("base", "row")} for bs in t.batch_sizes}
    return out


def modeled(model, precisions: tuple[str, str], device_name: str, batch_sizes) -> dict:
    """Roofline samples/s per batch size at the precisions timed (``estimate``: transfers and launch included)."""
    dev, spec = get_device(device_name), effective_spec(model)
    try:
        return {bs: estimate(spec, dev, bs, embedding_precision=precisions[0],
                             dense_precision=precisions[1]).samples_per_s for bs in batch_sizes}
    except CrossrecError as exc:
        return {"unsupported": str(exc)}


def weight_bytes(runtime) -> int:
    m = runtime.model
    return sum(t.numel() * t.element_size() for t in (*m.parameters(), *m.buffers()))


def free(device: str) -> None:
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


# ------------------------------------------------------------------------------------------- the run


@dataclasses.dataclass
class Run:
    """What every row is measured with; ``took`` = seconds each measured row took (for the budget guard)."""

    device: str
    timing: Timing
    spec: ModelSpec
    base_model: object
    base: object
    batches: dict
    model_device: str
    budget_s: float
    clock: Callable[[], float]
    start: float
    log: Callable[[str], None]
    took: dict = dataclasses.field(default_factory=lambda: {"eager": [], "compile": []})
    compile_mode: str = "default"

    def left(self) -> float:
        return self.budget_s - (self.clock() - self.start)


def suffix(run: Run, compiled: bool) -> str:
    """Row-name suffix of a compiled row: ", compiled" (inductor) or ", CUDA graphs" (reduce-overhead)."""
    if not compiled:
        return ""
    return ", CUDA graphs" if run.compile_mode == "reduce-overhead" and run.device == "cuda" else ", compiled"


def measure_row(run: Run, name: str, recipe: list, compiled: bool = False) -> dict:
    """One row timed in a pair with the FP32 baseline (see the module docstring)."""
    t0 = run.clock()
    kept, found = deployable(run.spec, recipe) if recipe else ([], [])
    fp32 = not recipe
    rt_name, opts, prec, label = runtime_choice(run.device, fp32, compiled, run.compile_mode)
    if found:
        label = (f"INT8 has no CUDA kernel here ({found[0]}{'; ...' if len(found) > 1 else ''}); timed as "
                 f"{label}" if run.device == "cuda" else f"INT8 architecture without its CPU-only int8 ops; {label}")
    model = architecture(run.spec, kept) if kept else run.base_model
    rt = load_runtime(model, rt_name, run.device, **opts)
    row = {"name": name + suffix(run, compiled), "runs_as": label, "source":
           "measured" if run.device == "cuda" else "plumbing (CPU)", "recipe": recipe_to_dicts(recipe),
           "timed_recipe": recipe_to_dicts(kept), "blockers": found, "runtime_info": dict(rt.info),
           "weights_bytes": weight_bytes(rt), "modeled": modeled(model, prec, run.model_device, run.timing.batch_sizes)}
    row["widths"] = {"bottom_mlp": effective_spec(model).bottom_mlp, "top_mlp": effective_spec(model).top_mlp,
                     "embedding_dim": model.spec.embedding_dim}
    row["pair"] = time_pair(run.base, rt, run.batches, run.device, run.timing)
    del rt, model
    free(run.device)
    row["seconds"] = round(run.clock() - t0, 2)
    return row


def measure_all(run: Run, rows: dict[str, list], compile_rows: bool,
                on_row: Callable[[list, list], None] = lambda _d, _s: None) -> tuple[list[dict], list[dict]]:
    """(measured rows, skipped or failed rows): eager rows in Table 1's order, then compiled ones, while the
    budget lasts (a row is skipped when the slowest of its kind so far would not fit in what is left).
    ``on_row(done, skipped)`` follows every measured or failed row (checkpoints: a killed run keeps its rows)."""
    done, skipped = [], []
    plan = [(n, r, False) for n, r in rows.items()] + ([(n, r, True) for n, r in rows.items()] if compile_rows else [])
    for name, recipe, compiled in plan:
        kind = "compile" if compiled else "eager"
        need = max(run.took[kind], default=COMPILE_GUESS_S if compiled else 0.0)
        label = name + suffix(run, compiled)
        if need > run.left() or run.left() <= 0:
            skipped.append({"name": label, "reason": f"skipped by the time guard: {max(run.left(), 0):.0f} s of "
                            f"--budget-s {run.budget_s:.0f} left, the row needs ~{need:.0f} s"})
            run.log(f"{label}: {skipped[-1]['reason']}")
            continue
        run.log(f"{label}: building and timing")
        try:
            row = measure_row(run, name, recipe, compiled)
        except (CrossrecError, RuntimeError) as exc:  # OOM, inductor, a kernel missing: record it, go on
            skipped.append({"name": label, "reason": f"failed: {type(exc).__name__}: {exc}"})
            run.log(f"{label}: {skipped[-1]['reason']}")
            free(run.device)
            on_row(done, skipped)
            continue
        run.took[kind].append(row["seconds"])
        done.append(row)
        big = max(run.timing.batch_sizes)
        r = row["pair"]["resident"][big]
        vs = "its copy" if name == BASELINE and not compiled else "FP32"
        run.log(f"{label}: {r['row']['samples_per_s']:,.0f} samples/s at batch {big} resident "
                f"({r['row']['samples_per_s'] / r['base']['samples_per_s']:.2f}x {vs}) in {row['seconds']:.1f} s")
        on_row(done, skipped)
    return done, skipped


# ------------------------------------------------------------------------------------------- results


def summarize(done: list[dict], batch_sizes) -> dict:
    """{"baseline": {mode: {bs: figures}}, row name: {mode: {bs: figures + speedup}}}: the baseline's figures are
    its mean over every pair; a row's speed-up is its samples/s over the baseline's in its own pair."""
    out: dict = {}
    for mode in () if not done else ("resident", "host_to_host"):
        for bs in batch_sizes:
            bases = [r["pair"][mode][bs]["base"] for r in done]
            mean = {k: sum(b[k] for b in bases) / len(bases) for k in ("samples_per_s", "p50_ms", "p99_ms")}
            out.setdefault("baseline", {}).setdefault(mode, {})[bs] = {**mean, "speedup": 1.0, "pairs": len(bases)}
            for r in done:
                p = r["pair"][mode][bs]
                out.setdefault(r["name"], {}).setdefault(mode, {})[bs] = {
                    **p["row"], "speedup": p["row"]["samples_per_s"] / p["base"]["samples_per_s"]}
    return out


def table1_modeled(path: Path = RESULTS / "table1_synthetic.json") -> dict[str, float]:
    """Row name -> the GPU speed-up the committed Table 1 shows (modeled, batch 512); {} without the file."""
    try:
        variants = json.loads(path.read_text())["variants"]
    except (OSError, KeyError, ValueError):
        return {}
    base = next((v["gpu"]["samples_per_s"] for v in variants if v["name"] == BASELINE), None)
    return {v["name"]: v["gpu"]["samples_per_s"] / base for v in variants if base and v.get("gpu")}


def _cell(fig: dict) -> str:
    return f"{fig['samples_per_s']:,.0f} ({fig['speedup']:.2f}×)"


def render_md(rec: dict) -> str:
    """The Markdown page: one row per Table 1 method, its figures and speed-ups vs the FP32 GPU baseline."""
    bss = [b for b in rec["config"]["batch_sizes"] if b > 1]
    big, ref = max(bss), bss[0]
    head = (["method", "runs on the device as", "weights on device", "p50 @ batch 1, resident / host->host"]
            + [f"samples/s @ {b}, resident (× FP32)" for b in bss] + [f"samples/s @ {big}, host->host (× FP32)",
               f"modeled samples/s @ {ref} ({rec['modeled_device']})", f"Table 1 GPU × (modeled, {GPU}, @ 512)"])
    lines = [f"# Table 1, GPU column: {rec['label']}", "", f"Command: `{rec['command']}`  ",
             f"Device: {rec['device']['summary']}  ", f"Date: {rec['date']}  ", f"Notes: {NO_ACCURACY}. "
             f"{rec['method']}  ", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    summary = rec["summary"]
    for r in rec["rows"]:
        figs = summary["baseline"] if r["name"] == BASELINE else summary[r["name"]]
        one = (f"{figs['resident'][1]['p50_ms']:.3f} / {figs['host_to_host'][1]['p50_ms']:.3f} ms"
               if 1 in figs["resident"] else "-")
        mod = r["modeled"].get(ref)
        t1 = rec["table1_modeled"].get(r["name"])
        cells = [r["name"], r["runs_as"], f"{r['weights_bytes'] / 1e6:,.1f} MB", one,
                 *[_cell(figs["resident"][b]) for b in bss], _cell(figs["host_to_host"][big]),
                 f"{mod:,.0f}" if mod else "-", f"{t1:.2f}×" if t1 else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    if BASELINE in summary:
        noise = summary[BASELINE]["resident"][big]["speedup"]
        n = len(rec["rows"])
        lines += ["", f"The FP32 baseline row is its mean over the {n} pair{'s' * (n != 1)}; timed against a copy of "
                  f"itself it measured {noise:.2f}× at batch {big} (the run's noise)."]
    if rec["skipped"]:
        lines += ["", "Skipped or failed:", *[f"- **{s['name']}**: {s['reason']}" for s in rec["skipped"]]]
    if not rec["complete"]:
        lines += ["", "**Partial**: written after each row; the run had not finished (killed or still running)."]
    return "\n".join(lines) + "\n"


def device_facts(device: str) -> dict:
    """What the figures depend on: the GPU's name and properties, torch, CUDA and the driver."""
    if device != "cuda":
        return {"name": "CPU", "summary": f"CPU, torch {torch.__version__}"}
    p = torch.cuda.get_device_properties(0)
    facts = {"name": torch.cuda.get_device_name(0), "capability": f"{p.major}.{p.minor}",
             "multiprocessors": p.multi_processor_count, "memory_bytes": p.total_memory, "torch": torch.__version__,
             "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
             "float32_matmul_precision": torch.get_float32_matmul_precision()}
    # the driver and clocks are not in torch; nvidia-smi may be missing: then they stay unrecorded
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        facts["nvidia_smi"] = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version,clocks.max.sm,clocks.max.mem,power.limit",
             "--format=csv,noheader"], capture_output=True, text=True, timeout=10).stdout.strip()
    facts["summary"] = (f"{facts['name']} (sm {facts['capability']}, {p.multi_processor_count} SMs, "
                        f"{p.total_memory / 2**30:.0f} GiB), torch {torch.__version__}, CUDA {torch.version.cuda}")
    return facts


# ------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=None, help="write table1_gpu.md, table1_gpu.json and gpu.jsonl here "
                   "(default: docs/results/table1_gpu.md and a line appended to benchmarks/results/gpu.jsonl)")
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="cuda (default): the measurement; cpu: "
                   "a plumbing check of the same code on the CPU eager runtime (needs --out; not a GPU measurement)")
    p.add_argument("--tiny", action="store_true", help="tables of <= 1000 rows, batches 1/64/256, few repeats: "
                   "checks the plumbing in seconds (figures meaningless)")
    p.add_argument("--max-rows", type=int, default=1_000_000, help="rows per table at most (default 1,000,000: "
                   "~1.4 GB FP32 tables, as Table 1's synthetic run)")
    p.add_argument("--budget-s", type=float, default=240.0, help="hard time guard in seconds from the start (default "
                   "240): a row that would not fit in what is left is skipped and named, the files still written")
    p.add_argument("--compile", action="store_true", help="after the eager rows, time every row again with "
                   "torch.compile (inductor; 3 shapes to compile per row) while --budget-s lasts")
    p.add_argument("--compile-mode", default="default", choices=("default", "reduce-overhead", "max-autotune"),
                   help="torch.compile mode of the --compile rows (reduce-overhead: CUDA graphs, one replay per call)")
    args = p.parse_args(argv)
    if args.device == "cpu" and args.out is None:
        p.error("--device cpu needs --out DIR: a plumbing check never writes docs/results/table1_gpu.md or "
                "benchmarks/results/gpu.jsonl")
    if args.max_rows < 1 or args.budget_s <= 0:
        p.error(f"--max-rows must be >= 1 and --budget-s > 0, got {args.max_rows} and {args.budget_s}")
    if args.tiny:
        args.max_rows = min(args.max_rows, 1000)
    return args


def setup(args, timing: Timing, clock, start: float, log) -> Run:
    """Synthetic batches, the baseline model and its FP32 runtime on the device."""
    max_rows = args.max_rows
    data = generate(SyntheticConfig(rows=max(timing.batch_sizes) * timing.distinct, max_rows=max_rows, seed=0))
    spec = baseline_spec(types.SimpleNamespace(data="synthetic"), data.schema)
    batches = {bs: data.distinct_batches(bs, timing.distinct) for bs in timing.batch_sizes}
    log(f"data: {len(data):,} synthetic rows, {len(spec.tables)} tables of <= {max_rows:,} rows, dim "
        f"{spec.embedding_dim}; building the FP32 baseline")
    base_model = build(spec, seed=0)
    name, opts, _, _ = runtime_choice(args.device, fp32=True, compiled=False)
    base = load_runtime(base_model, name, args.device, **opts)
    gpu = torch.cuda.get_device_name(0) if args.device == "cuda" else ""
    log(f"baseline: {weight_bytes(base) / 1e9:.2f} GB of weights on {args.device} ({name}, fp32)")
    return Run(device=args.device, timing=timing, spec=spec, base_model=base_model, base=base, batches=batches,
               model_device=match_catalog(gpu, "gpu") or GPU if gpu else GPU, budget_s=args.budget_s, clock=clock,
               start=start, log=log, compile_mode=args.compile_mode)


def method(t: Timing, device: str) -> str:
    base = "the cuda runtime in fp32" if device == "cuda" else "CPU eager fp32"
    return (f"Every row is timed in a pair with the FP32 baseline ({base}), round-robin: blocks of {t.block} calls "
            f"over {t.distinct} distinct batches, {t.warmup} warm-up calls, >= {t.repeats} calls and {t.min_time_s} s "
            "per model and batch size, a device sync after each call. Resident: inputs already on the device; "
            "host->host: inputs from host memory, logits back to it. Modeled: crossrec.hardware.estimate at the "
            "precisions timed.")


def write(rec: dict, md: str, out: Path | None) -> list[Path]:
    if out is None:
        DOCS.mkdir(parents=True, exist_ok=True)
        (DOCS / "table1_gpu.md").write_text(md)
        return [DOCS / "table1_gpu.md", append_jsonl("gpu", rec)]
    out.mkdir(parents=True, exist_ok=True)
    (out / "table1_gpu.md").write_text(md)
    (out / "table1_gpu.json").write_text(json.dumps(rec, indent=1))
    (out / "gpu.jsonl").write_text(json.dumps(rec) + "\n")
    return [out / "table1_gpu.md", out / "table1_gpu.json", out / "gpu.jsonl"]


def main(argv: list[str] | None = None, clock: Callable[[], float] = time.perf_counter) -> int:
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print(NO_CUDA.format(torch=torch.__version__), file=sys.stderr, flush=True)
        return 2
    start = clock()
    prefix = f"({PLUMBING}) " if args.device == "cpu" else ""
    log = lambda msg: print(f"[{clock() - start:6.1f} s] {prefix}{msg}", flush=True)
    timing = TINY if args.tiny else Timing()
    if args.compile:  # Dynamo keeps compiled graphs per code object: rows x shapes pass its default limit of 8
        import torch._dynamo as dynamo

        cfg = dynamo.config
        key = "recompile_limit" if hasattr(cfg, "recompile_limit") else "cache_size_limit"
        setattr(cfg, key, max(getattr(cfg, key), 64))
    facts = device_facts(args.device)
    label = f"measured on {facts['name']}" if args.device == "cuda" else PLUMBING
    log(f"{label}; {facts['summary']}; budget {args.budget_s:.0f} s")
    run = setup(args, timing, clock, start, log)
    env, command = environment(), "python3 benchmarks/gpu_check.py " + " ".join(sys.argv[1:] if argv is None else argv)

    def record(done: list, skipped: list, complete: bool) -> dict:
        return {"title": "Table 1, GPU column (issue #3)", "label": label, "complete": complete,
                "source": "measured" if args.device == "cuda" else "plumbing", "device": facts, "date": env["date"],
                "command": command, "method": method(timing, args.device), "notes": NO_ACCURACY,
                "config": {**dataclasses.asdict(timing), "max_rows": args.max_rows, "tiny": args.tiny,
                           "compile": args.compile, "compile_mode": args.compile_mode, "budget_s": args.budget_s},
                "modeled_device": run.model_device, "rows": done, "skipped": skipped,
                "summary": summarize(done, timing.batch_sizes), "table1_modeled": table1_modeled(),
                "seconds": round(clock() - start, 1), "env": env}

    def checkpoint(done: list, skipped: list) -> None:  # only into --out: docs/ and the JSONL get the final record
        if args.out is not None:
            rec = record(done, skipped, complete=False)
            write(rec, render_md(rec), args.out)

    done, skipped = measure_all(run, table1_rows(run.spec), args.compile, checkpoint)
    rec = record(done, skipped, complete=True)
    md = render_md(rec)
    paths = write(rec, md, args.out)
    print(md, flush=True)
    log(f"wrote {', '.join(str(p) for p in paths)}")
    failed = [s for s in skipped if s["reason"].startswith("failed")]
    return 1 if failed or not done else 0


if __name__ == "__main__":
    sys.exit(main())
