"""Tables from recorded results: the survey's Table 1 layout, as Markdown and CSV.

Input is a *results record* (plain JSON, written by ``benchmarks/table1.py``)::

    {"title": ..., "machine": ..., "command": ...,
     "variants": [{"name": "INT8", "method": "int8", "size_bytes": ..., "auc": ...,
                   "cpu": {"samples_per_s": ..., "source": "measured"},
                   "gpu": {"samples_per_s": ..., "source": "modeled", "device": "h100-sxm"}}, ...]}

The first variant is the baseline every ratio is taken against. A ``modeled`` figure is always
marked as such in the output — never presented as measured.
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
    return f"{ratio:.2f}×{mark}"


def table1_rows(results: dict[str, Any]) -> list[dict[str, str]]:
    """One row per variant with the survey's Table 1 columns (ratios vs the first variant).

    >>> r = {"variants": [
    ...   {"name": "Baseline", "size_bytes": 100, "auc": 0.80, "cpu": {"samples_per_s": 10, "source": "measured"}},
    ...   {"name": "INT8", "size_bytes": 25, "auc": 0.7992, "cpu": {"samples_per_s": 28, "source": "measured"}}]}
    >>> table1_rows(r)[1]
    {'method': 'INT8', 'size reduction': '75.0%', 'speed-up CPU': '2.80×', 'speed-up GPU': 'n/a', \
'accuracy drop (relative AUC)': '0.10%'}
    """
    variants = results.get("variants") or []
    if not variants:
        raise DataError("results hold no variants: run benchmarks/table1.py first")
    base = variants[0]
    rows = []
    for v in variants:
        missing = [k for k in ("name", "size_bytes", "auc") if k not in v]
        if missing:
            raise DataError(f"variant {v.get('name', '?')!r} lacks {missing}")
        rows.append({"method": v["name"], "size reduction": f"{1 - v['size_bytes'] / base['size_bytes']:.1%}",
                     "speed-up CPU": _speedup(v, base, "cpu"), "speed-up GPU": _speedup(v, base, "gpu"),
                     "accuracy drop (relative AUC)": f"{(base['auc'] - v['auc']) / base['auc']:.2%}"})
    return rows


def write_table1(results: dict[str, Any], out_dir: str | Path, stem: str = "table1") -> tuple[Path, Path]:
    """Write ``<stem>.md`` and ``<stem>.csv`` under ``out_dir``; returns both paths."""
    rows = table1_rows(results)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md, csv_path = out / f"{stem}.md", out / f"{stem}.csv"
    lines = [f"# {results.get('title', 'Table 1')}", ""]
    for key in ("command", "machine", "notes"):
        if results.get(key):
            lines.append(f"{key.capitalize()}: {results[key]}  ")
    gpu_sources = {v["gpu"]["source"] for v in results["variants"] if "gpu" in v}
    if "modeled" in gpu_sources:
        device = next(v["gpu"].get("device", "GPU") for v in results["variants"] if "gpu" in v)
        lines.append(f"GPU column: **modeled** (roofline estimate for {device}; no GPU was measured).  ")
    lines += ["", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(r[c] for c in COLUMNS) + " |" for r in rows]
    md.write_text("\n".join(lines) + "\n")
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return md, csv_path
