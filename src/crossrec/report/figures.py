"""Figures from recorded results (PNG): the survey's Figure 1, latency vs accuracy per precision.

Points are ``{"precision", "device", "latency_ms", "auc", "source"}``; measured points are filled
markers, modeled ones hollow, and the legend says which is which.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from crossrec.errors import DataError

_MARKERS = {"fp32": "o", "bf16": "s", "fp16": "s", "int8": "^", "int4": "D", "int2": "v"}


def figure1(points: list[dict[str, Any]], out_png: str | Path, *, title: str = "Latency vs accuracy",
            subtitle: str = "") -> Path:
    """Draw latency (log x) against test AUC, one colour per device, one marker per precision.

    >>> import tempfile
    >>> pts = [{"precision": "fp32", "device": "cpu", "latency_ms": 1.0, "auc": 0.8, "source": "measured"},
    ...        {"precision": "int8", "device": "fpga", "latency_ms": 0.2, "auc": 0.799, "source": "modeled"}]
    >>> figure1(pts, Path(tempfile.mkdtemp()) / "f.png").stat().st_size > 1000
    True
    """
    if not points:
        raise DataError("no points to draw: run benchmarks/table1.py first")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    devices = sorted({p["device"] for p in points})
    colours = {d: plt.cm.tab10(i) for i, d in enumerate(devices)}
    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=120)
    for p in points:
        c = colours[p["device"]]
        measured = p["source"] == "measured"
        ax.scatter(p["latency_ms"], p["auc"], marker=_MARKERS.get(p["precision"], "o"), s=60,
                   facecolors=c if measured else "none", edgecolors=c, linewidths=1.5)
        ax.annotate(p["precision"], (p["latency_ms"], p["auc"]), textcoords="offset points", xytext=(5, 4),
                    fontsize=7, color=c)
    for d in devices:  # legend entries: one per device, saying measured or modeled
        sources = sorted({p["source"] for p in points if p["device"] == d})
        ax.scatter([], [], marker="o", color=colours[d], label=f"{d} ({', '.join(sources)})")
    ax.set_xscale("log")
    ax.set_xlabel("latency per batch (ms, log scale)")
    ax.set_ylabel("test AUC (measured)")
    ax.set_title(title + (f"\n{subtitle}" if subtitle else ""), fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, title="filled = measured, hollow = modeled", title_fontsize=8)
    fig.tight_layout()
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
