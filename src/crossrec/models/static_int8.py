"""Static int8 MLPs: calibrated activation scales, one chain of int8 GEMMs per MLP (issue #3).

:class:`~crossrec.models.quantized.Int8DynamicLinear` quantizes its input on every call and
returns fp32, so every layer pays a min/max pass, a quantize and a dequantize. Static
quantization fixes each activation's scale from calibration batches instead, and an MLP's
hidden activations stay ``quint8`` from one ``quantized::linear_relu`` to the next (FBGEMM /
oneDNN VNNI kernels): one quantize at the MLP's input and one dequantize at its output. On this
2-core Zen 5 the DLRM top MLP (415-512-256-1, batch 512) runs ~4x faster than fp32 and ~2x faster
than bf16 this way, vs ~2.3x fp32 with a quantize/dequantize around each layer (measured
2026-11-27; BENCHMARKS.md has the model-level figures).

Scales: per-output-channel symmetric int8 weights (as the x86 default qconfig); per-tensor
affine uint8 activations from the min/max seen over the calibration batches (ReLU outputs get
zero point 0), calibrated and stored over the full 8-bit range. On a CPU without AVX512-VNNI
(e.g. an AVX2-only Zen 3 or Haswell host) FBGEMM and oneDNN multiply uint8 by int8 with
``vpmaddubsw``, which adds pairs of products into a *saturating* int16: activations up to 255 times
weights up to 127 overflow it, and the outputs go wrong without any error (on an AVX2 Zen 3, the
test MLP's error grew from ~1% to 15% of its output). There, and only there, :func:`activation_qmax`
is 127 and the forward pass re-derives each activation's (scale, zero point) over the same float
range with 7 bits (PyTorch's ``reduce_range``); the stored buffers do not change, so one artifact
serves on both kinds of host. A final narrow ``Linear`` (the logit layer,
``out_features <= 16``) stays fp32 on the dequantized activation: it costs nothing and keeps the
logits' resolution, which a 256-level output scale would coarsen.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from crossrec.data.batch import Batch
from crossrec.errors import ConfigError
from crossrec.models.quantized import _quantized_tensor_api, _StrictDtype, _tensor_key

_FP32_TAIL_MAX_OUT = 16


def activation_qmax() -> int:
    """Largest uint8 activation code this CPU's int8 GEMMs take without saturating: 255 with AVX512-VNNI
    (``vpdpbusd`` accumulates in int32), 127 without it (``vpmaddubsw`` saturates int16 pairs).

    >>> activation_qmax() in (127, 255)
    True
    """
    return 255 if has_vnni() else 127


def has_vnni() -> bool:
    """Whether this CPU has AVX512-VNNI (torch's own probe; private in torch 2.13, so a torch without it
    answers False: 7-bit activations are always correct, only a little coarser)."""
    probe = getattr(torch.cpu, "_is_vnni_supported", None)
    return bool(probe()) if probe is not None else False


def narrowed(act: torch.Tensor, qmax: int) -> list[list[float]]:
    """``act`` rows (scale, zero point) over 0..255 re-expressed over 0..``qmax`` for the same float range
    (the range must hold 0, as calibration makes it).

    >>> narrowed(torch.tensor([[0.1, 0.0], [0.2, 128.0]]), 127)
    [[0.2007874..., 0.0], [0.4015748..., 64.0]]
    """
    if qmax == 255:
        return act.tolist()
    out = []
    for scale, zp in act.tolist():
        lo, hi = -zp * scale, (255 - zp) * scale
        new_scale = max((hi - lo) / qmax, 1e-8)
        out.append([new_scale, float(min(max(round(-lo / new_scale), 0), qmax))])
    return out


def _layers(seq: nn.Sequential) -> tuple[list[nn.Linear], list[bool]]:
    """The Linear layers of an ``mlp()`` Sequential and whether a ReLU follows each (Dropout ignored)."""
    lins: list[nn.Linear] = []
    relu: list[bool] = []
    for m in seq:
        if isinstance(m, nn.Linear):
            lins.append(m)
            relu.append(False)
        elif isinstance(m, nn.ReLU) and lins:
            relu[-1] = True
        elif not isinstance(m, nn.Dropout):
            raise ConfigError(f"static int8 quantizes Linear/ReLU/Dropout MLPs; found {type(m).__name__}")
    if not lins:
        raise ConfigError("static int8: the Sequential holds no Linear layer")
    return lins, relu


class Int8StaticMLP(_StrictDtype):
    """An ``mlp()`` Sequential as calibrated static int8 (see the module docstring).

    Buffers (all saved by ``state_dict``): ``w{i}`` int8 ``(out, in)``, ``ws{i}`` fp32 per-row
    weight scales, ``b{i}`` fp32 bias, and ``act`` fp32 ``(n_int8 + 1, 2)`` = (scale, zero point)
    of the MLP input and of every int8 layer's output; ``tail_w`` / ``tail_b`` for an fp32 tail.

    >>> from crossrec.models.interactions import mlp
    >>> seq = mlp(8, (16, 8), final=1).eval()
    >>> x = torch.randn(64, 8)
    >>> q = Int8StaticMLP.from_float(seq, [x])
    >>> bool((q(x) - seq(x)).abs().max() < 0.05), q.extra_repr()
    (True, 'int8 layers 8->16->8, fp32 tail 8->1')
    """

    input_dtype = torch.float32  # quantizes from fp32: callers hand it fp32 rather than cast twice

    def __init__(self, dims: list[tuple[int, int]], relu: list[bool], *, fp32_tail: bool):
        super().__init__()
        self.relu = list(relu)
        self.fp32_tail = fp32_tail
        self.n_int8 = len(dims) - int(fp32_tail)
        self.dims = list(dims)
        for i, (d_in, d_out) in enumerate(dims[: self.n_int8]):
            self.register_buffer(f"w{i}", torch.zeros(d_out, d_in, dtype=torch.int8))
            self.register_buffer(f"ws{i}", torch.ones(d_out))
            self.register_buffer(f"b{i}", torch.zeros(d_out))
        self.register_buffer("act", torch.ones(self.n_int8 + 1, 2))
        if fp32_tail:
            d_in, d_out = dims[-1]
            self.register_buffer("tail_w", torch.zeros(d_out, d_in))
            self.register_buffer("tail_b", torch.zeros(d_out))
        self._packed: tuple[tuple, list] | None = None

    @classmethod
    def empty(cls, seq: nn.Sequential) -> Int8StaticMLP:
        """The layout for ``seq`` with zero weights, to ``load_state_dict`` into (restore without calibration)."""
        lins, relu = _layers(seq)
        tail = not relu[-1] and lins[-1].out_features <= _FP32_TAIL_MAX_OUT
        return cls([(lin.in_features, lin.out_features) for lin in lins], relu, fp32_tail=tail)

    @classmethod
    def from_float(cls, seq: nn.Sequential, calibration_inputs: Iterable[torch.Tensor]) -> Int8StaticMLP:
        """Quantize ``seq`` with activation ranges observed on ``calibration_inputs`` (its input tensors)."""
        m = cls.empty(seq)
        lins, _ = _layers(seq)
        lo = torch.full((m.n_int8 + 1,), float("inf"))
        hi = torch.full((m.n_int8 + 1,), float("-inf"))
        seen = 0
        with torch.no_grad():
            for x in calibration_inputs:
                h = x.float()
                for i in range(m.n_int8 + 1):
                    lo[i], hi[i] = min(lo[i], float(h.min())), max(hi[i], float(h.max()))
                    if i < m.n_int8:
                        h = F.linear(h, lins[i].weight, lins[i].bias)
                        h = torch.relu(h) if m.relu[i] else h
                seen += 1
            if not seen:
                raise ConfigError("static int8 needs at least one calibration batch; pass training data")
            lo, hi = lo.clamp(max=0.0), hi.clamp(min=0.0)  # the range must hold 0 exactly
            scale = ((hi - lo) / 255.0).clamp(min=1e-8)
            m.act[:, 0] = scale
            m.act[:, 1] = torch.round(-lo / scale).clamp(0, 255)
            for i in range(m.n_int8):
                w = lins[i].weight.detach().float()
                ws = (w.abs().amax(dim=1) / 127.5).clamp(min=torch.finfo(torch.float32).eps)
                getattr(m, f"w{i}").copy_(torch.round(w / ws[:, None]).clamp(-128, 127).to(torch.int8))
                getattr(m, f"ws{i}").copy_(ws)
                if lins[i].bias is not None:
                    getattr(m, f"b{i}").copy_(lins[i].bias)
            if m.fp32_tail:
                m.tail_w.copy_(lins[-1].weight)
                if lins[-1].bias is not None:
                    m.tail_b.copy_(lins[-1].bias)
        return m

    def _packed_params(self) -> tuple[list, list[list[float]]]:
        """Prepacked weights and the activation (scale, zero point) rows this host's kernels take."""
        key = (torch.backends.quantized.engine, *(_tensor_key(b) for b in self.buffers()))
        if self._packed is None or self._packed[0] != key:
            packed: list = []
            with _quantized_tensor_api(), torch.no_grad():
                for i in range(self.n_int8):
                    ws = getattr(self, f"ws{i}").double()
                    w = getattr(self, f"w{i}").float() * ws[:, None].float()
                    qw = torch.quantize_per_channel(w, ws, torch.zeros_like(ws, dtype=torch.int64), 0, torch.qint8)
                    packed.append(torch.ops.quantized.linear_prepack(qw, getattr(self, f"b{i}")))
            self._packed = (key, (packed, narrowed(self.act, activation_qmax())))
        return self._packed[1]

    # Dynamo cannot carry the prepacked weights through a graph: this MLP runs eager under compile.
    @torch.compiler.disable
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.n_int8:
            weights, act = self._packed_params()
            with _quantized_tensor_api():  # deprecated in torch 2.13, still the only static int8 path (pinned)
                h = torch.quantize_per_tensor(x.float(), act[0][0], int(act[0][1]), torch.quint8)
            for i, packed in enumerate(weights):
                op = torch.ops.quantized.linear_relu if self.relu[i] else torch.ops.quantized.linear
                h = op(h, packed, act[i + 1][0], int(act[i + 1][1]))
            x = h.dequantize()
        if self.fp32_tail:
            x = F.linear(x.float(), self.tail_w, self.tail_b)
        return x

    def _load_from_state_dict(self, *args, **kwargs):
        self._packed = None
        super()._load_from_state_dict(*args, **kwargs)

    def __getstate__(self):  # the packed weights are a cache: never copy or pickle them
        return {**self.__dict__, "_packed": None}

    def extra_repr(self) -> str:
        dims = self.dims[: self.n_int8]
        text = "int8 layers " + "->".join([str(dims[0][0])] + [str(o) for _, o in dims]) if dims else "no int8 layer"
        if self.fp32_tail:
            text += f", fp32 tail {self.dims[-1][0]}->{self.dims[-1][1]}"
        return text


def _mlps(model: nn.Module) -> list[tuple[str, nn.Sequential]]:
    return [(n, m) for n, m in model.named_modules()
            if isinstance(m, nn.Sequential) and any(isinstance(c, nn.Linear) for c in m)
            and all(isinstance(c, (nn.Linear, nn.ReLU, nn.Dropout)) for c in m)]


def quantize_mlps_static_(model: nn.Module, calibration: Iterable[Batch] | None, *, empty: bool = False) -> list[str]:
    """Replace every MLP Sequential of ``model`` by an :class:`Int8StaticMLP` calibrated on ``calibration``
    (batches run through the float model); ``empty=True`` builds the layout only (for restore).

    Returns the names of the replaced MLPs. Linear layers outside an MLP (projections, a DCN cross
    network) are left to the caller.

    >>> from crossrec.models.spec import ModelSpec, TableSpec
    >>> from crossrec.models.ctr import build
    >>> model = build(ModelSpec(num_dense=2, tables=(TableSpec(name="a", num_embeddings=5),), embedding_dim=4,
    ...                         bottom_mlp=(4,), top_mlp=(8,)), seed=0).eval()
    >>> batch = Batch.from_one_hot(torch.randn(32, 2), torch.randint(0, 5, (32, 1)))
    >>> quantize_mlps_static_(model, [batch])
    ['bottom', 'top']
    """
    targets = _mlps(model)
    if not targets:
        raise ConfigError(f"{type(model).__name__} has no Linear/ReLU MLP to quantize statically")
    inputs: dict[str, list[torch.Tensor]] = {name: [] for name, _ in targets}
    if not empty:
        if calibration is None:
            raise ConfigError("static int8 needs calibration batches: pass training data (CompressContext.train_data)")
        hooks = [seq.register_forward_pre_hook(lambda _m, args, n=name: inputs[n].append(args[0].detach().float()))
                 for name, seq in targets]
        was = model.training
        model.eval()
        try:
            with torch.no_grad():
                for batch in calibration:
                    model(batch.dense, batch.ids, batch.offsets)
        finally:
            for h in hooks:
                h.remove()
            model.train(was)
    for name, seq in targets:
        new = Int8StaticMLP.empty(seq) if empty else Int8StaticMLP.from_float(seq, inputs[name])
        parent, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent), attr, new)
    return [name for name, _ in targets]
