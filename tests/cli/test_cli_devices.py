"""`crossrec devices`: the local CPU, its catalog entry and what crossrec does differently on it."""

import json

from crossrec.cli import main
from crossrec.cli.profiling import local_notes
from crossrec.hardware import detect_cpu, load_catalog


def test_devices_json_names_this_cpu_and_lists_the_catalog(capsys):
    assert main(["devices", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    cpu = out["detected"][0]
    assert cpu["kind"] == "cpu" and cpu["catalog_match"] == detect_cpu().catalog_match
    assert {d["name"] for d in out["catalog"]} == set(load_catalog())
    assert any(n.startswith("int8 GEMMs") for n in out["notes"]) and any(n.startswith("bf16") for n in out["notes"])


def test_devices_table_marks_this_machine(capsys):
    assert main(["devices"]) == 0
    err = capsys.readouterr().err
    assert "device catalog" in err and "h100-sxm" in err
    match = detect_cpu().catalog_match
    if match:
        assert f"{match} *" in err


def test_notes_follow_the_isa():
    zen3, zen5 = local_notes(("avx2", "fma"), False), local_notes(("avx2", "avx512f", "avx512_bf16"), True)
    assert "7-bit activations" in zen3[0] and "full 8-bit" in zen5[0]
    assert "converted to fp32" in zen3[1] and "native" in zen5[1]
    assert any("no AVX-512" in n for n in zen3) and not any("no AVX-512" in n for n in zen5)


def test_a_bad_catalog_file_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "c.yaml").write_text("devices: [{name: x}]\n")
    assert main(["devices", "--catalog", str(tmp_path / "c.yaml")]) == 2
    assert "error" in capsys.readouterr().err
