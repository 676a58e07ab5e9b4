"""Figure 2 (the survey's): per-device Pareto fronts of an architecture search, from a ``front.json``.

One colour per device. Every candidate the search evaluated is a faint dot; the device's front is
drawn as a staircase of markers — filled where the latency was measured here, hollow where it was
predicted or modeled, and the legend names each device's latency source. The hand-designed
baseline is a star in the device's colour. Latency is per call of the search's batch size
(log scale), at the device's batch size; AUC is the proxy validation AUC of the compressed candidate.
"""

from __future__ import annotations

from pathlib import Path

from crossrec.errors import DataError


def figure2(front_path: str | Path, out_png: str | Path, *, baseline: bool = True, title: str | None = None,
            devices: tuple[str, ...] | None = None) -> Path:
    """Draw the fronts in ``front_path`` (a ``front.json``) to ``out_png``; returns the PNG's path.

    >>> import tempfile
    >>> from crossrec.models.spec import ModelSpec, TableSpec
    >>> from crossrec.search import Architecture, Candidate, Evaluation, build_front
    >>> spec = ModelSpec(num_dense=1, tables=(TableSpec(name="a", num_embeddings=5),), embedding_dim=4,
    ...                  bottom_mlp=(4,), top_mlp=(8,))
    >>> def cand(auc, cpu, fpga):
    ...     ev = Evaluation(auc=auc, auc_uncompressed=auc, model_bytes=10, latency_ms={"cpu": cpu, "fpga": fpga},
    ...                     latency_source={"cpu": "measured", "fpga": "modeled"}, energy_per_1k_j={}, train_steps=1,
    ...                     train_s=0)
    ...     return Candidate(key=str(auc), arch=Architecture(spec=spec, features=("a",)), evaluation=ev)
    >>> cands = [cand(0.80, 2.0, 0.2), cand(0.78, 1.0, 0.3), cand(0.75, 3.0, 0.1)]
    >>> front = build_front(cands, devices=("cpu", "fpga"), baseline={"cpu": cands[0], "fpga": cands[0]})
    >>> d = Path(tempfile.mkdtemp())
    >>> figure2(front.save(d / "front.json"), d / "figure2.png").stat().st_size > 1000
    True
    """
    import matplotlib

    from crossrec.search.pareto import ParetoFront

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = draw_fronts(ParetoFront.load(front_path), baseline=baseline, title=title, devices=devices)
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def draw_fronts(front, *, baseline: bool = True, title: str | None = None, devices: tuple[str, ...] | None = None):
    """The matplotlib Figure of :func:`figure2` for a loaded ``ParetoFront`` (caller closes it)."""
    import matplotlib.pyplot as plt

    devices = devices or front.devices
    if not any(front.fronts.get(d) for d in devices):
        raise DataError(f"no device has front members to draw (devices {list(devices)}): did every trial fail?")
    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    for k, device in enumerate(devices):
        colour = plt.cm.tab10(k % 10)
        _draw_device(ax, front, device, colour)
        base = front.baseline.get(device)
        if baseline and base is not None and base.latency(device) is not None:
            ax.scatter(base.latency(device), base.evaluation.auc, marker="*", s=220, color=colour,
                       edgecolors="black", linewidths=0.8, zorder=5)
    if baseline and front.baseline:
        ax.scatter([], [], marker="*", s=160, color="white", edgecolors="black", label="hand-designed baseline")
    ax.set_xscale("log")
    ax.set_xlabel("latency per call (ms, log scale; batch size per device in the legend)")
    ax.set_ylabel("validation AUC (proxy training, compressed)")
    data = front.info.get("data", {})
    subtitle = ", ".join(str(x) for x in (data.get("name"), front.info.get("strategy")) if x)
    ax.set_title((title or "Per-device Pareto fronts (Figure 2)") + (f"\n{subtitle}" if subtitle else ""),
                 fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, title="filled = measured here; hollow = predicted/modeled", title_fontsize=8)
    fig.tight_layout()
    return fig


def _draw_device(ax, front, device: str, colour) -> None:
    points = [(c.latency(device), c.evaluation.auc) for c in front.candidates if c.latency(device) is not None]
    if points:
        ax.scatter(*zip(*points), s=10, color=colour, alpha=0.2, linewidths=0)
    members = front.members(device)
    if not members:
        return
    sources = front.sources(device)
    batch = (front.info.get("batch_size") or {}).get(device)
    lat = [c.latency(device) for c in members]
    auc = [c.evaluation.auc for c in members]
    ax.plot(lat, auc, drawstyle="steps-post", color=colour, linewidth=1.2, alpha=0.8)
    measured = [c.evaluation.latency_source.get(device) == "measured" for c in members]
    ax.scatter(lat, auc, s=36, facecolors=[colour if m else "none" for m in measured], edgecolors=[colour] * len(lat),
               linewidths=1.4, label=f"{device} ({', '.join(sources) or 'no source'}"
               + (f", batch {batch})" if batch else ")"), zorder=4)
