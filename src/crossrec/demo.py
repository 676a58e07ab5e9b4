"""The main job on the embedded default: synthetic data -> DLRM -> evaluate -> artifact -> reload
-> compress (the fastest quantized variant inside a 0.1% AUC budget, measured here) -> artifact.

Later issues extend this into the full optimize-and-serve pipeline.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from crossrec.artifact import load_artifact, save_artifact
from crossrec.compress import AccuracyBudget, auto_compress
from crossrec.data.synthetic import SyntheticConfig, Teacher, generate
from crossrec.errors import IntegrityError
from crossrec.models import ModelSpec, build, parameter_bytes
from crossrec.train import TrainConfig, auc, evaluate, predict, train


def demo_config(rows: int, seed: int) -> SyntheticConfig:
    """The demo's data: Criteo-shaped (13 dense, 26 tables), tables capped small enough to learn fast."""
    return SyntheticConfig(rows=rows, max_rows=100, seed=seed)


def run_demo(out: Path, *, rows: int = 1_000_000, epochs: int = 3, seed: int = 0,
             progress: Callable | None = None, log: Callable[[str], None] = lambda _: None,
             serve: bool = True) -> dict:
    """Run the demo end to end and return its summary (numbers measured in this run); ``serve`` ends it
    by serving the compressed variant over HTTP and sending it a short burst of traffic.

    >>> import tempfile
    >>> s = run_demo(Path(tempfile.mkdtemp()) / "demo", rows=3000, epochs=1)
    >>> s["reloaded predictions identical"]
    True
    """
    cfg = demo_config(rows, seed)
    log(f"generating {rows:,} synthetic rows (13 dense, 26 sparse, planted teacher, seed {seed})")
    data = generate(cfg)
    train_data, val_data, test_data = data.split((0.8, 0.1, 0.1), seed=seed)
    # The compact DLRM and learning rates of benchmarks/accuracy.py's synthetic suite (BENCHMARKS.md).
    spec = ModelSpec.for_schema(data.schema, interaction="dot", embedding_dim=8, bottom_mlp=(64, 8), top_mlp=(64,),
                                name="dlrm")
    model = build(spec, seed=seed)
    train_cfg = TrainConfig(epochs=epochs, batch_size=2048, lr=1e-2, embedding_lr=3e-2, evals_per_epoch=2, seed=seed)
    result = train(model, train_data, val_data, train_cfg, progress=progress)
    test = evaluate(model, test_data)
    ceiling = auc(np.asarray(test_data.labels), Teacher(cfg).logits(test_data))
    path = save_artifact(out, model, data.schema, overwrite=True,
                         metrics={"val": result.best.to_dict() if result.best else None, "test": test.to_dict(),
                                  "teacher_test_auc": ceiling}, info={"data": "synthetic", "train": result.to_dict()})
    log(f"saved artifact to {path}; reloading and checking it")
    art = load_artifact(path)
    before, after = predict(model, test_data), predict(art.model, test_data)
    same = bool(np.array_equal(before, after))
    if not same:
        raise IntegrityError("the reloaded artifact predicts differently from the trained model")
    log("compressing: measuring quantization candidates (validation AUC, interleaved timing on the runtime they "
        "are served on, 'auto') under a 0.1% budget")
    selection, variant = auto_compress(model, val_data, AccuracyBudget(max_relative_auc_drop=0.001),
                                       train_data=train_data, runtime="auto")
    variant_path = save_artifact(out.parent / f"{out.name}-compressed", variant, data.schema, overwrite=True,
                                 metrics={"test": evaluate(variant, test_data).to_dict()},
                                 info={"selection": selection.to_dict()})
    chosen, base = selection.chosen.scores, selection.baseline.scores
    disk = (variant_path / "weights.safetensors").stat().st_size / (path / "weights.safetensors").stat().st_size
    load = serve_burst(variant_path, log) if serve else None
    served = {}
    if load is not None:
        lat = "no answer" if load.p50_ms is None else \
            f"{load.throughput_items_s:,.0f}, {load.p50_ms:.1f}/{load.p99_ms:.1f}"
        served = {"served (crossrec serve, 2 s burst)": f"{load.ok}/{load.requests} answered",
                  "  items/s, p50/p99 ms (client, loopback)": lat}
    return {"rows (train/val/test)": f"{len(train_data):,}/{len(val_data):,}/{len(test_data):,}",
            "test AUC (DLRM)": test.auc, "test AUC ceiling (planted teacher)": ceiling,
            "test log loss": test.log_loss, "normalized entropy": test.normalized_entropy,
            "calibration": test.calibration, "training steps": result.steps,
            "training seconds": round(result.seconds, 1), "model size (MB)": round(parameter_bytes(model) / 1e6, 2),
            "artifact": str(path), "reloaded predictions identical": same,
            "compressed variant (select, 0.1% budget)": selection.chosen.name,
            "  speed-up at b512 (vs FP32, same runtime)": chosen["throughput"] / base["throughput"],
            "  p50 latency ratio at batch 1": base["latency_ms"] / chosen["latency_ms"],
            "  size on disk vs FP32": f"{disk:.1%}",
            "  relative AUC drop (validation)": f"{selection.chosen.relative_auc_drop:.3%}",
            "  compressed artifact": str(variant_path), **served, "torch threads": torch.get_num_threads()}


def serve_burst(artifact: Path, log: Callable[[str], None], *, duration_s: float = 2.0):
    """Serve ``artifact`` on a free loopback port (one worker process) and send it a short burst of
    ranking queries (16-128 candidates each) with crossrec's load generator; returns the LoadResult."""
    from crossrec.serve.loadgen import loadgen
    from crossrec.serve.plan import ServePlan
    from crossrec.serve.server import ServerHandle

    plan = ServePlan.for_artifact(artifact, port=0, count=1, threads=1)
    log(f"serving the compressed variant (crossrec serve, {plan.routing.policy} routing) and sending a "
        f"{duration_s:.0f} s burst of queries")
    with ServerHandle(plan) as handle:
        result = loadgen(handle.url, mode="open", rate_qps=40, duration_s=duration_s, size_dist="uniform:16:128",
                         seed=0)
    log(f"  {result.summary()}")
    return result
