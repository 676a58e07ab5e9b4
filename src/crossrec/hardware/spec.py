"""`DeviceSpec` and the device catalog: hardware is data (DESIGN.md §3).

A :class:`DeviceSpec` says what a device *is* — peak throughput per precision, memory
bandwidth and capacity, power, price — and where each number came from. The catalog ships
with the package as YAML (``catalog.yaml`` beside this module, every number with its source
in a comment); nothing in code hard-codes a device. Load another file with
``load_catalog(path)``; unknown keys and invalid values raise
:class:`~crossrec.errors.ConfigError` naming the device, the field, the value and what is allowed.

Units: ``peak_tops`` is tera-operations per second, dense (no structured sparsity): TFLOP/s
for float precisions, TOP/s for integer ones; a precision that is absent is unsupported.
``memory_bandwidth_gbps`` and ``host_link_gbps`` are GB/s (10^9 bytes/s, per direction).

This module is layer 1 (DESIGN.md §2): it imports only errors, config and data.

>>> h100 = get_device("h100-sxm")
>>> h100.kind, h100.peak("bf16"), h100.supports("int4")
('gpu', 989.4, False)
>>> get_device("a100")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
crossrec.errors.ConfigError: unknown device 'a100'; known devices: a100-sxm-80gb, alveo-u280, ...
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

from crossrec.config import Config, check
from crossrec.errors import ConfigError

DeviceKind = Literal["cpu", "gpu", "tpu", "fpga"]
KINDS: tuple[str, ...] = ("cpu", "gpu", "tpu", "fpga")
# Compute precisions a device may list in ``peak_tops`` (tf32: NVIDIA tensor-core float32).
PRECISIONS: tuple[str, ...] = ("fp32", "tf32", "bf16", "fp16", "fp8", "int8", "int4")
# Storage formats of embedding rows (row-wise quantized int8/int4/int2 carry a scale and bias per row).
EMBEDDING_PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "bf16", "int8", "int4", "int2")
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


@dataclass(frozen=True, kw_only=True)
class DeviceSpec(Config):
    """One device of the catalog. ``price_basis`` says whether the hourly price is an on-demand
    cloud rate or a purchase price amortized over its life; ``memory_bandwidth_source`` says
    whether the bandwidth is a datasheet peak or a measured (STREAM) figure.

    ``gather_efficiency`` (optional, measured where known) is the fraction of the streaming
    bandwidth that random embedding-row gathers reach on this device; ``None`` leaves it to
    :func:`~crossrec.hardware.estimate`'s default. ``launch_overhead_us`` is a fixed per-call
    overhead (dispatching one compiled program / CUDA graph and waiting for it); ``op_overhead_us`` is
    paid per operator of an eager call (:func:`~crossrec.hardware.features.eager_ops`: one kernel launch and
    its Python dispatch each; fitted on measured records where the entry says so, else 0).
    ``host_link_gbps`` is the host link (PCIe) per direction, ``None`` for a CPU. ``match`` holds
    regular expressions (case-insensitive, ``re.search``) that map a detected device's name to
    this entry (see :mod:`crossrec.hardware.detect`); ``requires_flags`` are ISA flags (as
    ``/proc/cpuinfo`` spells them) a detected CPU must also have: a cloud slice reports the bare name
    "AMD EPYC" on a Zen 3 and on a Zen 5 host alike, and only the flags tell them apart.

    >>> d = DeviceSpec(name="toy", kind="cpu", peak_tops={"fp32": 0.1}, memory_bandwidth_gbps=10,
    ...                memory_bytes=2**30, power_w=10, price_per_hour_usd=0.01, price_basis="amortized")
    >>> d.peak("fp32"), d.supports("bf16")
    (0.1, False)
    >>> DeviceSpec.from_dict({**d.to_dict(), "kind": "asic"})
    Traceback (most recent call last):
    ...
    crossrec.errors.ConfigError: DeviceSpec.kind: 'asic' is not one of 'cpu', 'gpu', 'tpu', 'fpga'
    """

    name: str
    kind: DeviceKind
    description: str = ""
    peak_tops: dict[str, float]
    memory_bandwidth_gbps: float
    memory_bandwidth_source: Literal["peak", "measured"] = "peak"
    memory_bytes: int
    power_w: float
    price_per_hour_usd: float
    price_basis: Literal["on_demand", "amortized"]
    gather_efficiency: float | None = None
    launch_overhead_us: float = 0.0
    op_overhead_us: float = 0.0
    host_link_gbps: float | None = None
    cores: int | None = None
    embedding_precisions: tuple[str, ...] = ("fp32",)
    match: tuple[str, ...] = ()
    requires_flags: tuple[str, ...] = ()
    source: str = ""

    def __post_init__(self) -> None:
        own = f"DeviceSpec({self.name})"
        check(bool(_NAME.match(self.name)), "DeviceSpec", "name", self.name,
              "lower-case letters, digits, '.', '_' or '-', starting with a letter or digit")
        check(self.kind in KINDS, own, "kind", self.kind, f"one of {KINDS}")
        check(bool(self.peak_tops), own, "peak_tops", self.peak_tops, f"at least one of {PRECISIONS}")
        for p, v in self.peak_tops.items():
            check(p in PRECISIONS, own, "peak_tops", p, f"precisions among {PRECISIONS}")
            check(isinstance(v, (int, float)) and v > 0, own, f"peak_tops.{p}", v, "> 0 (TFLOP/s or TOP/s)")
        check(self.memory_bandwidth_gbps > 0, own, "memory_bandwidth_gbps", self.memory_bandwidth_gbps, "> 0 GB/s")
        check(self.memory_bandwidth_source in ("peak", "measured"), own, "memory_bandwidth_source",
              self.memory_bandwidth_source, "'peak' or 'measured'")
        check(self.memory_bytes > 0, own, "memory_bytes", self.memory_bytes, "> 0")
        check(self.power_w > 0, own, "power_w", self.power_w, "> 0 W")
        check(self.price_per_hour_usd >= 0, own, "price_per_hour_usd", self.price_per_hour_usd, ">= 0")
        check(self.price_basis in ("on_demand", "amortized"), own, "price_basis", self.price_basis,
              "'on_demand' or 'amortized'")
        check(self.gather_efficiency is None or 0 < self.gather_efficiency <= 1, own, "gather_efficiency",
              self.gather_efficiency, "in (0, 1], or null for estimate()'s default")
        check(self.launch_overhead_us >= 0, own, "launch_overhead_us", self.launch_overhead_us, ">= 0 µs")
        check(self.op_overhead_us >= 0, own, "op_overhead_us", self.op_overhead_us, ">= 0 µs")
        check(self.host_link_gbps is None or self.host_link_gbps > 0, own, "host_link_gbps", self.host_link_gbps,
              "> 0 GB/s, or null for a device without a host link (a CPU)")
        check(self.cores is None or self.cores >= 1, own, "cores", self.cores, ">= 1 or null")
        check(bool(self.embedding_precisions) and set(self.embedding_precisions) <= set(EMBEDDING_PRECISIONS), own,
              "embedding_precisions", self.embedding_precisions, f"a non-empty subset of {EMBEDDING_PRECISIONS}")
        for flag in self.requires_flags:
            check(isinstance(flag, str) and bool(re.fullmatch(r"[a-z0-9_]+", flag)), own, "requires_flags", flag,
                  "ISA flag names as /proc/cpuinfo spells them, e.g. avx512_vnni")
        for pattern in self.match:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ConfigError(f"{own}.match = {pattern!r} is invalid: a regular expression ({exc})") from None

    def supports(self, precision: str) -> bool:
        """True if the device lists a peak for this compute precision."""
        return precision in self.peak_tops

    def peak(self, precision: str) -> float:
        """Peak tera-ops/s at ``precision``; ConfigError if the device does not support it."""
        if precision not in self.peak_tops:
            raise ConfigError(f"device {self.name!r} does not support {precision!r} compute; it supports "
                              f"{', '.join(self.peak_tops)} (see its catalog entry)")
        return float(self.peak_tops[precision])

    def matches(self, detected_name: str, flags: Iterable[str] | None = None) -> bool:
        """True if one of the ``match`` patterns finds ``detected_name`` and, when ``flags`` (the detected
        ISA flags) are given, every one of ``requires_flags`` is among them."""
        if flags is not None and not set(self.requires_flags) <= set(flags):
            return False
        return any(re.search(p, detected_name, re.IGNORECASE) for p in self.match)


@dataclass(frozen=True, kw_only=True)
class Catalog(Config):
    """The schema of a catalog file: a format version and a list of devices."""

    version: int = 1
    devices: tuple[DeviceSpec, ...]

    def __post_init__(self) -> None:
        check(self.version == 1, "Catalog", "version", self.version, "1")
        names = [d.name for d in self.devices]
        dup = sorted({n for n in names if names.count(n) > 1})
        check(not dup, "Catalog", "devices", dup, "unique device names")


def default_catalog_path() -> Path:
    """Path of the catalog shipped with the package."""
    return Path(str(resources.files("crossrec.hardware").joinpath("catalog.yaml")))


def _load(path: Path) -> tuple[DeviceSpec, ...]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with 'version' and 'devices', got {type(data).__name__}")
    try:
        return Catalog.from_dict(data).devices
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def load_catalog(path: str | Path | None = None) -> dict[str, DeviceSpec]:
    """Every device of a catalog file (default: the packaged one), by name.

    >>> sorted(load_catalog())[:2]
    ['a100-sxm-80gb', 'alveo-u280']
    """
    p = Path(path) if path is not None else default_catalog_path()
    if not p.is_file():
        raise ConfigError(f"device catalog {p} does not exist; pass the path of a YAML catalog or None "
                          "for the packaged one")
    return {d.name: d for d in _load(p)}


def get_device(name: str, path: str | Path | None = None) -> DeviceSpec:
    """One device of the catalog by name; ConfigError listing the known names if absent."""
    catalog = load_catalog(path)
    if name not in catalog:
        raise ConfigError(f"unknown device {name!r}; known devices: {', '.join(sorted(catalog))}")
    return catalog[name]
