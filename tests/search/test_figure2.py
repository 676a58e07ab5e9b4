"""Figure 2 from a real front.json: one colour per device, sources in the legend, the baseline marked."""

from __future__ import annotations

import pytest

from crossrec.errors import DataError
from crossrec.report.figure2 import draw_fronts, figure2
from crossrec.search import ParetoFront, build_front, search


def test_figure2_from_a_search(make_config, tiny_splits, fast_tmp):
    import matplotlib.pyplot as plt

    cfg = make_config(devices=["epyc-zen5-2vcpu", "alveo-u280"], n_trials=4, latency={"repeats": 2, "warmup": 0})
    result = search(cfg, splits=tiny_splits, local_device="epyc-zen5-2vcpu")
    png = figure2(result.front_path, fast_tmp / "fig" / "figure2.png")
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    fig = draw_fronts(ParetoFront.load(result.front_path))
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    plt.close(fig)
    assert "epyc-zen5-2vcpu (measured, batch 64)" in labels and "alveo-u280 (modeled, batch 64)" in labels
    assert "hand-designed baseline" in labels
    colours = {tuple(c.get_edgecolor()[0]) for c in fig.axes[0].collections if c.get_label().endswith(")")}
    assert len(colours) == 2  # one colour per device


def test_figure2_refuses_a_front_without_members(fast_tmp):
    path = build_front([], devices=("h100-sxm",)).save(fast_tmp / "empty.json")
    with pytest.raises(DataError, match="no device has front members"):
        figure2(path, fast_tmp / "x.png")
