"""`crossrec profile --runtime`: the flag parses, reaches collect(), and its records say the runtime."""

import pytest

from crossrec.cli import build_parser, main
from crossrec.hardware.collect import read_records

BASE = ["profile", "--n", "1", "--batch-sizes", "1", "--choices", "fp32/fp32,int8/int8", "--repeats", "2",
        "--warmup", "0", "--min-time-s", "0", "--max-rows", "50", "--max-table-mb", "0.01", "--threads", "1"]


def test_runtime_flag_parses_with_eager_by_default(tmp_path):
    parser = build_parser()
    assert parser.parse_args(["profile", "--out", str(tmp_path / "p.jsonl")]).runtime == "eager"
    assert parser.parse_args(["profile", "--out", "p.jsonl", "--runtime", "script"]).runtime == "script"
    with pytest.raises(SystemExit):
        parser.parse_args(["profile", "--out", "p.jsonl", "--runtime", "tensorrt"])


def test_profile_on_script_records_the_runtime_next_to_eager(tmp_path, capsys):
    out, fit = tmp_path / "p.jsonl", tmp_path / "pred.json"
    assert main([*BASE, "--out", str(out)]) == 0
    assert main([*BASE, "--out", str(out), "--runtime", "script", "--fit", str(fit)]) == 0
    recs = read_records(out)
    assert [r.runtime for r in recs] == ["eager", "eager", "script", "script"] and not any(r.fallback for r in recs)
    text = " ".join(capsys.readouterr().err.split())  # the CLI talks on stderr (rich wraps its lines)
    assert "(script runtime)" in text and "per runtime: {'eager': 2, 'script': 2}" in text
    from crossrec.hardware.predictor import LatencyPredictor

    label = recs[0].device
    assert set(LatencyPredictor.load(fit).models) == {label, f"{label}@script"}
    assert main([*BASE, "--out", str(out), "--runtime", "script"]) == 0 and len(read_records(out)) == 4  # resumed
