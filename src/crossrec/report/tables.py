"""Tables from recorded results: the survey's Table 1 layout, as Markdown and CSV.

Input is a *results record* (plain JSON, written by ``benchmarks/table1.py``)::

    {"title": ..., "machine": ..., "command": ...,
     "variants": [{"name": "INT8", "method": "int8", "size_bytes": ..., "auc": ...,
                   "cpu": {"samples_per_s": ..., "source": "measured", "runtime": "script"},
                   "cpu_runtimes": {"eager": {"samples_per_s": ..., "auc": ...},
                                    "script": {"samples_per_s": ..., "auc": ...}},
                   "gpu": {"samples_per_s": ..., "source": "modeled", "device": "h100-sxm"}}, ...]}

The first variant is the baseline every ratio is taken against. A ``modeled`` figure is always
marked as such in the output — never presented as measured. ``cpu`` is the figure the table shows;
when it names its ``runtime`` the cell says which (``"2.46× (script)"``). ``cpu_runtimes`` (optional)
keeps every runtime's figure — or ``{"error": ...}`` where that runtime could not run the variant —
and the CSV gets one ``speed-up CPU <runtime>`` column per runtime, so the faster one is shown without
hiding the other.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from crossrec.errors import DataError

COLUMNS = ("method", "size reduction", "speed-up CPU", "speed-up GPU", "accuracy drop (relative AUC)")


def _speedup(v: dict, base: dict, device: str) -> str:
    if device not in v or device not in base:
        return "n/a"
    ratio = v[device]["samples_per_s"] / base[device]["samples_per_s"]
    mark = "" if v[device]["source"] == "measured" and base[device]["source"] == "measured" else " (modeled)"
    runtime = f" ({v[device]['runtime']})" if v[device].get("runtime") else ""
    return f"{ratio:.2f}×{runtime}{mark}"


def cpu_runtimes(results: dict[str, Any]) -> list[str]:
    """Runtimes any variant records in ``cpu_runtimes``, in first-seen order (eager first when present).

    >>> cpu_runtimes({"variants": [{"cpu_runtimes": {"script": {}, "eager": {}}}, {}]})
    ['eager', 'script']
    """
    seen: list[str] = []
    for v in results.get("variants") or []:
        seen += [r for r in v.get("cpu_runtimes", {}) if r not in seen]
    return sorted(seen, key=lambda r: r != "eager")  # stable: eager first, the rest as seen


def _runtime_cell(v: dict, base: dict, runtime: str) -> str:
    fig = v.get("cpu_runtimes", {}).get(runtime)
    if fig is None:
        return "n/a"
    if "error" in fig:
        return "failed"
    return f"{fig['samples_per_s'] / base['cpu']['samples_per_s']:.2f}×"


def table1_rows(results: dict[str, Any]) -> list[dict[str, str]]:
    """One row per variant with the survey's Table 1 columns (ratios vs the first variant), plus one
    ``speed-up CPU <runtime>`` column per runtime in :func:`cpu_runtimes`.

    >>> r = {"variants": [
    ...   {"name": "Baseline", "size_bytes": 100, "auc": 0.80, "cpu": {"samples_per_s": 10, "source": "measured"}},
    ...   {"name": "INT8", "size_bytes": 25, "auc": 0.7992, "cpu": {"samples_per_s": 28, "source": "measured"}}]}
    >>> table1_rows(r)[1]
    {'method': 'INT8', 'size reduction': '75.0%', 'speed-up CPU': '2.80×', 'speed-up GPU': 'n/a', \
'accuracy drop (relative AUC)': '0.10%'}
    >>> r["variants"][1]["cpu"]["runtime"] = "script"
    >>> r["variants"][1]["cpu_runtimes"] = {"eager": {"samples_per_s": 19}, "script": {"samples_per_s": 28}}
    >>> row = table1_rows(r)[1]
    >>> row["speed-up CPU"], row["speed-up CPU eager"], row["speed-up CPU script"]
    ('2.80× (script)', '1.90×', '2.80×')
    """
    variants = results.get("variants") or []
    if not variants:
        raise DataError("results hold no variants: run benchmarks/table1.py first")
    base, runtimes = variants[0], cpu_runtimes(results)
    if runtimes and "cpu" not in base:
        raise DataError(f"variant {base.get('name', '?')!r} (the baseline) has cpu_runtimes but no cpu figure")
    rows = []
    for v in variants:
        missing = [k for k in ("name", "size_bytes", "auc") if k not in v]
        if missing:
            raise DataError(f"variant {v.get('name', '?')!r} lacks {missing}")
        row = {"method": v["name"], "size reduction": f"{1 - v['size_bytes'] / base['size_bytes']:.1%}",
               "speed-up CPU": _speedup(v, base, "cpu"), "speed-up GPU": _speedup(v, base, "gpu"),
               "accuracy drop (relative AUC)": f"{(base['auc'] - v['auc']) / base['auc']:.2%}"}
        row.update({f"speed-up CPU {r}": _runtime_cell(v, base, r) for r in runtimes})
        rows.append(row)
    return rows


def _header(results: dict[str, Any]) -> list[str]:
    """The Markdown lines above the table: provenance, modeled columns, runtimes that failed a variant."""
    lines = [f"# {results.get('title', 'Table 1')}", ""]
    for key in ("command", "machine", "notes"):
        if results.get(key):
            lines.append(f"{key.capitalize()}: {results[key]}  ")
    gpu_sources = {v["gpu"]["source"] for v in results["variants"] if "gpu" in v}
    if "modeled" in gpu_sources:
        device = next(v["gpu"].get("device", "GPU") for v in results["variants"] if "gpu" in v)
        lines.append(f"GPU column: **modeled** (roofline estimate for {device}; no GPU was measured).  ")
    runtimes = cpu_runtimes(results)
    if len(runtimes) > 1:
        lines.append(f"CPU column: the faster of {', '.join(runtimes)} for each row, named; every figure is in "
                     "the CSV.  ")
    for v in results["variants"]:
        for r, fig in v.get("cpu_runtimes", {}).items():
            if "error" in fig:
                lines.append(f"{v['name']}: runtime {r} failed ({fig['error']}); "
                             f"shown on {v.get('cpu', {}).get('runtime', 'eager')}.  ")
    return lines


def write_table1(results: dict[str, Any], out_dir: str | Path, stem: str = "table1") -> tuple[Path, Path]:
    """Write ``<stem>.md`` (the faster CPU runtime per row) and ``<stem>.csv`` (every runtime's speed-up
    as well) under ``out_dir``; returns both paths."""
    rows = table1_rows(results)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md, csv_path = out / f"{stem}.md", out / f"{stem}.csv"
    lines = _header(results)
    lines += ["", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(r[c] for c in COLUMNS) + " |" for r in rows]
    md.write_text("\n".join(lines) + "\n")
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return md, csv_path
