"""The device catalog: ships as package data, loads, validates, and rejects bad files."""

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from crossrec.errors import ConfigError
from crossrec.hardware import PRECISIONS, DeviceSpec, default_catalog_path, get_device, load_catalog

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


def _write(tmp_path, devices, **top):
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "devices": devices, **top}))
    return path


def _toy(**over):
    d = {"name": "toy", "kind": "cpu", "peak_tops": {"fp32": 1.0}, "memory_bandwidth_gbps": 10.0,
         "memory_bytes": 2**30, "power_w": 10.0, "price_per_hour_usd": 0.1, "price_basis": "amortized",
         "source": "test"}
    d.update(over)
    return d


def test_catalog_has_the_required_device_classes(catalog):
    assert {"epyc-zen5-2vcpu", "a100-sxm-80gb", "h100-sxm", "tpu-v4", "alveo-u280"} <= set(catalog)
    assert {d.kind for d in catalog.values()} == {"cpu", "gpu", "tpu", "fpga"}
    servers = [d for d in catalog.values() if d.kind == "cpu" and (d.cores or 0) >= 32]
    assert servers, "a full server CPU belongs in the catalog"
    assert any("amx" in d.description.lower() for d in servers)


def test_every_device_has_the_required_fields(catalog):
    for d in catalog.values():
        assert d.description and d.source, d.name
        assert d.peak_tops and set(d.peak_tops) <= set(PRECISIONS), d.name
        assert d.memory_bandwidth_gbps > 0 and d.memory_bytes > 0 and d.power_w > 0, d.name
        assert d.price_per_hour_usd > 0 and d.price_basis in ("on_demand", "amortized"), d.name
        assert d.match, f"{d.name} needs match patterns so detect() can map to it"
        if d.kind != "cpu":
            assert d.host_link_gbps and d.launch_overhead_us > 0, d.name


def test_local_cpu_entry_uses_the_measured_bandwidth(catalog):
    local = catalog["epyc-zen5-2vcpu"]
    assert local.memory_bandwidth_source == "measured" and 30 <= local.memory_bandwidth_gbps <= 60
    assert local.cores == 2 and local.supports("bf16") and local.supports("int8") and not local.supports("fp16")


def test_catalog_is_package_data():
    assert default_catalog_path().is_file()
    text = (ROOT / "pyproject.toml").read_text()
    assert '"hardware/catalog.yaml"' in text


def test_every_number_in_the_catalog_file_has_a_comment():
    """Every number carries its source: a comment on its line, or above it within the same block."""
    lines = default_catalog_path().read_text().splitlines()

    def indent(s):
        return len(s) - len(s.lstrip())

    for i, line in enumerate(lines):
        key, _, value = line.strip().partition(":")
        value = value.split("#")[0].strip()
        if key in ("version", "cores") or not value.replace(".", "", 1).isdigit() or "#" in line:
            continue
        j = i - 1
        while j >= 0 and indent(lines[j]) == indent(line) and "#" not in lines[j]:
            j -= 1
        assert j >= 0 and indent(lines[j]) == indent(line) and "#" in lines[j], \
            f"catalog.yaml line {i + 1} has a number without a source comment: {line.strip()}"


def test_round_trip(catalog):
    for d in catalog.values():
        assert DeviceSpec.from_json(d.to_json()) == d


def test_get_device_unknown_lists_known_names():
    with pytest.raises(ConfigError, match="unknown device 'v100'.*h100-sxm"):
        get_device("v100")


def test_unsupported_precision_names_what_is_supported():
    with pytest.raises(ConfigError, match="does not support 'fp32'.*bf16, int8"):
        get_device("tpu-v4").peak("fp32")


def test_custom_catalog_file(tmp_path):
    cat = load_catalog(_write(tmp_path, [_toy()]))
    assert list(cat) == ["toy"] and cat["toy"].peak("fp32") == 1.0
    assert get_device("toy", _write(tmp_path, [_toy()])).kind == "cpu"


@pytest.mark.parametrize("bad,match", [
    ({"bandwith_gbps": 3}, "unknown key 'bandwith_gbps'; valid keys: .*memory_bandwidth_gbps"),
    ({"kind": "asic"}, "kind: 'asic' is not one of"),
    ({"peak_tops": {"fp64": 1.0}}, r"peak_tops = 'fp64' is invalid"),
    ({"peak_tops": {"fp32": -1.0}}, r"peak_tops.fp32 = -1.0 is invalid: > 0"),
    ({"peak_tops": {}}, "peak_tops"),
    ({"memory_bandwidth_gbps": 0}, "memory_bandwidth_gbps = 0.0 is invalid"),
    ({"memory_bytes": "lots"}, "memory_bytes: expected int"),
    ({"price_basis": "spot"}, "price_basis: 'spot' is not one of"),
    ({"host_link_gbps": -1}, "host_link_gbps = -1.0 is invalid"),
    ({"gather_efficiency": 0}, "gather_efficiency = 0.0 is invalid"),
    ({"embedding_precisions": ["fp64"]}, "embedding_precisions"),
    ({"match": ["("]}, "match = '\\(' is invalid: a regular expression"),
    ({"name": "Bad Name"}, "name = 'Bad Name' is invalid"),
])
def test_bad_values_raise_config_error(tmp_path, bad, match):
    with pytest.raises(ConfigError, match=match):
        load_catalog(_write(tmp_path, [_toy(**bad)]))


def test_missing_field_and_bad_file_shape(tmp_path):
    d = _toy()
    del d["power_w"]
    with pytest.raises(ConfigError, match="power_w"):
        load_catalog(_write(tmp_path, [d]))
    with pytest.raises(ConfigError, match="unknown key 'gpus'"):
        load_catalog(_write(tmp_path, [_toy()], gpus=[]))
    with pytest.raises(ConfigError, match=r"devices = \['toy'\] is invalid: unique device names"):
        load_catalog(_write(tmp_path, [_toy(), _toy()]))
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_catalog(tmp_path / "list.yaml")
    (tmp_path / "broken.yaml").write_text("devices: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_catalog(tmp_path / "broken.yaml")
    with pytest.raises(ConfigError, match="does not exist"):
        load_catalog(tmp_path / "absent.yaml")


def test_replace_revalidates():
    d = get_device("h100-sxm")
    with pytest.raises(ConfigError, match="power_w"):
        dataclasses.replace(d, power_w=0)


def test_import_hardware_loads_neither_torch_nor_models():
    code = ("import sys, crossrec.hardware; bad = [m for m in ('torch', 'crossrec.models') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
