"""`estimate()`: an analytic roofline latency for a model on a catalog device (``source="modeled"``).

For devices that are absent (FPGA, TPU, GPUs we do not have) a model's latency can only be
*modeled*; every figure from here says so and is never presented as measured (DESIGN.md §3).

What is modeled, per inference call of ``batch_size`` samples:

- **Stages** run one after another (no overlap): ``embedding`` (lookups), then the dense
  stages ``bottom_mlp``, ``projection``, ``interaction``, ``first_order``, ``top_mlp`` (those the
  model has). Each stage takes ``max(bytes / achievable bandwidth, flops / achievable peak)``.
- **Embedding bytes** = rows looked up × bytes per row at the table's storage precision
  (fp32 ``4·dim``, fp16/bf16 ``2·dim``, int8 ``dim+8``, int4 ``dim/2+4``, int2 ``dim/4+4``: row-wise
  scale and bias) + 8 B per id and per bag offset. ``pooling_factor`` ids per bag (1 = one-hot).
  The stage is treated as memory-bound (its adds are negligible). First-order (FM/LR) tables
  have dim 1 and are always fp32. Rows are counted in bytes, not cache lines: an int8 row of
  dim 64 (72 B) really touches two 64-B lines, so narrow formats are modeled optimistically.
- **Dense bytes** = the stage's weights (and biases) at ``dense_precision``, read once per call;
  activations are assumed to stay in cache/on-chip. **FLOPs** from :func:`model_flops`.
  ``int8-static`` (calibrated static int8 MLPs) computes and stores like ``int8``: a device with
  int8 compute runs it (the roofline does not model activation quantization, the one thing that
  differs between dynamic and static int8).
- **Achievable fractions**: ``bandwidth_efficiency`` (default 0.6) of a *peak* (datasheet)
  bandwidth is reached by streaming access (STREAM typically gets 60-80 % of peak); a bandwidth
  the catalog marks ``measured`` (STREAM on the machine) is used as is. Embedding lookups are
  random row gathers and reach only ``gather_efficiency`` of that streaming bandwidth: the
  argument, else the device's catalog value where measured, else 0.5. On the 2-vCPU dev
  machine a fused FP32 lookup over 1.43 GB of tables reached 9-15 GB/s with uniform ids and
  16-21 GB/s with Zipf(1.05) ids against 35-54 GB/s STREAM (benchmarks/stream.py, 2026-11):
  gathers there are latency-bound (~5 GB/s per core), ~0.3 of STREAM. ``compute_efficiency``
  (default 0.4) of the peak at the dense precision: recommendation MLPs are narrow (256-512
  wide) and reach a fraction of a GEMM's peak. All three are guesses to calibrate against
  measured profiles (the LatencyPredictor's job), not facts.
- **Overheads**: the device's ``launch_overhead_us`` once per call, plus ``op_overhead_us`` per operator an
  eager call dispatches (:func:`~crossrec.hardware.features.eager_ops`; GPUs, where eager PyTorch is
  launch-bound: fitted on 900 measured H200 records, it took the roofline's error on the 900 held-out ones
  from 90% MAPE to 27%); for devices with a host link
  (accelerators), the inputs (dense fp32, int64 ids and offsets) cross it to the device and the
  fp32 logits back, not overlapped with compute.
- **Energy** per 1000 predictions = ``power_w`` × latency / batch × 1000, i.e. the device at its
  rated power for the whole call (an upper bound; host power is not counted).

>>> from crossrec.hardware.spec import get_device
>>> from crossrec.models import ModelSpec, TableSpec
>>> spec = ModelSpec(num_dense=13, tables=tuple(TableSpec(name=f"C{i}", num_embeddings=100_000)
...                  for i in range(26)), embedding_dim=64, bottom_mlp=(512, 256, 64), top_mlp=(512, 256))
>>> e = estimate(spec, get_device("a100-sxm-80gb"), 2048)
>>> e.source, e.latency_ms > 0, [s.name for s in e.stages]
('modeled', True, ['embedding', 'bottom_mlp', 'interaction', 'top_mlp'])
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from crossrec.config import Config, check
from crossrec.errors import ConfigError
from crossrec.hardware.spec import EMBEDDING_PRECISIONS, PRECISIONS, DeviceSpec

if TYPE_CHECKING:  # only read through attributes: importing this module never loads models or torch
    from crossrec.models.spec import ModelSpec

# Bytes per dense weight element at each compute precision (tf32 weights are stored as fp32).
DENSE_BYTES = {"fp32": 4.0, "tf32": 4.0, "bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int8": 1.0, "int4": 0.5}
INDEX_BYTES = 8  # int64 ids and offsets
# Dense precisions that are a way of running a compute precision: static int8 MLPs are int8 GEMMs.
DENSE_ALIASES = {"int8-static": "int8"}
DEFAULT_GATHER = 0.5  # fraction of streaming bandwidth reached by random row gathers (module docstring)


def row_bytes(dim: int, precision: str) -> int:
    """Bytes of one embedding row of width ``dim`` stored at ``precision``.

    >>> [row_bytes(64, p) for p in ("fp32", "fp16", "int8", "int4", "int2")]
    [256, 128, 72, 36, 20]
    """
    check(precision in EMBEDDING_PRECISIONS, "row_bytes", "precision", precision, f"one of {EMBEDDING_PRECISIONS}")
    return {"fp32": 4 * dim, "fp16": 2 * dim, "bf16": 2 * dim, "int8": dim + 8,
            "int4": math.ceil(dim / 2) + 4, "int2": math.ceil(dim / 4) + 4}[precision]


def _linear(i: int, o: int, bias: bool = True) -> tuple[int, int]:
    """(FLOPs per sample, parameters) of Linear(i, o): one multiply-add = 2 FLOPs."""
    return 2 * i * o, i * o + (o if bias else 0)


def _mlp(in_dim: int, widths: tuple[int, ...]) -> tuple[int, int]:
    flops = params = 0
    for w in widths:
        f, p = _linear(in_dim, w)
        flops, params, in_dim = flops + f, params + p, w
    return flops, params


def dense_stages(spec: ModelSpec) -> dict[str, tuple[int, int]]:
    """``{stage: (FLOPs per sample, parameters)}`` of the dense part, mirroring :class:`CTRModel`.

    Matmuls count 2 FLOPs per multiply-add; biases and activations are not counted. Exceptions,
    where elementwise work *is* the layer: DCNv2's ``x0 * y + x`` (2 per element and layer) and
    the FM second-order term (~3 per element of the ``(n, D)`` fields).
    """
    n_tab, has_dense, d = len(spec.tables), spec.num_dense > 0, spec.embedding_dim
    inter, stages = spec.interaction, {}
    if inter == "lr" or inter == "fm":
        stages["first_order"] = _linear(spec.num_dense, 1) if has_dense else (0, 1)
    if inter == "lr":
        return stages
    if has_dense and spec.bottom_mlp:
        stages["bottom_mlp"] = _mlp(spec.num_dense, spec.bottom_mlp)
    dense_out = (spec.bottom_mlp[-1] if spec.bottom_mlp else spec.num_dense) if has_dense else 0
    equal_dims = inter in ("dot", "fm")
    if equal_dims and any(g != d for g in spec.dims()):
        proj = [_linear(g, d, bias=False) for g in spec.dims() if g != d]
        stages["projection"] = (sum(f for f, _ in proj), sum(p for _, p in proj))
    n = n_tab + has_dense
    top_in = dense_out + (n_tab * d if equal_dims else sum(spec.dims()))
    if inter == "dot":
        stages["interaction"] = (2 * n * n * d, 0)  # bmm (B, n, D) x (B, D, n): n^2 D multiply-adds
        top_in = n * (n - 1) // 2 + dense_out
    elif inter == "cross":
        flops = params = 0
        for _ in range(spec.cross_layers):
            if spec.cross_rank is None:
                f, p = _linear(top_in, top_in)
            else:
                f1, p1 = _linear(top_in, spec.cross_rank, bias=False)
                f2, p2 = _linear(spec.cross_rank, top_in)
                f, p = f1 + f2, p1 + p2
            flops, params = flops + f + 2 * top_in, params + p
        stages["interaction"] = (flops, params)
    elif inter == "fm":
        stages["interaction"] = (3 * n * d, 0)
    if not (inter == "fm" and not spec.top_mlp):
        f, p = _mlp(top_in, spec.top_mlp)
        f1, p1 = _linear(spec.top_mlp[-1] if spec.top_mlp else top_in, 1)
        stages["top_mlp"] = (f + f1, p + p1)
    return stages


def model_flops(spec: ModelSpec) -> dict[str, int]:
    """Per-sample FLOPs of every dense stage (see :func:`dense_stages` for what is counted).

    >>> from crossrec.models import ModelSpec, TableSpec
    >>> spec = ModelSpec(num_dense=2, tables=(TableSpec(name="a", num_embeddings=5),
    ...                  TableSpec(name="b", num_embeddings=5)), embedding_dim=4, bottom_mlp=(4,), top_mlp=(8,))
    >>> model_flops(spec)  # bottom 2*2*4; dot 2*3*3*4; top 2*(3+4)*8 + 2*8*1
    {'bottom_mlp': 16, 'interaction': 72, 'top_mlp': 128}
    """
    return {k: f for k, (f, _) in dense_stages(spec).items()}


@dataclass(frozen=True, kw_only=True)
class StageEstimate(Config):
    """One stage of one call: bytes moved, FLOPs, modeled time and what bounds it."""

    name: str
    bytes: float
    flops: float
    time_ms: float
    bound: Literal["memory", "compute"]


@dataclass(frozen=True, kw_only=True)
class Estimate(Config):
    """A modeled latency (never a measurement: ``source`` is always ``"modeled"``)."""

    device: str
    model: str
    batch_size: int
    embedding_precision: dict[str, str]
    dense_precision: str
    stages: tuple[StageEstimate, ...]
    transfer_ms: float
    overhead_ms: float
    latency_ms: float
    samples_per_s: float
    energy_per_1k_j: float
    model_bytes: float
    fits_memory: bool
    bandwidth_efficiency: float
    gather_efficiency: float
    compute_efficiency: float
    pooling_factor: float
    source: Literal["modeled"] = "modeled"

    def __post_init__(self) -> None:
        check(self.source == "modeled", "Estimate", "source", self.source, "'modeled' (estimates are never measured)")


def per_table(spec: ModelSpec, embedding_precision: str | dict[str, str], owner: str = "estimate") -> dict[str, str]:
    """``{table: precision}`` for every table: one format for all, or named tables (others fp32).

    >>> from crossrec.models.spec import ModelSpec, TableSpec
    >>> spec = ModelSpec(num_dense=0, tables=(TableSpec(name="a", num_embeddings=2),
    ...                  TableSpec(name="b", num_embeddings=2)), embedding_dim=4, bottom_mlp=(), top_mlp=(4,))
    >>> per_table(spec, {"a": "int8"})
    {'a': 'int8', 'b': 'fp32'}
    """
    names = [t.name for t in spec.tables]
    if isinstance(embedding_precision, str):
        return dict.fromkeys(names, embedding_precision)
    unknown = sorted(set(embedding_precision) - set(names))
    check(not unknown, owner, "embedding_precision", unknown, f"table names of the spec: {names}")
    return {n: embedding_precision.get(n, "fp32") for n in names}


def _table_precisions(spec: ModelSpec, device: DeviceSpec, embedding_precision: str | dict[str, str]) -> dict:
    chosen = per_table(spec, embedding_precision)
    for name, p in chosen.items():
        check(p in EMBEDDING_PRECISIONS, "estimate", f"embedding_precision[{name}]", p,
              f"one of {EMBEDDING_PRECISIONS}")
        if p not in device.embedding_precisions:
            raise ConfigError(f"device {device.name!r} has no {p!r} embedding kernels (table {name!r}); it supports "
                              f"{', '.join(device.embedding_precisions)}")
    return chosen


def _stage(name: str, nbytes: float, flops: float, bandwidth: float, peak: float | None) -> StageEstimate:
    t_mem = nbytes / bandwidth
    t_comp = flops / peak if peak else 0.0
    return StageEstimate(name=name, bytes=nbytes, flops=flops, time_ms=max(t_mem, t_comp) * 1e3,
                         bound="compute" if t_comp > t_mem else "memory")


def estimate(spec: ModelSpec, device: DeviceSpec, batch_size: int, *,
             embedding_precision: str | dict[str, str] = "fp32", dense_precision: str = "fp32",
             pooling_factor: float = 1.0, bandwidth_efficiency: float = 0.6,
             gather_efficiency: float | None = None, compute_efficiency: float = 0.4) -> Estimate:
    """Modeled latency of one call of ``batch_size`` samples (assumptions: module docstring).

    ``embedding_precision`` is one storage format for every table or ``{table: format}`` (tables
    not named stay fp32). ``dense_precision`` is a compute precision of :data:`PRECISIONS` or
    ``"int8-static"`` (modeled as int8). ``gather_efficiency=None`` takes the device's catalog value,
    else 0.5. An unsupported precision on ``device`` raises ConfigError.

    >>> from crossrec.hardware.spec import get_device
    >>> from crossrec.models.spec import ModelSpec, TableSpec
    >>> spec = ModelSpec(num_dense=13, tables=(TableSpec(name="a", num_embeddings=1000),), embedding_dim=16,
    ...                  bottom_mlp=(64, 16), top_mlp=(64,))
    >>> fp32 = estimate(spec, get_device("h100-sxm"), 512, dense_precision="bf16")
    >>> int8 = estimate(spec, get_device("h100-sxm"), 512, embedding_precision="int8", dense_precision="bf16")
    >>> fp32.source, int8.model_bytes < fp32.model_bytes
    ('modeled', True)
    """
    own = "estimate"
    check(batch_size >= 1, own, "batch_size", batch_size, ">= 1")
    check(pooling_factor > 0, own, "pooling_factor", pooling_factor, "> 0 ids per bag")
    check(0 < bandwidth_efficiency <= 1, own, "bandwidth_efficiency", bandwidth_efficiency, "in (0, 1]")
    gather = gather_efficiency if gather_efficiency is not None else device.gather_efficiency or DEFAULT_GATHER
    check(0 < gather <= 1, own, "gather_efficiency", gather, "in (0, 1]")
    check(0 < compute_efficiency <= 1, own, "compute_efficiency", compute_efficiency, "in (0, 1]")
    check(dense_precision in PRECISIONS or dense_precision in DENSE_ALIASES, own, "dense_precision",
          dense_precision, f"one of {PRECISIONS} or {tuple(DENSE_ALIASES)}")
    compute = DENSE_ALIASES.get(dense_precision, dense_precision)
    peak = device.peak(compute) * 1e12 * compute_efficiency  # ConfigError if unsupported
    bw_eff = bandwidth_efficiency if device.memory_bandwidth_source == "peak" else 1.0
    bandwidth = device.memory_bandwidth_gbps * 1e9 * bw_eff
    precisions = _table_precisions(spec, device, embedding_precision)

    b, n_tab = batch_size, len(spec.tables)
    first_order = spec.interaction in ("fm", "lr")
    rows = b * pooling_factor
    emb_bytes = 0.0 if spec.interaction == "lr" else \
        sum(rows * row_bytes(t.dim or spec.embedding_dim, precisions[t.name]) for t in spec.tables)
    emb_bytes += n_tab * rows * 4 if first_order else 0.0  # dim-1 fp32 first-order tables
    lookups = 1 + first_order if spec.interaction != "lr" else 1
    emb_bytes += lookups * n_tab * (rows + b) * INDEX_BYTES  # ids + one offset per bag
    stages = [_stage("embedding", emb_bytes, 0.0, bandwidth * gather, None)] if n_tab else []
    wbytes = DENSE_BYTES[compute]
    dense_params = 0
    for name, (flops, params) in dense_stages(spec).items():
        dense_params += params
        stages.append(_stage(name, params * wbytes, flops * b, bandwidth, peak))

    transfer_s = 0.0
    if device.host_link_gbps is not None:
        in_bytes = b * (4 * spec.num_dense + n_tab * pooling_factor * INDEX_BYTES) + (b * n_tab + 1) * INDEX_BYTES
        transfer_s = (in_bytes + 4 * b) / (device.host_link_gbps * 1e9)
    overhead_s = device.launch_overhead_us * 1e-6
    if device.op_overhead_us:  # eager dispatch: one launch per operator (GPUs; measured on an H200)
        from crossrec.hardware.features import CompressionChoice, eager_ops

        overhead_s += device.op_overhead_us * 1e-6 * eager_ops(spec, CompressionChoice(
            embedding_precision=embedding_precision, dense_precision=dense_precision))
    latency_s = sum(s.time_ms for s in stages) / 1e3 + transfer_s + overhead_s
    table_bytes = sum(t.num_embeddings * row_bytes(t.dim or spec.embedding_dim, precisions[t.name])
                      for t in spec.tables) if spec.interaction != "lr" else 0
    table_bytes += sum(t.num_embeddings * 4 for t in spec.tables) if first_order else 0
    model_bytes = table_bytes + dense_params * wbytes
    return Estimate(device=device.name, model=spec.name, batch_size=b, embedding_precision=precisions,
                    dense_precision=dense_precision, stages=tuple(stages), transfer_ms=transfer_s * 1e3,
                    overhead_ms=overhead_s * 1e3, latency_ms=latency_s * 1e3, samples_per_s=b / latency_s,
                    energy_per_1k_j=device.power_w * latency_s / b * 1000, model_bytes=model_bytes,
                    fits_memory=model_bytes <= device.memory_bytes, bandwidth_efficiency=bw_eff,
                    gather_efficiency=gather, compute_efficiency=compute_efficiency, pooling_factor=pooling_factor)
