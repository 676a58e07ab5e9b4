"""`crossrec profile`: measure random architectures into a JSONL dataset for the latency predictor (#4)."""

from __future__ import annotations

from pathlib import Path

from crossrec.cli import _console
from crossrec.errors import ConfigError


def _ints(text: str, what: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ConfigError(f"{what} = {text!r} is invalid: comma-separated integers, e.g. 1,64,512") from None
    if not values or min(values) < 1:
        raise ConfigError(f"{what} = {text!r} is invalid: at least one integer >= 1")
    return values


# What `--runtime` offers: the CPU runtimes a profile data set is worth collecting on (the search times CPU
# candidates on script; eager is the default so old commands reproduce). Others can be collected from Python.
PROFILE_RUNTIMES: tuple[str, ...] = ("eager", "script")


def cmd_profile(args) -> int:
    from crossrec.hardware.collect import read_records, run_profile
    from crossrec.hardware.predictor import LatencyPredictor

    con = _console()
    runtime = args.runtime
    loader = None
    if runtime != "eager":
        from crossrec.runtime import load as loader  # injected: hardware may not import runtime (DESIGN.md §2)
    choices = [c.strip() for c in args.choices.split(",")] if args.choices else None
    con.print(f"profiling {args.n} random architectures on {args.device} ({runtime} runtime) into {args.out} "
              "(resumes if it exists); weights are random: latency does not depend on them")
    run_profile(args.out, n=args.n, batch_sizes=_ints(args.batch_sizes, "--batch-sizes"), choices=choices,
                choices_per_spec=args.choices_per_spec, seed=args.seed, max_rows=args.max_rows,
                max_table_bytes=int(args.max_table_mb * 2**20), repeats=args.repeats, warmup=args.warmup,
                min_time_s=args.min_time_s, threads=args.threads, device=args.device,
                device_label=args.device_label, catalog_device=args.catalog_device, progress=con.print,
                runtime=runtime, loader=loader)
    records = read_records(args.out)
    per_runtime = {r: sum(1 for x in records if x.runtime == r) for r in sorted({x.runtime for x in records})}
    fallbacks = sum(1 for x in records if x.fallback)
    con.print(f"{len(records)} measured records in {args.out} (per runtime: {per_runtime}"
              + (f"; {fallbacks} timed on eager because their runtime could not run them" if fallbacks else "") + ")")
    if args.fit:
        LatencyPredictor().fit(records).save(args.fit)
        con.print(f"fitted a latency predictor on them: {args.fit}")
    return 0


def add_parsers(sub) -> None:
    p = sub.add_parser("profile", help="measure random architectures x compressions x batch sizes into a JSONL "
                                       "dataset (and fit the latency predictor on it)")
    p.add_argument("--out", required=True, type=Path, help="JSONL file (appended; rerun to resume)")
    p.add_argument("--n", type=int, default=100, help="random architectures (default 100)")
    p.add_argument("--batch-sizes", default="1,64,512", help="comma-separated (default 1,64,512)")
    p.add_argument("--choices", default=None, help="compressions as EMB/DENSE, e.g. fp32/fp32,int8/bf16 "
                                                   "(default: --choices-per-spec sampled per architecture)")
    p.add_argument("--choices-per-spec", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch threads while measuring (default: torch's)")
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--min-time-s", type=float, default=0.3, help="measure each point at least this long")
    p.add_argument("--max-rows", type=int, default=200_000, help="cap on rows per table")
    p.add_argument("--max-table-mb", type=float, default=256, help="cap on one architecture's table bytes, MB")
    p.add_argument("--device", default="cpu")
    p.add_argument("--runtime", choices=PROFILE_RUNTIMES, default="eager",
                   help="time the variants on this crossrec runtime (default eager; script = TorchScript trace + "
                        "freeze, what the search times CPU candidates on); variants it cannot run are timed on "
                        "eager and their records say so")
    p.add_argument("--device-label", default=None, help="name this device's records (default: detected)")
    p.add_argument("--catalog-device", default=None, help="hardware catalog name of the device")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fit", type=Path, default=None, help="also fit a LatencyPredictor and save it (JSON) here "
                                                         "(one model per device and runtime in the file)")
    p.set_defaults(func=cmd_profile)
