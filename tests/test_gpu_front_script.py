"""benchmarks/gpu_front.py: a search's GPU front re-timed on a GPU (issue #4), checked here on its CPU plumbing path."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from crossrec.hardware.features import CompressionChoice
from crossrec.models import ModelSpec, TableSpec
from crossrec.search.objectives import Evaluation
from crossrec.search.pareto import Candidate, build_front
from crossrec.search.space import Architecture

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_front.py"
_spec = importlib.util.spec_from_file_location("gpu_front_script", _PATH)
script = importlib.util.module_from_spec(_spec)
sys.modules["gpu_front_script"] = script
_spec.loader.exec_module(script)

GPU = "h200-sxm"


def cand(key: str, auc: float, ms: float, compression: str, top=(8,), device: str = GPU) -> Candidate:
    spec = ModelSpec(num_dense=2, tables=(TableSpec(name="a", num_embeddings=40), TableSpec(name="b",
                     num_embeddings=9)), embedding_dim=4, bottom_mlp=(4,), top_mlp=top, name=key)
    ev = Evaluation(auc=auc, auc_uncompressed=auc, model_bytes=1000, latency_ms={device: ms},
                    latency_source={device: "predicted"}, energy_per_1k_j={device: ms}, train_steps=1, train_s=0.0)
    return Candidate(key=key, arch=Architecture(spec=spec, compression=CompressionChoice.parse(compression),
                                                features=("a", "b")), evaluation=ev)


def write_front(path: Path, device: str = GPU) -> Path:
    members = [cand("fast", 0.70, 0.1, "int8/int8-static", device=device),
               cand("good", 0.75, 0.3, "fp16/bf16", top=(16, 8), device=device)]
    front = build_front(members, devices=(device,))
    front = dataclasses.replace(front, baseline={device: cand("base", 0.74, 0.5, "fp32/fp32", top=(32, 16),
                                                              device=device)})
    return front.save(path)


def test_plumbing_run_times_every_member_in_its_gpu_form(tmp_path):
    front = write_front(tmp_path / "front.json")
    out = tmp_path / "out"
    assert script.main([str(front), "--device", "cpu", "--out", str(out), "--batch-size", "8", "--rounds", "1"]) == 0
    rec = json.loads((out / "gpu_front.json").read_text())
    assert rec["source"] == "plumbing" and rec["result"]["gpu"] == GPU and rec["result"]["batch_size"] == 8
    rows = {m["key"]: m for m in rec["result"]["members"]}
    assert set(rows) == {"fast", "good"}
    assert rows["fast"]["runs_as"] == "fp16/bf16"  # int8 tables and static int8 MLPs have CPU kernels only
    assert rows["good"]["runs_as"] == "fp16/bf16" and rows["good"]["predicted_speedup"] == pytest.approx(0.5 / 0.3)
    assert all(m["measured_ms"] > 0 and m["baseline_measured_ms"] > 0 for m in rows.values())
    assert not rows["fast"]["dominates_strict"]  # its AUC is below the baseline's, whatever the speed
    assert "plumbing check on CPU" in (out / "gpu_front.md").read_text()


def test_a_front_without_a_gpu_is_refused_with_the_fix(tmp_path):
    front = write_front(tmp_path / "front.json", device="epyc-zen3-2vcpu")
    with pytest.raises(SystemExit, match="--gpu h200-sxm"):
        script.main([str(front), "--device", "cpu", "--out", str(tmp_path / "out")])


def test_without_cuda_it_exits_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert script.main([str(tmp_path / "front.json"), "--out", str(tmp_path)]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err
