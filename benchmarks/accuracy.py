"""Accuracy benchmarks of issue #2 (model quality, not speed).

    python benchmarks/accuracy.py movielens  [--seeds 0 1 2]   # every model, random + u1 splits
    python benchmarks/accuracy.py synthetic  [--rows 2000000]  # DLRM vs the planted teacher's AUC
    python benchmarks/accuracy.py samples    [--seeds 0 1 2]   # Criteo and Avazu 10k-row samples

Each run appends JSON lines (with the environment) to benchmarks/results/accuracy.jsonl and
writes a Markdown table to docs/results/accuracy_<suite>.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
from common import DOCS, append_jsonl, environment

from crossrec.data.sources import load_splits
from crossrec.data.synthetic import SyntheticConfig, Teacher, generate
from crossrec.models import ModelSpec, build
from crossrec.train import TrainConfig, auc, evaluate, train

# name -> (interaction, top_mlp); every model uses the same harness and training config.
MODELS = {"lr": ("lr", ()), "fm": ("fm", ()), "deepfm": ("fm", (256, 128)), "dlrm": ("dot", (256, 128)),
          "dcnv2": ("cross", (256, 128))}
# One training config per data set, shared by every model (tuned on MovieLens seed 0's validation split:
# embedding_lr 3e-3 + embedding_l2 1e-2 beat 1e-2 / no L2 for FM and DeepFM by ~0.01 AUC).
TRAIN = {
    "movielens-100k": dict(epochs=30, batch_size=512, lr=1e-3, embedding_lr=3e-3, embedding_l2=1e-2, patience=3),
    "criteo": dict(epochs=30, batch_size=256, lr=1e-3, embedding_lr=3e-3, embedding_l2=1e-2, patience=3),
    "avazu": dict(epochs=30, batch_size=256, lr=1e-3, embedding_lr=3e-3, embedding_l2=1e-2, patience=3),
}


def run_model(name: str, splits, seed: int, train_cfg: dict, dim: int = 16) -> dict:
    interaction, top = MODELS[name]
    schema = splits.train.schema
    spec = ModelSpec.for_schema(schema, interaction=interaction, embedding_dim=dim, top_mlp=top,
                                bottom_mlp=(64, dim) if schema.num_dense else (), name=name)
    model = build(spec, seed=seed)
    result = train(model, splits.train, splits.val, TrainConfig(seed=seed, **train_cfg))
    test = evaluate(model, splits.test)
    return {"model": name, "seed": seed, "test_auc": test.auc, "test_log_loss": test.log_loss,
            "val_auc": result.best.auc, "steps": result.steps, "seconds": round(result.seconds, 1)}


def _table(rows: list[dict], group_keys: tuple[str, ...]) -> list[tuple]:
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in group_keys), []).append(r)
    out = []
    for key, rs in groups.items():
        aucs = [r["test_auc"] for r in rs]
        out.append((*key, statistics.mean(aucs), statistics.stdev(aucs) if len(aucs) > 1 else 0.0, len(aucs),
                    statistics.mean(r["test_log_loss"] for r in rs)))
    return out


def suite_models(datasets: list[tuple[str, str]], seeds: list[int], suite: str) -> None:
    env, rows = environment(), []
    for dataset, split in datasets:
        for seed in seeds:
            splits = load_splits(dataset, split=split, seed=seed)
            for name in MODELS:
                r = {"suite": suite, "dataset": dataset, "split": split, **run_model(name, splits, seed,
                                                                                     TRAIN[dataset])}
                rows.append(r)
                append_jsonl("accuracy", {**r, "env": env})
                print(f"{dataset:15s} {split:6s} seed {seed} {name:7s} test AUC {r['test_auc']:.4f} "
                      f"({r['steps']} steps, {r['seconds']} s)", flush=True)
    lines = [f"# Accuracy: {suite}", "", f"Command: `python benchmarks/accuracy.py {suite} --seeds "
             f"{' '.join(map(str, seeds))}`  ", f"Machine: {env['cpu']}, {env['cores']} cores, torch {env['torch']}, "
             f"{env['date']}", "", "| data set | split | model | test AUC (mean ± std) | seeds | test log loss |",
             "|---|---|---|---|---|---|"]
    for ds, split, model, mean, std, n, ll in _table(rows, ("dataset", "split", "model")):
        lines.append(f"| {ds} | {split} | {model} | {mean:.4f} ± {std:.4f} | {n} | {ll:.4f} |")
    DOCS.mkdir(parents=True, exist_ok=True)
    (DOCS / f"accuracy_{suite}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def suite_synthetic(rows: int, epochs: int, seed: int) -> None:
    env = environment()
    cfg = SyntheticConfig(rows=rows, max_rows=100, seed=seed)
    start = time.perf_counter()
    data = generate(cfg)
    gen_s = time.perf_counter() - start
    tr, va, te = data.split((0.8, 0.1, 0.1), seed=seed)
    ceiling = auc(np.asarray(te.labels), Teacher(cfg).logits(te))
    # A compact DLRM generalizes best here (measured: dim 8 / top 64 beat dim 16 / top 128-64 and 256-128).
    spec = ModelSpec.for_schema(data.schema, interaction="dot", embedding_dim=8, bottom_mlp=(64, 8), top_mlp=(64,))
    model = build(spec, seed=seed)
    tcfg = TrainConfig(epochs=epochs, batch_size=2048, lr=1e-2, embedding_lr=3e-2, evals_per_epoch=2, patience=2,
                       seed=seed)
    result = train(model, tr, va, tcfg)
    test = evaluate(model, te)
    record = {"suite": "synthetic", "rows": rows, "train_rows": len(tr), "config": cfg.to_dict(),
              "train_config": tcfg.to_dict(), "teacher_test_auc": ceiling, "dlrm_test_auc": test.auc,
              "gap": ceiling - test.auc, "generate_seconds": round(gen_s, 1),
              "train_seconds": round(result.seconds, 1),
              "steps": result.steps, "history": [round(h["auc"], 4) for h in result.history], "env": env}
    append_jsonl("accuracy", record)
    text = (f"# Accuracy: synthetic planted teacher\n\nCommand: `python benchmarks/accuracy.py synthetic --rows {rows} "
            f"--epochs {epochs}`  \nMachine: {env['cpu']}, {env['cores']} cores, torch {env['torch']}, "
            f"{env['date']}\n\n"
            f"| rows (train) | teacher test AUC (ceiling) | DLRM test AUC | gap | train time |\n|---|---|---|---|---|\n"
            f"| {len(tr):,} | {ceiling:.4f} | {test.auc:.4f} | {ceiling - test.auc:.4f} | {result.seconds:.0f} s |\n")
    DOCS.mkdir(parents=True, exist_ok=True)
    (DOCS / "accuracy_synthetic.md").write_text(text)
    print(text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("suite", choices=("movielens", "synthetic", "samples"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--rows", type=int, default=6_000_000, help="synthetic: rows generated (80%% train)")
    p.add_argument("--epochs", type=int, default=4, help="synthetic: max epochs")
    args = p.parse_args(argv)
    if args.suite == "movielens":
        suite_models([("movielens-100k", "random"), ("movielens-100k", "u1")], args.seeds, "movielens")
    elif args.suite == "samples":
        suite_models([("criteo", "random"), ("avazu", "random")], args.seeds, "samples")
    else:
        suite_synthetic(args.rows, args.epochs, args.seeds[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
