"""benchmarks/gpu_serve.py (issue #5, a CPU + a GPU replica): its plan, metrics parsing and page, without a server.

The whole script runs in seconds-long steps against a real server; it was checked end to end with ``--device cpu``
(a second CPU replica). Here: the pieces that decide what it reports."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_serve.py"
_spec = importlib.util.spec_from_file_location("gpu_serve_script", _PATH)
script = importlib.util.module_from_spec(_spec)
sys.modules["gpu_serve_script"] = script
_spec.loader.exec_module(script)

METRICS = """# HELP crossrec_batch_items Items per computed batch
crossrec_batch_items_sum{replica="dlrm/cpu#0"} 300.0
crossrec_batch_items_count{replica="dlrm/cpu#0"} 3.0
crossrec_batch_items_sum{replica="dlrm/cuda#0"} 900.0
crossrec_batch_items_count{replica="dlrm/cuda#0"} 2.0
crossrec_compute_seconds_sum{device="h200-sxm",replica="dlrm/cuda#0"} 0.004
crossrec_compute_seconds_sum{device="epyc-zen3-2vcpu",replica="dlrm/cpu#0"} 0.03
"""


def test_the_plan_puts_one_replica_on_each_device(tmp_path):
    plan = script.plan_for(tmp_path / "a", 8000, "cuda", "latency-aware", cpu_threads=4, slo_ms=25.0)
    (dep,) = plan.deployments
    assert [(r.device, r.threads, r.count) for r in dep.replicas] == [("cpu", 4, 1), ("cuda", 1, 1)]
    assert plan.routing.policy == "latency-aware" and plan.port == 8000


def test_metrics_are_summed_per_replica_and_differenced():
    before = script.per_replica(METRICS)
    assert before["dlrm/cuda#0"] == {"items": 900.0, "batches": 2.0, "compute_s": pytest.approx(0.004)}
    cuda_count = 'crossrec_batch_items_count{replica="dlrm/cuda#0"}'
    after = script.per_replica(METRICS.replace("900.0", "1900.0").replace(f"{cuda_count} 2.0", f"{cuda_count} 4.0"))
    moved = script.delta(after, before)
    assert moved["dlrm/cuda#0"]["items"] == 1000.0 and moved["dlrm/cpu#0"]["items"] == 0.0


def test_the_page_says_when_it_is_only_a_plumbing_check():
    step = {"offered_qps": 50.0, "p50_ms": 3.21, "p99_ms": None, "items_s": 1234.0, "ok": 10, "requests": 10,
            "replicas": {"dlrm/cpu#0": {"items_share": 0.25, "mean_batch_items": 100.0, "mean_compute_ms": 9.0},
                         "dlrm/cpu#1": {"items_share": 0.75, "mean_batch_items": None, "mean_compute_ms": None}}}
    rec = {"gpu": script.PLUMBING, "source": "plumbing", "command": "x", "date": "d", "host_cores": 2, "torch": "t",
           "args": vars(SimpleNamespace(cpu_threads=1, step_s=4.0)), "runs": [{"policy": "round-robin",
                                                                              "steps": [step]}]}
    page = script.markdown(rec)
    assert "a second CPU replica" in page and "cuda runtime" not in page
    assert "| round-robin | 50 | 3.2 | - | 1,234 | 10 / 10 | 25% / 75% | 100 / - | 9 / - |" in page
