"""`crossrec plan`, `serve`, `loadgen`, `search` and `profile` from the command line, end to end on loopback."""

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from crossrec.artifact import save_artifact
from crossrec.cli import main
from crossrec.data.synthetic import SyntheticConfig, generate
from crossrec.models import ModelSpec, build


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    data = generate(SyntheticConfig(rows=500, num_sparse=3, max_rows=10, seed=0))
    model = build(ModelSpec.for_schema(data.schema, embedding_dim=4, bottom_mlp=(4,), top_mlp=(8,)), seed=0)
    return save_artifact(tmp_path_factory.mktemp("cli") / "a", model, data.schema)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_plan_writes_an_editable_plan(artifact, tmp_path, capsys):
    out = tmp_path / "plan.yaml"
    assert main(["plan", str(artifact), "--out", str(out), "--replicas", "1", "--policy", "least-outstanding"]) == 0
    text = out.read_text()
    assert "least-outstanding" in text and str(artifact) in text
    assert main(["plan", str(artifact), "--out", str(out)]) == 2  # exists: nothing overwritten
    assert "already exists" in capsys.readouterr().err


def test_serve_and_loadgen_refuse_bad_input_clearly(tmp_path, capsys):
    assert main(["serve", str(tmp_path / "nothing")]) == 2
    assert "neither an artifact directory" in capsys.readouterr().err
    assert main(["loadgen", "ftp://x"]) == 2
    assert "http://" in capsys.readouterr().err
    assert main(["search", str(tmp_path / "missing.yaml")]) == 2


def test_serve_then_loadgen_from_the_cli(artifact, tmp_path, capsys):
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "crossrec.cli", "serve", str(artifact), "--port", str(port),
                             "--replicas", "1", "--workers", "0"], cwd=Path(__file__).resolve().parents[1])
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, "crossrec serve exited early"
            time.sleep(0.5)
        out = tmp_path / "load.jsonl"
        assert main(["loadgen", url, "--rate", "20", "--duration", "2", "--sizes", "fixed:16",
                     "--out", str(out)]) == 0
        assert "req/s" in capsys.readouterr().out
        assert out.read_text().count("\n") >= 10
    finally:
        proc.terminate()
        assert proc.wait(60) == 0  # SIGTERM: graceful shutdown, exit 0


def test_profile_collects_resumes_and_fits(tmp_path, capsys):
    out, fit = tmp_path / "p.jsonl", tmp_path / "pred.json"
    args = ["profile", "--out", str(out), "--n", "2", "--batch-sizes", "1,8", "--choices", "fp32/fp32",
            "--repeats", "2", "--warmup", "1", "--min-time-s", "0", "--max-rows", "50", "--threads", "1"]
    assert main([*args, "--fit", str(fit)]) == 0
    lines = out.read_text().splitlines()
    assert len(lines) == 4 and fit.is_file()  # 2 architectures x 1 choice x 2 batch sizes
    assert main(args) == 0 and len(out.read_text().splitlines()) == 4  # resumed: nothing measured twice
    assert main([*args[:5], "--batch-sizes", "1,x"]) == 2
    assert "comma-separated" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["search-movielens.yaml", "search-synthetic.yaml"])
def test_shipped_search_examples_load(name):
    from crossrec.config import load
    from crossrec.search import SearchConfig

    cfg = load(Path(__file__).resolve().parents[1] / "examples" / name, SearchConfig)
    assert "local-cpu" in cfg.devices and cfg.n_trials >= 1
    # every other device is a catalog entry: the search checks that only once it starts
    from crossrec.hardware import load_catalog

    assert set(cfg.devices) - {"local-cpu"} <= set(load_catalog())


def test_search_front_feeds_compress(tmp_path, capsys):
    """`crossrec search` writes a front; `crossrec compress FRONT.json --front-device D` compresses a member."""
    import yaml

    cfg = {"name": "cli", "data": {"name": "synthetic", "rows": 3000}, "n_trials": 3,
           "space": {"embedding_dims": [4, 8], "interaction_dims": [4, 8], "bottom_depths": [0, 1],
                     "bottom_widths": [8], "top_depths": [1], "top_widths": [8, 16],
                     "table_precisions": ["fp32", "int8"], "dense_precisions": ["fp32", "bf16"]},
           "devices": ["alveo-u280", "h100-sxm"], "strategy": {"name": "random"},
           "proxy": {"train": {"epochs": 1, "max_steps": 3, "batch_size": 256}}, "latency": {"batch_size": 64},
           "baseline": {"embedding_dim": 4, "bottom_mlp": [8, 4], "top_mlp": [8]}, "out": str(tmp_path / "s")}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["search", str(tmp_path / "s.yaml"), "--no-figure", "--auc-tolerance", "lots"]) == 2
    assert "--auc-tolerance 'lots'" in capsys.readouterr().err
    assert main(["search", str(tmp_path / "s.yaml"), "--no-figure", "--auc-tolerance", "0.01"]) == 0
    front = tmp_path / "s" / "front.json"
    assert front.is_file()
    dominance = json.loads(capsys.readouterr().out)["dominance"]
    assert set(dominance) == {"alveo-u280", "h100-sxm"}
    assert main(["compress", str(front), "--data", "synthetic", "--rows", "3000", "--out", str(tmp_path / "c")]) == 2
    assert "--front-device" in capsys.readouterr().err
    assert main(["compress", str(front), "--front-device", "h100-sxm", "--data", "synthetic", "--rows", "3000",
                 "--budget", "50%", "--out", str(tmp_path / "c")]) == 0
    assert (tmp_path / "c" / "manifest.json").is_file()
