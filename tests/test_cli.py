"""The command line end to end: demo, train, evaluate, predict, datasets; bad input -> exit 2."""

import json

import pytest

from crossrec.cli import build_parser, main


def test_demo_runs_end_to_end(tmp_path, capsys):
    assert main(["demo", "--rows", "4000", "--epochs", "1", "--out", str(tmp_path / "demo")]) == 0
    err = capsys.readouterr().err
    assert "test AUC ceiling" in err and "reloaded predictions identical" in err
    assert (tmp_path / "demo" / "manifest.json").is_file()


def test_train_evaluate_predict_on_synthetic(tmp_path, capsys):
    art = tmp_path / "art"
    assert main(["train", "--data", "synthetic", "--rows", "3000", "--model", "dcnv2", "--epochs", "1",
                 "--out", str(art)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert 0.0 <= out["test"]["auc"] <= 1.0
    assert main(["evaluate", str(art), "--data", "synthetic", "--rows", "3000"]) == 0
    assert json.loads(capsys.readouterr().out)["auc"] == pytest.approx(out["test"]["auc"])


def test_train_and_predict_movielens(tmp_path, capsys, shared_data):
    art = tmp_path / "ml"
    ml = shared_data / "ml-100k"
    assert main(["train", "--data", "movielens-100k", "--path", str(ml), "--model", "fm", "--epochs", "1",
                 "--out", str(art)]) == 0
    capsys.readouterr()
    preds = tmp_path / "p.csv"
    assert main(["predict", str(art), str(ml / "u1.test"), "--out", str(preds)]) == 0
    lines = preds.read_text().splitlines()
    assert lines[0] == "row,probability" and len(lines) == 20001
    assert all(0.0 < float(line.split(",")[1]) < 1.0 for line in lines[1:50])
    assert main(["predict", str(art), str(ml / "u1.test"), "--out", str(preds)]) == 2  # exists: nothing lost
    assert "already exists" in capsys.readouterr().err


def test_train_and_predict_criteo_sample(tmp_path, capsys, shared_data, monkeypatch):
    monkeypatch.setenv("CROSSREC_CACHE", str(tmp_path / "cache"))
    art = tmp_path / "criteo"
    src = shared_data / "criteo-sample" / "train.txt"
    assert main(["train", "--data", "criteo", "--path", str(src), "--epochs", "1", "--out", str(art)]) == 0
    capsys.readouterr()
    head = tmp_path / "head.txt"
    head.write_text("".join(src.read_text().splitlines(keepends=True)[:100]))
    assert main(["predict", str(art), str(head), "--out", str(tmp_path / "p.csv")]) == 0
    assert len((tmp_path / "p.csv").read_text().splitlines()) == 101
    unlabelled = tmp_path / "test_head.txt"  # Kaggle test.txt layout: 39 fields, no label
    unlabelled.write_text("".join((src.parent / "test.txt").read_text().splitlines(keepends=True)[:50]))
    assert main(["predict", str(art), str(unlabelled), "--out", str(tmp_path / "q.csv")]) == 0
    assert len((tmp_path / "q.csv").read_text().splitlines()) == 51


def test_bad_input_exits_2_with_a_clear_message(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "missing"), "--data", "synthetic", "--rows", "100"]) == 2
    assert "not an artifact directory" in capsys.readouterr().err
    assert main(["train", "--data", "criteo", "--path", str(tmp_path / "none.txt"), "--out", str(tmp_path / "a")]) == 2
    assert "--path" in capsys.readouterr().err
    assert main(["train", "--data", "synthetic", "--split", "u1", "--out", str(tmp_path / "a")]) == 2


def test_help_lists_every_command():
    text = build_parser().format_help()
    for cmd in ("demo", "train", "evaluate", "predict", "datasets"):
        assert cmd in text


def test_generate_streams_a_cache(tmp_path, capsys):
    from crossrec.data import load_cache

    assert main(["datasets", "generate", "--rows", "5000", "--max-rows", "50", "--out", str(tmp_path / "g")]) == 0
    assert json.loads(capsys.readouterr().out)["rows"] == 5000
    assert len(load_cache(tmp_path / "g")) == 5000
    assert main(["datasets", "generate", "--rows", "10", "--out", str(tmp_path / "g")]) == 2  # nothing overwritten


def test_compress_selects_and_saves_a_loadable_variant(tmp_path, capsys):
    from crossrec.artifact import load_artifact

    art, out = tmp_path / "art", tmp_path / "small"
    assert main(["train", "--data", "synthetic", "--rows", "4000", "--epochs", "1", "--out", str(art)]) == 0
    capsys.readouterr()
    assert main(["compress", str(art), "--data", "synthetic", "--rows", "4000", "--budget", "50%",
                 "--batch-size", "64", "--out", str(out)]) == 0
    chosen = json.loads(capsys.readouterr().out)["chosen"]
    variant = load_artifact(out)
    assert variant.manifest["info"]["selection"]["chosen"]["name"] == chosen
    assert variant.manifest["compression"]
    # batch-1 latency timed on the TorchScript runtime with one thread: recorded with the selection
    assert main(["compress", str(art), "--data", "synthetic", "--rows", "4000", "--budget", "50%", "--objective",
                 "latency", "--runtime", "script", "--threads", "1", "--keep-uncompressed", "--hugepages",
                 "--out", str(tmp_path / "b1")]) == 0
    chosen = json.loads(capsys.readouterr().out)["chosen"]
    b1 = load_artifact(tmp_path / "b1")
    assert (chosen == "baseline") == (not b1.manifest["compression"])  # the model itself may win here
    info = b1.manifest["info"]
    assert info["measured_on"] == {"runtime": "script", "threads": 1, "hugepages": True}
    assert info["selection"]["objective"] == "latency" and info["selection"]["notes"]["runtime_options"] == {
        "hugepages": True}
    assert main(["compress", str(art), "--data", "synthetic", "--rows", "4000", "--budget", "lots",
                 "--out", str(tmp_path / "x")]) == 2


def test_report_commands(tmp_path, capsys):
    results = {"title": "T", "variants": [
        {"name": "Baseline", "size_bytes": 10, "auc": 0.8, "cpu": {"samples_per_s": 1, "source": "measured"}},
        {"name": "INT8", "size_bytes": 3, "auc": 0.8, "cpu": {"samples_per_s": 3, "source": "measured"}}],
        "figure1": [{"precision": "fp32", "device": "cpu", "latency_ms": 1, "auc": 0.8, "source": "measured"}]}
    path = tmp_path / "r.json"
    path.write_text(json.dumps(results))
    assert main(["report", "table1", str(path), "--out", str(tmp_path)]) == 0
    assert "| INT8 | 70.0% | 3.00× |" in capsys.readouterr().out
    assert main(["report", "figure1", str(path), "--out", str(tmp_path)]) == 0
    assert (tmp_path / "figure1.png").is_file()
    assert main(["report", "table1", str(tmp_path / "none.json")]) == 2
