"""detect(): the local CPU always; CUDA GPUs only through torch.cuda, never touched when absent."""

from types import SimpleNamespace

import torch

from crossrec.hardware import detect, detect_cpu, load_catalog, match_catalog

CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse avx2 fma avx512f avx512bw avx512_vnni avx512_bf16 avx512_fp16 amx_tile amx_bf16 amx_int8

processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8480+
"""


def test_detect_finds_the_local_cpu():
    cpu = detect(cuda=False)[0]
    assert cpu.kind == "cpu" and cpu.torch_device == "cpu" and cpu.name
    assert cpu.logical_cores >= 1 and cpu.capability == torch.backends.cpu.get_cpu_capability()
    assert set(cpu.flags) <= {"avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx512_fp16",
                              "avx_vnni", "amx_tile", "amx_bf16", "amx_int8"}
    assert cpu.catalog_match is None or cpu.catalog_match in load_catalog()


def test_cpuinfo_parsing_and_catalog_match(tmp_path):
    (tmp_path / "cpuinfo").write_text(CPUINFO)
    (tmp_path / "meminfo").write_text("MemTotal:       1024 kB\nMemFree: 1 kB\n")
    cpu = detect_cpu(cpuinfo=tmp_path / "cpuinfo", meminfo=tmp_path / "meminfo")
    assert cpu.name == "Intel(R) Xeon(R) Platinum 8480+" and cpu.memory_bytes == 1024 * 1024
    assert cpu.flags == ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx512_fp16",
                         "amx_tile", "amx_bf16", "amx_int8")
    assert cpu.catalog_match == "xeon-8480"


def test_the_same_cloud_name_maps_by_isa_flags(tmp_path):
    # a 2-vCPU KVM slice reports the bare name "AMD EPYC" on a Zen 5 host and on an AVX2-only Zen 3 host
    (tmp_path / "meminfo").write_text("MemTotal:       1024 kB\n")
    found = {}
    for label, flags in {"zen5": "avx2 fma avx512f avx512bw avx512_vnni avx512_bf16", "zen3": "avx2 fma"}.items():
        (tmp_path / "cpuinfo").write_text(f"processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu {flags}\n")
        found[label] = detect_cpu(cpuinfo=tmp_path / "cpuinfo", meminfo=tmp_path / "meminfo").catalog_match
    assert found == {"zen5": "epyc-zen5-2vcpu", "zen3": "epyc-zen3-2vcpu"}
    zen3 = load_catalog()["epyc-zen3-2vcpu"]
    assert zen3.peak("int8") < load_catalog()["epyc-zen5-2vcpu"].peak("int8")  # no VNNI


def test_unreadable_cpuinfo_falls_back(tmp_path):
    cpu = detect_cpu(cpuinfo=tmp_path / "absent", meminfo=tmp_path / "absent")
    assert cpu.name and cpu.flags == () and cpu.memory_bytes is None


def test_match_catalog():
    assert match_catalog("AMD EPYC 9654 96-Core Processor", "cpu") == "epyc-9654"
    assert match_catalog("AMD EPYC", "cpu") == "epyc-zen5-2vcpu"  # no flags given: the name decides
    assert match_catalog("AMD EPYC 7B13", "cpu") is None
    assert match_catalog("NVIDIA A100-SXM4-80GB", "gpu") == "a100-sxm-80gb"
    assert match_catalog("NVIDIA A100 80GB PCIe", "gpu") is None
    assert match_catalog("NVIDIA H100 80GB HBM3", "cpu") is None  # kinds must agree


def test_no_cuda_means_cuda_is_never_touched(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("CUDA must not be queried when it is unavailable")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", boom)
    monkeypatch.setattr(torch.cuda, "get_device_properties", boom)
    devices = detect()
    assert [d.kind for d in devices] == ["cpu"]
    assert not torch.cuda.is_initialized()


def test_gpus_are_listed_and_mapped(monkeypatch):
    props = SimpleNamespace(name="NVIDIA H100 80GB HBM3", total_memory=85 * 10**9, major=9, minor=0,
                            multi_processor_count=132)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: props)
    cpu, gpu = detect()
    assert cpu.kind == "cpu"
    assert (gpu.kind, gpu.torch_device, gpu.capability, gpu.catalog_match) == ("gpu", "cuda:0", "9.0", "h100-sxm")
    assert gpu.memory_bytes == 85 * 10**9 and gpu.logical_cores == 132
    props.name = "NVIDIA H200"
    assert detect()[1].catalog_match == "h200-sxm"
    props.name = "NVIDIA L4"
    assert detect()[1].catalog_match is None


def test_detected_device_round_trips():
    cpu = detect(cuda=False)[0]
    assert type(cpu).from_json(cpu.to_json()) == cpu
