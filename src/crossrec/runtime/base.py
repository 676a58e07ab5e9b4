"""`Runtime`: one interface over every way crossrec runs a model, and `load()` to pick one.

A runtime owns a (possibly compressed) :class:`~crossrec.models.CTRModel` prepared for one
engine on one device. Two entry points, one contract:

- ``runtime(dense, ids, offsets)`` returns **logits** ``(B,)`` float32 on ``runtime.device`` —
  the same call signature as the model itself, so :func:`crossrec.hardware.profile_many` times
  a runtime exactly as it times a model (and interleaves runtimes with models);
- ``runtime.predict(batch)`` returns click **probabilities** ``(B,)`` float32 on the CPU.

``load`` takes an ``nn.Module``, never a path: the caller loads the artifact
(``crossrec.artifact.load_artifact(path).model``) because ``artifact`` sits below ``runtime`` in
the layering of DESIGN.md §2. Runtimes register themselves by name in :data:`RUNTIMES`;
a runtime's options are its constructor's keyword arguments.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
from torch import nn

from crossrec.data.batch import Batch
from crossrec.errors import ConfigError
from crossrec.models.ctr import CTRModel

RUNTIMES: dict[str, type[Runtime]] = {}


class Runtime(ABC):
    """A model prepared for one engine on one device (see the module docstring for the contract).

    Subclasses set ``name`` and ``devices`` (device types they run on), take the model, the
    device and their options as keyword arguments in ``__init__``, and implement ``__call__``.
    ``info`` records what the runtime was built with (options, compile or export time) so a
    benchmark can store it next to its timings.

    >>> from crossrec.models import ModelSpec, TableSpec, build
    >>> spec = ModelSpec(num_dense=2, tables=(TableSpec(name="a", num_embeddings=5),), embedding_dim=4,
    ...                  bottom_mlp=(4,), top_mlp=(8,))
    >>> rt = load(build(spec, seed=0), "eager")
    >>> rt.name, rt.device.type, rt.info
    ('eager', 'cpu', {'runtime': 'eager', 'device': 'cpu', 'hugepages_bytes': 0})
    """

    name: ClassVar[str]
    devices: ClassVar[tuple[str, ...]] = ("cpu",)

    def __init__(self, model: nn.Module, device: torch.device):
        if not isinstance(model, CTRModel):
            raise ConfigError(f"runtime {self.name!r} runs a crossrec CTRModel, got {type(model).__name__}; "
                              "load an artifact with crossrec.artifact.load_artifact(path) and pass its .model")
        self.model = model
        self.spec = model.spec
        self.device = device
        self.info: dict[str, Any] = {"runtime": self.name, "device": str(device)}

    @abstractmethod
    def __call__(self, dense: torch.Tensor, ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """Logits ``(B,)`` float32 on ``self.device`` for the tensors of a :class:`Batch`."""

    def predict(self, batch: Batch) -> torch.Tensor:
        """Click probabilities ``(B,)`` float32 on the CPU."""
        if batch.num_sparse != len(self.spec.tables):
            raise ConfigError(f"batch has {batch.num_sparse} sparse features, the model has "
                              f"{len(self.spec.tables)} tables; encode the batch with the model's schema")
        b = batch.to(self.device) if batch.dense.device != self.device else batch
        with torch.inference_mode():
            return torch.sigmoid(self(b.dense, b.ids, b.offsets).float()).cpu()

    def eval(self) -> Runtime:
        """No-op (a runtime always infers); lets ``crossrec.train.evaluate(runtime, data)`` score it."""
        return self

    def close(self) -> None:  # noqa: B027 - optional hook: most runtimes hold nothing to release
        """Release what the runtime holds beyond the model (sessions, temporary files); idempotent."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.spec.name!r}, device={str(self.device)!r})"


def register_runtime(cls: type[Runtime]) -> type[Runtime]:
    """Class decorator: make ``cls`` loadable as ``load(model, cls.name)``."""
    RUNTIMES[cls.name] = cls
    return cls


def get_runtime(name: str) -> type[Runtime]:
    """The runtime class registered as ``name``; ConfigError listing the known names otherwise.

    >>> get_runtime("onnx-int8").__name__
    'OnnxInt8Runtime'
    """
    if name not in RUNTIMES:
        raise ConfigError(f"unknown runtime {name!r}; known runtimes: {', '.join(sorted(RUNTIMES))}")
    return RUNTIMES[name]


def options_of(cls: type[Runtime]) -> tuple[str, ...]:
    """Names of the options ``cls`` accepts: its keyword-only constructor arguments, and its
    base class's where the constructor passes ``**options`` on.

    >>> options_of(get_runtime("cuda"))
    ('dtype', 'table_dtype', 'compile', 'compile_mode')
    """
    names: list[str] = []
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        params = inspect.signature(klass.__init__).parameters.values()
        names += [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in names]
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
            break
    return tuple(names)


def load(model: nn.Module, runtime: str = "eager", device: str | torch.device | None = None,
         **options: Any) -> Runtime:
    """Prepare ``model`` (a CTRModel, compressed or not) to run with ``runtime`` on ``device``.

    ``device=None`` is the runtime's own device (``"cuda"`` for the ``"cuda"`` runtime, else the CPU).
    ``device="cuda"`` with ``runtime="eager"`` selects the ``"cuda"`` runtime (fp16/bf16 dense
    compute on the GPU). Unknown runtimes, unsupported devices and unknown options raise
    :class:`ConfigError` naming what is allowed.

    >>> import torch
    >>> from crossrec.data import Batch
    >>> from crossrec.models import ModelSpec, TableSpec, build
    >>> spec = ModelSpec(num_dense=2, tables=(TableSpec(name="a", num_embeddings=5),), embedding_dim=4,
    ...                  bottom_mlp=(4,), top_mlp=(8,))
    >>> rt = load(build(spec, seed=0), "eager")
    >>> batch = Batch.from_one_hot(torch.zeros(3, 2), torch.tensor([[0], [1], [4]]))
    >>> rt.predict(batch).shape, rt(batch.dense, batch.ids, batch.offsets).shape
    (torch.Size([3]), torch.Size([3]))
    >>> load(build(spec), "tensorrt")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    crossrec.errors.ConfigError: unknown runtime 'tensorrt'; known runtimes: auto, compiled, cuda, eager, ...
    """
    cls = get_runtime(runtime)
    dev = torch.device(cls.devices[0] if device is None else device)
    if dev.type == "cuda" and runtime == "eager":
        cls = get_runtime("cuda")
    if dev.type not in cls.devices:
        runs = [n for n, c in sorted(RUNTIMES.items()) if dev.type in c.devices]
        raise ConfigError(f"runtime {cls.name!r} runs on {cls.devices}, not on {dev.type!r}; "
                          f"runtimes for {dev.type!r}: {runs}")
    allowed = options_of(cls)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigError(f"runtime {cls.name!r} has no option(s) {unknown}; its options: {list(allowed)}")
    return cls(model, device=dev, **options)
