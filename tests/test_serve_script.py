"""benchmarks/serve.py (issue #5): the modeled ideal server it reports next to the measured ones.

The ladder itself needs real servers and minutes (it is a benchmark, run by hand and recorded in BENCHMARKS.md);
here: that the model behind its ``ideal (modeled)`` row behaves as a queue should."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

_DIR = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(_DIR))  # the script imports its sibling `common`
_spec = importlib.util.spec_from_file_location("serve_script", _DIR / "serve.py")
script = importlib.util.module_from_spec(_spec)
sys.modules["serve_script"] = script
_spec.loader.exec_module(script)

LINEAR = {1: 0.1, 700: 14.0}  # ~20 us per item, single thread: about the Zen 3 measured in session 9


def test_at_light_load_p99_is_the_largest_requests_compute_and_splitting_halves_it():
    whole = script.ideal_p99_ms(LINEAR, 2.0, split_items=None, requests=4000)
    split = script.ideal_p99_ms(LINEAR, 2.0, split_items=128, requests=4000)
    assert 10.0 < whole <= 14.0  # the p99 request is big, and nothing queues at 2 req/s
    assert split == pytest.approx(whole / 2, rel=0.1)


def test_p99_grows_with_load_and_explodes_past_capacity():
    # 2 replicas x 1000 ms / ~6 ms per mean request: capacity ~330 req/s
    p99 = [script.ideal_p99_ms(LINEAR, rate, requests=6000) for rate in (20, 150, 280, 400)]
    assert p99 == sorted(p99)
    assert p99[-1] > 10 * p99[0]


def test_the_ladder_reports_the_best_rate_inside_each_slo_and_says_it_is_modeled():
    args = SimpleNamespace(start_qps=20.0, factor=1.3, max_qps=5000.0, split_items=128, slo_ms=25.0)
    out = script.ideal_ladder(LINEAR, args)
    assert out["modeled"] is True and out["best"] is out["by_slo"]["25.0"]
    inside = [s for s in out["steps"] if s["p99_ms"] <= 25.0]
    assert out["best"]["items_s"] == max(s["items_s"] for s in inside)
    assert out["by_slo"]["100.0"]["items_s"] >= out["by_slo"]["50.0"]["items_s"] >= out["best"]["items_s"]
    assert out["steps"][-1]["p99_ms"] > 100.0  # it climbed until p99 passed 4x the largest SLO


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
def test_the_cpu_meter_splits_a_servers_cpu_into_its_front_and_its_children():
    import subprocess
    import time

    # a "server" that starts a busy child (its worker) and idles itself
    code = ("import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', "
            "'import time\\nt = time.time()\\nwhile time.time() - t < 1.5: pass']); time.sleep(3)")
    server = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.time() + 10
        while len(script.process_tree(server.pid)) < 2 and time.time() < deadline:
            time.sleep(0.05)
        assert len(script.process_tree(server.pid)) == 2  # the front and its worker
        meter = script.CpuMeter(server.pid)
        meter.start()
        time.sleep(0.8)
        cpu = meter.stop(requests=10)
    finally:
        server.kill()
        server.wait()
    assert cpu["workers_cpu_ms"] > 20.0  # ~0.8 s busy over 10 "requests": ~80 ms each (less on a loaded machine)
    assert cpu["front_cpu_ms"] < cpu["workers_cpu_ms"] / 4  # the front slept
    assert cpu["client_cpu_ms"] >= 0.0


def test_an_unknown_server_is_refused_before_anything_is_built(capsys):
    with pytest.raises(SystemExit) as exc:
        script.main(["--servers", "crossrec,crossrec-fast"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "unknown 'crossrec-fast'" in err and "crossrec-learnt" in err  # names what is known
    assert set(script.CROSSREC_VARIANTS) >= {"crossrec", "crossrec-learnt", "crossrec-normal"}
