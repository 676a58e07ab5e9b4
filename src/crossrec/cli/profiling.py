"""`crossrec profile`: measure random architectures into a JSONL dataset for the latency predictor (#4)."""

from __future__ import annotations

from pathlib import Path

from crossrec.cli import _console
from crossrec.errors import ConfigError
from crossrec.hardware.detect import native_bf16


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


def local_notes(cpu_flags: tuple[str, ...], vnni: bool) -> list[str]:
    """What crossrec does differently on a CPU with these ISA flags (the choices that depend on them).

    >>> local_notes(("avx2", "fma"), False)[0]
    'int8 GEMMs: no AVX512-VNNI, so static int8 uses 7-bit activations and ORT int8 7-bit weights (u8 x s8 pairs \
would saturate int16)'
    """
    notes = ["int8 GEMMs: AVX512-VNNI present, full 8-bit activations" if vnni else
             "int8 GEMMs: no AVX512-VNNI, so static int8 uses 7-bit activations and ORT int8 7-bit weights "
             "(u8 x s8 pairs would saturate int16)"]
    notes.append("bf16: native (AVX512-BF16/AMX): the dot interaction runs in bf16" if native_bf16(cpu_flags)
                 else "bf16: no AVX512-BF16, so bf16 is converted to fp32 around every op (measured 0.14x fp32 speed "
                      "on a Zen 3): compute stays fp32; bf16 variants are measured, rarely chosen")
    if "avx512f" not in cpu_flags:
        notes.append("no AVX-512: FBGEMM and oneDNN run their AVX2 kernels")
    return notes


def _num(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def cmd_devices(args) -> int:
    import json

    from rich.table import Table

    from crossrec.hardware.detect import detect
    from crossrec.hardware.spec import load_catalog
    from crossrec.models.static_int8 import has_vnni

    catalog = load_catalog(args.catalog)
    found = detect(catalog=catalog)
    cpu = found[0]
    notes = local_notes(cpu.flags, has_vnni())
    if args.json:
        print(json.dumps({"detected": [d.to_dict() for d in found], "notes": notes,
                          "catalog": [d.to_dict() for d in catalog.values()]}, indent=2))
        return 0
    con = _console()
    for d in found:
        match = d.catalog_match or "[yellow]no catalog entry[/] (estimates need one: add it to a catalog file)"
        con.print(f"[bold]{d.kind}[/] {d.name}: {match}; {d.logical_cores} cores, "
                  f"ISA {' '.join(d.flags) or '-'} (torch capability {d.capability})")
    for n in notes:
        con.print(f"  - {n}")
    here = {d.catalog_match for d in found}
    table = Table(title="device catalog: peaks in TFLOP/s (TOP/s for int8), memory GB/s",
                  caption="* = this machine: measured here; every other device is modeled from these figures")
    for col in ("device", "kind", "fp32", "bf16", "fp16", "int8", "GB/s", "W", "$/h"):
        table.add_column(col, justify="left" if col in ("device", "kind") else "right", no_wrap=col == "device")
    for d in catalog.values():
        peak = [_num(d.peak_tops[p]) if p in d.peak_tops else "-" for p in ("fp32", "bf16", "fp16", "int8")]
        table.add_row(d.name + (" *" if d.name in here else ""), d.kind, *peak, _num(d.memory_bandwidth_gbps),
                      _num(d.power_w), f"{d.price_per_hour_usd:.2f}")
    con.print(table)
    return 0


def add_parsers(sub) -> None:
    p = sub.add_parser("devices", help="this machine's CPU/GPUs, the catalog entry each maps to (by name and ISA "
                                       "flags), what crossrec does differently here, and the device catalog")
    p.add_argument("--catalog", default=None, help="a catalog YAML file (default: the one shipped with crossrec)")
    p.add_argument("--json", action="store_true", help="print JSON to stdout instead of tables")
    p.set_defaults(func=cmd_devices)
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
