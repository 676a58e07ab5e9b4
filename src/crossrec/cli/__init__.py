"""The `crossrec` command line: the only place that parses argv, prints, logs and exits.

Exit codes: 0 ok, 1 unexpected error, 2 bad usage or bad input (a CrossrecError).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from crossrec.errors import CrossrecError, DataError

log = logging.getLogger("crossrec")

MODELS = {  # CLI model name -> ModelSpec.interaction ("fm" without a top MLP is plain FM)
    "dlrm": "dot", "dcnv2": "cross", "deepfm": "fm", "fm": "fm", "deep": "concat", "lr": "lr"}


def _console():
    from rich.console import Console

    return Console(stderr=True)


@contextlib.contextmanager
def _train_progress(description: str, console=None) -> Iterator:
    """A rich progress bar fed by crossrec.train.TrainEvent callbacks."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[status]}"), TimeRemainingColumn(), console=console or _console(),
                  transient=False) as bar:
        task = bar.add_task(description, total=None, status="")
        state = {"auc": ""}

        def on_event(event) -> None:
            if event.kind == "start":
                bar.update(task, total=event.total_steps)
            elif event.kind == "step":
                if event.step % 10 == 0 or event.step == event.total_steps:
                    bar.update(task, completed=event.step, status=f"loss {event.loss:.4f}{state['auc']}")
            elif event.kind == "eval":
                state["auc"] = f"  val AUC {event.metrics.auc:.4f}"
                bar.update(task, completed=event.step, status=f"{state['auc'].strip()}")

        yield on_event


def _spec_for(args, schema):
    from crossrec.models import ModelSpec

    interaction = MODELS[args.model]
    dim = args.embedding_dim
    top = () if args.model == "fm" else tuple(args.top_mlp)
    bottom = tuple(args.bottom_mlp) if args.bottom_mlp else None  # ModelSpec explains a mismatch with dim
    return ModelSpec.for_schema(schema, interaction=interaction, embedding_dim=dim, top_mlp=top,
                                bottom_mlp=bottom if schema.num_dense else (), dropout=args.dropout, name=args.model)


def _load_splits(args):
    """(train, val, test) for --data, via crossrec.data.sources."""
    from crossrec.data.sources import load_splits

    return load_splits(args.data, path=args.path, split=args.split, seed=args.seed, rows=args.rows,
                       cache_dir=args.cache_dir, on_bad_row=args.on_bad_row)


def cmd_train(args) -> int:
    from crossrec.artifact import save_artifact
    from crossrec.models import build
    from crossrec.train import TrainConfig, evaluate, train

    splits = _load_splits(args)
    train_data, val_data, test_data = splits
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, embedding_lr=args.embedding_lr,
                      embedding_l2=args.embedding_l2, patience=args.patience, seed=args.seed)
    if args.config:
        from crossrec.config import load

        cfg = load(args.config, TrainConfig)
    spec = _spec_for(args, train_data.schema)
    model = build(spec, seed=args.seed)
    con = _console()
    con.print(f"[bold]{args.model}[/] on {args.data}: {len(train_data):,} train / {len(val_data):,} val / "
              f"{len(test_data):,} test rows, CTR {train_data.ctr:.3f}")
    with _train_progress(f"train {args.model}") as on_event:
        result = train(model, train_data, val_data, cfg, progress=on_event)
    test = evaluate(model, test_data)
    metrics = {"val": result.best.to_dict() if result.best else None, "test": test.to_dict()}
    out = save_artifact(args.out, model, train_data.schema, metrics=metrics, overwrite=args.force, extra=splits.extra,
                        info={"data": args.data, "train_config": cfg.to_dict(), "train": result.to_dict()})
    con.print(f"test AUC [bold]{test.auc:.4f}[/]  log loss {test.log_loss:.4f}  NE {test.normalized_entropy:.4f}  "
              f"calibration {test.calibration:.3f}  ({result.steps} steps, {result.seconds:.1f} s)")
    print(json.dumps({"artifact": str(out), **metrics}, indent=2))
    return 0


def cmd_evaluate(args) -> int:
    from crossrec.artifact import load_artifact
    from crossrec.train import evaluate

    art = load_artifact(args.artifact)
    _, val_data, test_data = _load_splits(args)
    data = test_data if args.on == "test" else val_data
    if data.schema.cardinalities != art.schema.cardinalities or data.schema.num_dense != art.schema.num_dense:
        raise DataError("the data's schema does not match the artifact's: prepare the data with the same "
                            "options the model was trained with (see manifest.json 'schema.preprocessing')")
    metrics = evaluate(art.model, data)
    print(json.dumps({"artifact": str(args.artifact), "data": args.data, "on": args.on, **metrics.to_dict()},
                     indent=2))
    return 0


def cmd_predict(args) -> int:
    import numpy as np

    from crossrec.artifact import load_artifact
    from crossrec.data.sources import read_for_artifact
    from crossrec.train import predict

    art = load_artifact(args.artifact)
    data = read_for_artifact(args.input, art.schema, art.extra, on_bad_row=args.on_bad_row)
    probs = predict(art.model, data)
    out = Path(args.out)
    if out.exists() and not args.force:
        raise CrossrecError(f"{out} already exists; choose another --out or pass --force")
    with open(out, "w") as f:
        f.write("row,probability\n")
        np.savetxt(f, np.column_stack([np.arange(len(probs)), probs]), fmt=["%d", "%.6f"], delimiter=",")
    _console().print(f"wrote {len(probs):,} predictions to {out}")
    return 0


def cmd_compress(args) -> int:
    from rich.table import Table

    from crossrec.artifact import load_artifact, save_artifact
    from crossrec.compress import AccuracyBudget, auto_compress

    if Path(args.out).exists() and not args.force:
        raise DataError(f"{args.out} already exists; choose another --out or pass --force")
    budget = AccuracyBudget.parse(args.budget)
    candidates, source = None, Path(args.artifact)
    if source.suffix == ".json":  # a front member from `crossrec search`
        from crossrec.compress import PipelineConfig, default_candidates
        from crossrec.hardware.detect import LOCAL_CPU, detect_cpu
        from crossrec.search import front_member

        if not args.front_device:
            raise DataError(f"{source} is a search front: pass --front-device (one of the devices it was searched for)")
        device = args.front_device
        if device == LOCAL_CPU:  # the alias a search config may use: this machine's CPU catalog entry
            device = detect_cpu().catalog_match or device
        path, choice = front_member(source, device, int(args.pick) if args.pick.isdigit() else args.pick)
        art = load_artifact(path)
        candidates = default_candidates()
        steps = tuple(choice.to_configs())
        if steps:
            candidates[f"searched: {choice.label}"] = PipelineConfig(steps=steps)
    else:
        art = load_artifact(source)
    train_data, val_data, test_data = _load_splits(args)
    if source.suffix == ".json":
        from crossrec.search import project_data

        train_data, val_data, test_data = (project_data(d, art.schema) for d in (train_data, val_data, test_data))
    if val_data.schema.cardinalities != art.schema.cardinalities or val_data.schema.num_dense != art.schema.num_dense:
        raise DataError("the data's features do not match the artifact's: pass the data set it was trained on")
    con = _console()
    con.print(f"measuring {args.device} candidates on {len(val_data):,} validation rows (budget {args.budget})")
    selection, variant = auto_compress(art.model, val_data, budget, objective=args.objective, candidates=candidates,
                                       batch_size=args.batch_size, train_data=train_data, runtime=args.runtime,
                                       threads=args.threads, keep_uncompressed=args.keep_uncompressed,
                                       runtime_options={"hugepages": True} if args.hugepages else None,
                                       progress=con.print)
    from crossrec.train import evaluate

    out = save_artifact(args.out, variant, art.schema, overwrite=args.force, extra=art.extra,
                        metrics={"test": evaluate(variant, test_data).to_dict()},
                        info={"source_artifact": str(args.artifact), "selection": selection.to_dict(),
                              "measured_on": {"runtime": args.runtime, "threads": args.threads,
                                              "hugepages": args.hugepages}})
    (out / "selection.json").write_text(json.dumps(selection.to_dict(), indent=2))
    table = Table(title=f"candidates (measured on this {args.device}; chosen: {selection.chosen.name})")
    for col in ("variant", "val AUC", "rel. drop", "in budget", "samples/s", "p50 b1 ms", "MB"):
        table.add_column(col, justify="left" if col == "variant" else "right")
    for t in (selection.baseline, *selection.trials):
        s = t.scores
        table.add_row(t.name, f"{s['auc']:.4f}", f"{t.relative_auc_drop:.3%}", "yes" if t.within_budget else "no",
                      f"{s['throughput']:,.0f}", f"{s['latency_ms']:.3f}", f"{s['size_bytes'] / 1e6:.2f}")
    con.print(table)
    print(json.dumps({"artifact": str(out), "chosen": selection.chosen.name,
                      "relative_auc_drop": selection.chosen.relative_auc_drop}, indent=2))
    return 0


def cmd_report(args) -> int:
    from crossrec.report import figure1, write_table1

    path = Path(args.results)
    if not path.is_file():
        raise DataError(f"{path} does not exist: run benchmarks/table1.py (or `crossrec search` for figure2) first")
    if args.what == "figure2":
        from crossrec.report.figure2 import figure2

        out = figure2(path, Path(args.out) / f"{args.stem or 'figure2'}.png")
        _console().print(f"wrote {out}")
        return 0
    try:
        results = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is not valid JSON ({exc})") from None
    if args.what == "table1":
        md, csv_path = write_table1(results, args.out, stem=args.stem or "table1")
        print(md.read_text())
        _console().print(f"wrote {md} and {csv_path}")
    else:
        out = Path(args.out) / f"{args.stem or 'figure1'}.png"
        figure1(results.get("figure1", []), out, title=results.get("title", "Latency vs accuracy"),
                subtitle=results.get("machine", ""))
        _console().print(f"wrote {out}")
    return 0


def cmd_demo(args) -> int:
    from crossrec.demo import run_demo

    con = _console()
    with _train_progress("train DLRM", con) as on_event:
        summary = run_demo(Path(args.out), rows=args.rows, epochs=args.epochs, seed=args.seed, progress=on_event,
                           log=lambda msg: con.print(msg))
    from rich.table import Table

    table = Table(title="crossrec demo: synthetic Criteo-shaped data, planted teacher")
    table.add_column("what")
    table.add_column("value", justify="right")
    for k, v in summary.items():
        table.add_row(k, f"{v:.4g}" if isinstance(v, float) else str(v))
    con.print(table)
    return 0


def cmd_datasets(args) -> int:
    from crossrec.data import sources

    if args.action == "list":
        for name, about in sources.DATASETS.items():
            print(f"{name:16s} {about}")
        return 0
    if args.action == "generate":
        return _generate(args)
    if args.action == "fetch":
        dest = Path(args.dest) if args.dest else sources.cache_root() / "datasets"
        path = sources.fetch(args.name, dest, progress=lambda m: _console().print(m), source=args.source)
        print(path)
        return 0
    train_data, val_data, test_data = sources.load_splits(args.name, path=args.path, split=args.split, seed=args.seed,
                                                         rows=args.rows, cache_dir=args.cache_dir,
                                                         on_bad_row=args.on_bad_row)
    print(json.dumps({"dataset": args.name, "train": len(train_data), "val": len(val_data), "test": len(test_data),
                      "ctr": round(train_data.ctr, 5), "schema": train_data.schema.to_dict()["sparse"]}, indent=1))
    return 0


def _generate(args) -> int:
    """Stream a synthetic data set of any size into a memory-mapped cache, chunk by chunk."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from crossrec.data.synthetic import SyntheticConfig, write_cache

    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.force:
        raise DataError(f"{out} exists and is not empty; choose another --out or pass --force")
    cfg = SyntheticConfig(rows=args.rows, max_rows=args.max_rows, seed=args.seed)
    with Progress(TextColumn("[bold]generate"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=_console()) as bar:
        task = bar.add_task("generate", total=args.rows)
        data = write_cache(cfg, out, progress=lambda done, _total: bar.update(task, completed=done))
    print(json.dumps({"cache": str(out), "rows": len(data), "ctr": round(data.ctr, 5),
                      "tables": list(data.schema.cardinalities)}))
    return 0


def _add_data_args(p: argparse.ArgumentParser) -> None:
    from crossrec.data.sources import DATASETS

    p.add_argument("--data", default="synthetic", choices=sorted(DATASETS), help="which data set (default: synthetic)")
    _add_source_args(p)


def _add_source_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--path", help="data file or folder (default: ../shared/data/<dataset>, or the fetched copy)")
    p.add_argument("--split", default="random", help="'random' (seeded 80/10/10) or, for movielens, 'u1'")
    p.add_argument("--rows", type=int, default=None, help="synthetic: rows to generate (default 200000)")
    p.add_argument("--cache-dir", default=None, help="where preprocessed caches live (default ~/.cache/crossrec)")
    p.add_argument("--on-bad-row", choices=("error", "skip"), default="error",
                   help="malformed input rows: stop with an error naming file/line/field (default) or skip and count")
    p.add_argument("--seed", type=int, default=0, help="seed for splits, init and shuffling (default 0)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crossrec", description="Cross-hardware inference optimization for "
                                     "recommendation models. Start with `crossrec demo`.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="end to end on synthetic data: generate, train a DLRM, evaluate, save, reload")
    p.add_argument("--out", default="runs/demo", help="where to write the artifact (default runs/demo)")
    p.add_argument("--rows", type=int, default=1_000_000, help="synthetic rows (default 1000000)")
    p.add_argument("--epochs", type=int, default=3, help="training epochs (default 3)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("train", help="train a model and save it as an artifact")
    _add_data_args(p)
    p.add_argument("--model", default="dlrm", choices=sorted(MODELS), help="architecture (default dlrm)")
    p.add_argument("--out", required=True, help="artifact directory to write")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.add_argument("--embedding-dim", type=int, default=16)
    p.add_argument("--bottom-mlp", type=int, nargs="*", default=None, help="bottom MLP widths (default 64 DIM)")
    p.add_argument("--top-mlp", type=int, nargs="*", default=[256, 128], help="top MLP widths (default 256 128)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate for dense parameters")
    p.add_argument("--embedding-lr", type=float, default=1e-2, help="SparseAdam learning rate for tables")
    p.add_argument("--embedding-l2", type=float, default=0.0,
                   help="L2 penalty on the embeddings each batch looks up (MovieLens: 1e-2 helps)")
    p.add_argument("--dropout", type=float, default=0.0, help="dropout after each hidden top-MLP layer")
    p.add_argument("--patience", type=int, default=2, help="early stopping: evaluations without a better val AUC")
    p.add_argument("--config", help="a TrainConfig YAML/JSON file (overrides the training flags)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="AUC, log loss, NE and calibration of an artifact on a data set")
    p.add_argument("artifact")
    _add_data_args(p)
    p.add_argument("--on", choices=("test", "val"), default="test")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("compress", help="the fastest quantized variant inside an accuracy budget, measured here")
    p.add_argument("artifact", help="artifact directory, or a front.json from `crossrec search` (see --front-device)")
    _add_data_args(p)
    p.add_argument("--budget", default="0.1%", help="max relative AUC drop, e.g. 0.1%% or 0.001 (default 0.1%%)")
    p.add_argument("--device", default="cpu", choices=("cpu",), help="where to measure (only cpu so far)")
    p.add_argument("--objective", default="throughput", choices=("throughput", "latency", "size"))
    p.add_argument("--batch-size", type=int, default=512, help="batch size for the throughput measurement")
    p.add_argument("--runtime", default="eager", choices=("eager", "script", "compiled"),
                   help="runtime the candidates are timed on: eager (default), script (TorchScript: the fast "
                        "small-batch path; use with --objective latency --threads 1), compiled (inductor)")
    p.add_argument("--hugepages", action="store_true", help="with --runtime eager or script: time the candidates "
                   "with their large tables in transparent huge pages, as `crossrec serve` runs them by default "
                   "(1.3-1.7x faster random lookups on tables of hundreds of MB)")
    p.add_argument("--threads", type=int, default=None, help="torch threads while timing (default: torch's)")
    p.add_argument("--keep-uncompressed", action="store_true", help="let the model itself win when no candidate "
                   "measures better by --objective (default: always pick a compressed candidate)")
    p.add_argument("--out", required=True, help="artifact directory for the selected variant")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.add_argument("--front-device", default=None,
                   help="with a front.json: the device whose front to pick from ('local-cpu': this machine's CPU)")
    p.add_argument("--pick", default="fastest-within", help="with a front.json: fastest-within (default), "
                   "most-accurate, minmax, weighted, or a member index; its searched compression joins the candidates")
    p.set_defaults(func=cmd_compress)

    p = sub.add_parser("report", help="the survey's Table 1 (Markdown+CSV), Figure 1 or Figure 2 (PNG) from results")
    p.add_argument("what", choices=("table1", "figure1", "figure2"))
    p.add_argument("results", help="a results JSON written by benchmarks/table1.py, or for figure2 a front.json "
                                   "written by `crossrec search`")
    p.add_argument("--out", default="docs/results", help="output folder (default docs/results)")
    p.add_argument("--stem", default=None, help="file name without extension (default table1 / figure1)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("predict", help="batch inference: raw input file -> CSV of click probabilities")
    p.add_argument("artifact")
    p.add_argument("input", help="a file in the format the artifact was trained on (or a crossrec data cache)")
    p.add_argument("--out", required=True, help="CSV to write (row,probability)")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.add_argument("--on-bad-row", choices=("error", "skip"), default="error")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("datasets", help="list, fetch or prepare data sets")
    dsub = p.add_subparsers(dest="action", required=True)
    dsub.add_parser("list", help="data sets crossrec reads")
    f = dsub.add_parser("fetch", help="download a data set (movielens-100k), sha256-verified")
    f.add_argument("name", choices=("movielens-100k",))
    f.add_argument("--dest", default=None, help="folder to fetch into (default ~/.cache/crossrec/datasets)")
    f.add_argument("--source", default=None, help="use this local ml-100k folder or ml-100k.zip instead of "
                   "downloading (verified the same way)")
    g = dsub.add_parser("generate", help="stream synthetic planted-teacher data of any size into a cache")
    g.add_argument("--rows", type=int, required=True, help="rows to generate (100M+ is fine: streamed to disk)")
    g.add_argument("--max-rows", type=int, default=100_000, help="cap on every table's rows (default 100000)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--out", required=True, help="cache directory to write")
    g.add_argument("--force", action="store_true", help="write into a non-empty --out")
    pr = dsub.add_parser("prepare", help="preprocess a data set into its cache and print its shape")
    pr.add_argument("name")
    _add_source_args(pr)
    p.set_defaults(func=cmd_datasets)

    from crossrec.cli import profiling, searching, serving  # their commands import serve/search lazily

    serving.add_parsers(sub)
    searching.add_parsers(sub)
    profiling.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 2 bad input, 130 interrupted)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    start = time.perf_counter()
    try:
        code = args.func(args)
    except CrossrecError as exc:
        _console().print(f"[red]error:[/] {exc}")
        return 2
    except KeyboardInterrupt:
        _console().print("interrupted")
        return 130
    log.debug("done in %.1f s", time.perf_counter() - start)
    return code


if __name__ == "__main__":
    sys.exit(main())
