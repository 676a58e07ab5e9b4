"""Reports render recorded results and always mark modeled figures."""

import csv

import pytest

from crossrec.errors import DataError
from crossrec.report import figure1, table1_rows, write_table1
from crossrec.report.tables import COLUMNS, cpu_runtimes

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


def _with_runtimes():
    """A record as benchmarks/table1.py writes it with --runtimes eager,script."""
    base = {"name": "Baseline (FP32)", "size_bytes": 1000, "auc": 0.800,
            "cpu": {"samples_per_s": 100, "source": "measured", "runtime": "eager"},
            "cpu_runtimes": {"eager": {"ratio": 1.0, "samples_per_s": 100, "auc": 0.800}}}
    combined = {"name": "Combined", "size_bytes": 30, "auc": 0.7990,
                "cpu": {"samples_per_s": 560, "source": "measured", "runtime": "script"},
                "cpu_runtimes": {"eager": {"ratio": 3.1, "samples_per_s": 310, "auc": 0.7991},
                                 "script": {"ratio": 5.6, "samples_per_s": 560, "auc": 0.7990}}}
    odd = {"name": "Odd", "size_bytes": 500, "auc": 0.79,
           "cpu": {"samples_per_s": 150, "source": "measured", "runtime": "eager"},
           "cpu_runtimes": {"eager": {"ratio": 1.5, "samples_per_s": 150, "auc": 0.79},
                            "script": {"error": "TorchScript could not trace 'odd': RuntimeError"}}}
    return {"title": "T", "machine": "m", "variants": [base, combined, odd]}


def test_table1_names_the_runtime_and_keeps_both_figures(tmp_path):
    rows = table1_rows(_with_runtimes())
    assert [r["speed-up CPU"] for r in rows] == ["1.00× (eager)", "5.60× (script)", "1.50× (eager)"]
    assert rows[1]["speed-up CPU eager"] == "3.10×" and rows[1]["speed-up CPU script"] == "5.60×"
    assert rows[0]["speed-up CPU script"] == "n/a" and rows[2]["speed-up CPU script"] == "failed"
    assert rows[1]["accuracy drop (relative AUC)"] == "0.13%"  # the AUC of the runtime shown (script)
    md, csv_path = write_table1(_with_runtimes(), tmp_path)
    text = md.read_text()
    assert "| Combined | 97.0% | 5.60× (script) | n/a | 0.13% |" in text
    assert "speed-up CPU eager" not in text  # the Markdown table keeps the survey's columns
    assert "the faster of eager, script" in text
    assert "Odd: runtime script failed (TorchScript could not trace 'odd': RuntimeError); shown on eager" in text
    with open(csv_path) as f:
        got = list(csv.DictReader(f))
    assert list(got[0]) == [*COLUMNS, "speed-up CPU eager", "speed-up CPU script"]
    assert (got[1]["speed-up CPU"], got[1]["speed-up CPU eager"], got[1]["speed-up CPU script"]) == (
        "5.60× (script)", "3.10×", "5.60×")
    assert got[2]["speed-up CPU script"] == "failed"


def test_table1_without_runtimes_keeps_the_old_layout(tmp_path):
    _, csv_path = write_table1(RESULTS, tmp_path)
    with open(csv_path) as f:
        assert list(next(csv.reader(f))) == list(COLUMNS)
    assert cpu_runtimes(RESULTS) == []


def test_table1_runtime_columns_need_a_baseline_cpu_figure():
    r = _with_runtimes()
    del r["variants"][0]["cpu"]
    with pytest.raises(DataError, match="baseline"):
        table1_rows(r)
