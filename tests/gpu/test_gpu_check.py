"""benchmarks/gpu_check.py ``--tiny`` on a real GPU: every Table 1 row runs on the cuda runtime and is recorded.

Marked ``gpu`` and skipped without CUDA. Asserts what ran and what was written, never how fast.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (torch.cuda.is_available() "
                                                                       "is False)")]

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", _PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses resolve the script's annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def test_tiny_run_on_cuda_measures_every_row(gpu_check, tmp_path):
    assert gpu_check.main(["--tiny", "--out", str(tmp_path), "--budget-s", "120"]) == 0
    rec = json.loads((tmp_path / "table1_gpu.json").read_text())
    md = (tmp_path / "table1_gpu.md").read_text()
    name = torch.cuda.get_device_name(0)
    assert rec["source"] == "measured" and rec["label"] == f"measured on {name}" and name in md
    assert "not a GPU measurement" not in md and rec["skipped"] == []
    rows = {r["name"]: r for r in rec["rows"]}
    assert list(rows) == ["Baseline (FP32)", "INT8 (tables + dense)", "Structured pruning 50%", "Distillation",
                          "Combined (distill + prune + quantize)"]
    assert {(r["runtime_info"]["runtime"], r["runtime_info"]["dtype"], r["runtime_info"]["table_dtype"])
            for n, r in rows.items() if n != "Baseline (FP32)"} == {("cuda", "bf16", "fp16")}
    assert rows["Baseline (FP32)"]["runtime_info"]["dtype"] == "fp32"
    assert rows["INT8 (tables + dense)"]["blockers"] and "no CUDA kernel" in rows["INT8 (tables + dense)"]["runs_as"]
    for fig in rec["summary"]["Combined (distill + prune + quantize)"]["resident"].values():
        assert fig["samples_per_s"] > 0 and fig["speedup"] > 0
