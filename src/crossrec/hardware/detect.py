"""`detect()`: what this machine has — the CPU and any CUDA GPUs — mapped to catalog entries.

CPU facts come from ``/proc/cpuinfo`` (model name, ISA flags) with :mod:`platform` as a
fallback; ``torch.backends.cpu.get_cpu_capability()`` says which vectorized kernels torch
picked. GPUs are listed through ``torch.cuda`` only when ``torch.cuda.is_available()``, which
queries the driver without creating a CUDA context; importing this module touches neither
torch nor CUDA.

Each detected device names the closest catalog entry (``catalog_match``) when one of the
entry's ``match`` patterns finds its name, else ``None``: a device without a catalog entry can
still be profiled, but not estimated.

>>> cpu = detect(cuda=False)[0]
>>> cpu.kind, cpu.logical_cores >= 1
('cpu', True)
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from crossrec.config import Config
from crossrec.hardware.spec import DeviceSpec, load_catalog

# Device name a config may use for "this machine's CPU" (search devices, compress --front-device): it
# resolves to the catalog entry detect_cpu() matches.
LOCAL_CPU = "local-cpu"

# CPU flags with a native bf16 dot product: without one, torch converts bf16 to fp32 around every op
# (measured 0.14x fp32 speed on a Zen 3, BENCHMARKS.md §4), so crossrec computes in fp32 there.
BF16_FLAGS: tuple[str, ...] = ("avx512_bf16", "amx_bf16")


def native_bf16(flags: tuple[str, ...] | list[str] | set[str]) -> bool:
    """True if these ISA flags include a native bf16 dot product.

    >>> native_bf16(("avx2", "avx512_bf16")), native_bf16(("avx2", "fma"))
    (True, False)
    """
    return bool(set(BF16_FLAGS) & set(flags))


# ISA flags that decide which CPU kernels are fast (AVX-512 VNNI/BF16 for int8/bf16 GEMMs, AMX tiles).
CPU_FLAGS_OF_INTEREST: tuple[str, ...] = (
    "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni",
    "amx_tile", "amx_bf16", "amx_int8")


@dataclass(frozen=True, kw_only=True)
class DetectedDevice(Config):
    """One local device. ``torch_device`` is what to pass to :func:`crossrec.hardware.profile`.

    >>> DetectedDevice(kind="cpu", name="AMD EPYC", torch_device="cpu", logical_cores=2).catalog_match is None
    True
    """

    kind: Literal["cpu", "gpu"]
    name: str
    torch_device: str
    logical_cores: int | None = None
    memory_bytes: int | None = None
    flags: tuple[str, ...] = ()
    capability: str | None = None  # torch CPU capability ("AVX512") or CUDA compute capability ("9.0")
    catalog_match: str | None = None


def _read_cpuinfo(path: Path) -> tuple[str | None, tuple[str, ...]]:
    try:
        text = path.read_text()
    except OSError:
        return None, ()
    name, flags = None, ()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and name is None:
            name = value.strip()
        elif key in ("flags", "Features") and not flags:  # x86 / ARM
            flags = tuple(value.split())
        if name is not None and flags:
            break
    return name, flags


def _mem_total(path: Path) -> int | None:
    try:
        for line in path.read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def match_catalog(name: str, kind: str, catalog: dict[str, DeviceSpec] | None = None,
                  flags: tuple[str, ...] | None = None) -> str | None:
    """Name of the first catalog entry of ``kind`` whose patterns match ``name`` (and whose
    ``requires_flags`` are all in ``flags``, when given), else None.

    >>> match_catalog("NVIDIA H100 80GB HBM3", "gpu"), match_catalog("NVIDIA H100 PCIe", "gpu")
    ('h100-sxm', None)
    >>> match_catalog("NVIDIA H200", "gpu"), match_catalog("NVIDIA H200 NVL", "gpu")
    ('h200-sxm', None)
    >>> match_catalog("AMD EPYC", "cpu", flags=("avx2", "avx512f", "avx512_vnni", "avx512_bf16"))
    'epyc-zen5-2vcpu'
    >>> match_catalog("AMD EPYC", "cpu", flags=("avx2", "fma"))
    'epyc-zen3-2vcpu'
    """
    catalog = load_catalog() if catalog is None else catalog
    for spec in catalog.values():
        if spec.kind == kind and spec.matches(name, flags):
            return spec.name
    return None


def detect_cpu(*, cpuinfo: str | Path = "/proc/cpuinfo", meminfo: str | Path = "/proc/meminfo",
               catalog: dict[str, DeviceSpec] | None = None) -> DetectedDevice:
    """The local CPU (paths injectable for tests)."""
    name, flags = _read_cpuinfo(Path(cpuinfo))
    name = name or platform.processor() or platform.machine() or "unknown CPU"
    try:
        import torch

        capability = torch.backends.cpu.get_cpu_capability()
    except (ImportError, AttributeError):  # pragma: no cover - torch is a dependency
        capability = None
    have = set(flags)
    return DetectedDevice(kind="cpu", name=name, torch_device="cpu",
                          logical_cores=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                          else os.cpu_count(),
                          memory_bytes=_mem_total(Path(meminfo)),
                          flags=tuple(f for f in CPU_FLAGS_OF_INTEREST if f in have), capability=capability,
                          catalog_match=match_catalog(name, "cpu", catalog, flags=tuple(have)))


def detect_cuda(catalog: dict[str, DeviceSpec] | None = None) -> list[DetectedDevice]:
    """Every visible CUDA GPU, or ``[]`` when CUDA is unavailable (no context is created then)."""
    import torch

    if not torch.cuda.is_available():
        return []
    out = []
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        out.append(DetectedDevice(kind="gpu", name=p.name, torch_device=f"cuda:{i}",
                                  logical_cores=getattr(p, "multi_processor_count", None),
                                  memory_bytes=int(p.total_memory), capability=f"{p.major}.{p.minor}",
                                  catalog_match=match_catalog(p.name, "gpu", catalog)))
    return out


def detect(*, cuda: bool = True, catalog: dict[str, DeviceSpec] | None = None) -> list[DetectedDevice]:
    """The local CPU first, then CUDA GPUs (when ``cuda`` and available).

    For a GPU, ``logical_cores`` is its streaming-multiprocessor count.
    """
    catalog = load_catalog() if catalog is None else catalog
    devices = [detect_cpu(catalog=catalog)]
    if cuda:
        devices += detect_cuda(catalog)
    return devices
