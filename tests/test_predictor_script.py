"""benchmarks/predictor.py: scoring a data set measured elsewhere (--score-only, --out), as after a GPU run."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from crossrec.hardware.collect import collect, random_specs
from crossrec.hardware.features import CompressionChoice

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "predictor.py"
if str(_PATH.parent) not in sys.path:  # the script imports common.py from beside it, as when run from there
    sys.path.insert(0, str(_PATH.parent))
_spec = importlib.util.spec_from_file_location("predictor_script", _PATH)
script = importlib.util.module_from_spec(_spec)
sys.modules["predictor_script"] = script
_spec.loader.exec_module(script)


def test_score_only_scores_a_data_set_without_measuring_and_writes_under_out(tmp_path, monkeypatch):
    data = tmp_path / "profiles.jsonl"
    specs = list(random_specs(6, seed=3, max_rows=500))
    choices = [CompressionChoice.parse(c) for c in ("fp32/fp32", "fp16/bf16")]
    recs = collect(specs, choices, [1, 8], out=data, device_label="gpu-x", repeats=3, warmup=0, min_time_s=0.0)
    collect(specs[:2], choices, [1, 8], out=tmp_path / "profiles_recheck.jsonl", device_label="recheck", repeats=3,
            warmup=0, min_time_s=0.0)
    monkeypatch.setattr(script, "collect", lambda *a, **k: pytest.fail("--score-only must not measure"))
    out = tmp_path / "out"
    assert script.main(["--score-only", "--device", "cuda", "--data", str(data), "--out", str(out), "--splits", "1",
                        "--recheck-specs", "2", "--batch-sizes", "1,8",
                        "--predictor-out", str(tmp_path / "p.json")]) == 0
    line = json.loads((out / "predictor.jsonl").read_text())
    res = line["results"]
    assert line["device"] == "gpu-x" and res["records"] == len(recs) == 24 and res["specs"] == 6
    assert res["repeatability"]["p50_ms"]["n"] == 8  # the recheck file beside the data, scored against it
    assert res["transfer"] is None  # the transfer study measures: never in --score-only
    page = (out / "predictor_gpu-x.md").read_text()
    assert "--score-only" in page and "scored on" in page and res["measured_on"]["torch"] in page
    assert (tmp_path / "p.json").exists()


def test_score_only_without_records_says_how_to_get_them(tmp_path, capsys):
    with pytest.raises(SystemExit):
        script.main(["--score-only", "--data", str(tmp_path / "none.jsonl"), "--out", str(tmp_path)])
    assert "no records in" in capsys.readouterr().err


def test_cuda_choices_have_no_cpu_only_kernel():
    spec = next(iter(random_specs(1, seed=0, max_rows=100)))
    assert all(not c.cpu_only_parts(spec) for c in script._choices("cuda"))
    assert any(c.cpu_only_parts(spec) for c in script._choices("cpu"))
