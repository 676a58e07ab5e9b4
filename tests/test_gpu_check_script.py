"""benchmarks/gpu_check.py: Table 1's GPU column on a CUDA GPU (issue #3), checked here on the CPU plumbing path.

The GPU run itself is tests/gpu/test_gpu_check.py (skipped without CUDA).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from crossrec.data.synthetic import SyntheticConfig
from crossrec.models import ModelSpec

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"
_spec = importlib.util.spec_from_file_location("gpu_check", _PATH)
gc_script = importlib.util.module_from_spec(_spec)
sys.modules["gpu_check"] = gc_script  # dataclasses resolve the script's annotations through sys.modules
_spec.loader.exec_module(gc_script)

ROWS = ("Baseline (FP32)", "INT8 (tables + dense)", "Structured pruning 50%", "Distillation",
        "Combined (distill + prune + quantize)")


@pytest.fixture(scope="module")
def spec() -> ModelSpec:
    import types

    return gc_script.baseline_spec(types.SimpleNamespace(data="synthetic"), SyntheticConfig(max_rows=50).schema())


def test_without_cuda_it_exits_2_and_says_why(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gc_script.main(["--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no CUDA GPU" in err and "--device cpu for a plumbing check" in err
    assert not list(tmp_path.iterdir()), "nothing is written without a measurement"


def test_cpu_plumbing_needs_out():
    with pytest.raises(SystemExit) as exc:
        gc_script.main(["--device", "cpu", "--tiny"])
    assert exc.value.code == 2


def test_cpu_plumbing_writes_every_row_labelled(tmp_path, capsys):
    assert gc_script.main(["--device", "cpu", "--tiny", "--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpu.jsonl", "table1_gpu.json", "table1_gpu.md"]
    md = (tmp_path / "table1_gpu.md").read_text()
    rec = json.loads((tmp_path / "table1_gpu.json").read_text())
    assert json.loads((tmp_path / "gpu.jsonl").read_text().strip()) == rec
    assert md.startswith("# Table 1, GPU column: plumbing check on CPU — not a GPU measurement")
    table = [line for line in md.splitlines() if line.startswith("| ") and not line.startswith("| method")]
    assert [line.split(" | ")[0][2:] for line in table] == list(ROWS)
    assert all("not a GPU measurement" in line for line in table)
    assert rec["source"] == "plumbing" and rec["skipped"] == [] and "accuracy is not measured" in rec["notes"]
    assert rec["complete"] is True and "Partial" not in md
    assert {r["source"] for r in rec["rows"]} == {"plumbing (CPU)"}
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[")]
    assert printed and all("not a GPU measurement" in line for line in printed)
    speed = rec["summary"]["Combined (distill + prune + quantize)"]["resident"]
    assert set(speed) == {"1", "64", "256"} and all(f["samples_per_s"] > 0 and f["speedup"] > 0 for f in speed.values())
    assert rec["summary"]["baseline"]["resident"]["256"]["pairs"] == len(ROWS)


def test_int8_falls_back_to_what_cuda_runs(spec):
    rows = gc_script.table1_rows(spec)
    assert list(rows) == list(ROWS)
    kept, found = gc_script.deployable(spec, rows["INT8 (tables + dense)"])
    assert kept == [] and any("FBGEMM" in f for f in found) and any("Int8StaticMLP" in f for f in found)
    kept, found = gc_script.deployable(spec, rows["Structured pruning 50%"])
    assert found == [] and kept == rows["Structured pruning 50%"]


def test_architectures_are_table1s_shapes(spec):
    rows = gc_script.table1_rows(spec)
    shapes = {}
    for name in ROWS[2:]:
        s = gc_script.effective_spec(gc_script.architecture(spec, rows[name]))
        shapes[name] = (s.embedding_dim, s.bottom_mlp, s.top_mlp)
    assert shapes == {"Structured pruning 50%": (64, (256, 128, 64), (256, 128)),
                      "Distillation": (64, (128, 64, 64), (128, 64)),
                      "Combined (distill + prune + quantize)": (8, (32, 8), (32,))}


def _fake_row(now: list, seconds: float, fail: bool = False):
    def measure_row(run, name, recipe, compiled=False):
        now[0] += seconds
        if fail and name == "Distillation":
            raise RuntimeError("CUDA out of memory")
        fig = {"samples_per_s": 10.0, "p50_ms": 1.0, "p99_ms": 1.0, "calls": 1}
        return {"name": name, "seconds": seconds, "pair": {"resident": {8: {"base": fig, "row": fig}}}}
    return measure_row


def test_time_guard_skips_rows_that_would_overrun(monkeypatch, spec):
    now = [0.0]
    monkeypatch.setattr(gc_script, "measure_row", _fake_row(now, 10.0))
    run = gc_script.Run(device="cpu", timing=gc_script.Timing(batch_sizes=(8,)), spec=spec, base_model=None,
                        base=None, batches={}, model_device="h100-sxm", budget_s=25.0, clock=lambda: now[0], start=0.0,
                        log=lambda _msg: None)
    done, skipped = gc_script.measure_all(run, gc_script.table1_rows(spec), compile_rows=False)
    assert [r["name"] for r in done] == list(ROWS[:2])  # 0 -> 10 -> 20 s; a third 10 s row would end past 25 s
    assert [s["name"] for s in skipped] == list(ROWS[2:])
    assert all("time guard" in s["reason"] for s in skipped)


def test_a_failing_row_is_recorded_and_the_rest_still_run(monkeypatch, spec):
    now = [0.0]
    monkeypatch.setattr(gc_script, "measure_row", _fake_row(now, 1.0, fail=True))
    run = gc_script.Run(device="cpu", timing=gc_script.Timing(batch_sizes=(8,)), spec=spec, base_model=None,
                        base=None, batches={}, model_device="h100-sxm", budget_s=1e9, clock=lambda: now[0], start=0.0,
                        log=lambda _msg: None)
    done, skipped = gc_script.measure_all(run, gc_script.table1_rows(spec), compile_rows=True)
    assert len(done) == 2 * len(ROWS) - 2 and done[-1]["name"] == ROWS[-1]
    assert [s["reason"] for s in skipped] == ["failed: RuntimeError: CUDA out of memory"] * 2


def test_a_killed_run_keeps_the_rows_measured_before(monkeypatch, tmp_path):
    calls = []

    def measure_row(run, name, recipe, compiled=False):
        calls.append(name)
        if len(calls) == 3:
            raise KeyboardInterrupt  # what `timeout` or a lost machine does to a row in flight
        fig = {"samples_per_s": 10.0, "p50_ms": 1.0, "p99_ms": 1.0, "calls": 1}
        pair = {m: {bs: {"base": fig, "row": fig} for bs in run.timing.batch_sizes}
                for m in ("resident", "host_to_host")}
        return {"name": name, "seconds": 0.0, "pair": pair, "runs_as": "x", "weights_bytes": 1, "modeled": {}}

    monkeypatch.setattr(gc_script, "measure_row", measure_row)
    with pytest.raises(KeyboardInterrupt):
        gc_script.main(["--device", "cpu", "--tiny", "--out", str(tmp_path)])
    rec = json.loads((tmp_path / "table1_gpu.json").read_text())
    assert rec["complete"] is False and [r["name"] for r in rec["rows"]] == list(ROWS[:2])
    assert "**Partial**" in (tmp_path / "table1_gpu.md").read_text()
