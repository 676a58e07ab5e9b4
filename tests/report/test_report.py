"""Reports render recorded results and always mark modeled figures."""

import csv

import pytest

from crossrec.errors import DataError
from crossrec.report import figure1, table1_rows, write_table1

RESULTS = {"title": "T", "machine": "m", "variants": [
    {"name": "Baseline", "size_bytes": 1000, "auc": 0.800, "cpu": {"samples_per_s": 100, "source": "measured"},
     "gpu": {"samples_per_s": 1000, "source": "modeled", "device": "h100-sxm"}},
    {"name": "Combined", "size_bytes": 90, "auc": 0.796, "cpu": {"samples_per_s": 700, "source": "measured"},
     "gpu": {"samples_per_s": 7000, "source": "modeled", "device": "h100-sxm"}}]}


def test_table1_marks_modeled_columns(tmp_path):
    rows = table1_rows(RESULTS)
    assert rows[1]["speed-up CPU"] == "7.00×" and rows[1]["speed-up GPU"] == "7.00× (modeled)"
    assert rows[1]["size reduction"] == "91.0%" and rows[1]["accuracy drop (relative AUC)"] == "0.50%"
    md, csv_path = write_table1(RESULTS, tmp_path)
    assert "**modeled**" in md.read_text() and "h100-sxm" in md.read_text()
    with open(csv_path) as f:
        assert list(csv.DictReader(f))[1]["method"] == "Combined"


def test_bad_results():
    with pytest.raises(DataError, match="no variants"):
        table1_rows({"variants": []})
    with pytest.raises(DataError, match="lacks"):
        table1_rows({"variants": [{"name": "x"}]})
    with pytest.raises(DataError, match="no points"):
        figure1([], "x.png")


def test_figure1_png(tmp_path):
    pts = [{"precision": p, "device": d, "latency_ms": lat, "auc": 0.8 - i * 0.001, "source": s}
           for i, (p, d, lat, s) in enumerate([("fp32", "cpu", 5.0, "measured"), ("int8", "cpu", 2.0, "measured"),
                                                ("fp16", "h100-sxm", 0.1, "modeled"), ("int4", "alveo-u280", 0.3,
                                                                                       "modeled")])]
    out = figure1(pts, tmp_path / "f1.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
