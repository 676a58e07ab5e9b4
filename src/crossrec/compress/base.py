"""One config per method, one registered handler per config, one dispatcher that never changes.

A handler knows two things about its method:

- ``apply(model, config, ctx)``: compress a float (or already partly compressed) model in place,
  using data from ``ctx`` where the method needs it (calibration batches, training data);
- ``restore(model, config)``: give a freshly built model the *structure* the method produces
  (quantized modules with empty buffers, pruned layer shapes) so a saved variant's tensors can be
  loaded into it. Loading an artifact never re-runs calibration or training.

Adding a method = one frozen config class + one ``@register(ConfigClass)`` handler.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from torch import nn

from crossrec.config import Config
from crossrec.errors import ConfigError


class CompressionConfig(Config):
    """Base of every compression method's config (subclasses are frozen, kw_only dataclasses)."""


@dataclass
class CompressContext:
    """What methods that need data get: training/validation data and calibration batches."""

    train_data: Any = None
    val_data: Any = None
    calibration_batches: int = 8
    seed: int = 0
    log: Callable[[str], None] = field(default=lambda _msg: None)


class Handler(Protocol):
    def apply(self, model: nn.Module, config: CompressionConfig, ctx: CompressContext) -> None: ...

    def restore(self, model: nn.Module, config: CompressionConfig) -> None: ...


_HANDLERS: dict[type, Handler] = {}


def register(config_cls: type[CompressionConfig]) -> Callable[[type], type]:
    """Class decorator registering a handler (a class with ``apply`` and ``restore``) for a config."""

    def wrap(handler_cls: type) -> type:
        _HANDLERS[config_cls] = handler_cls()
        return handler_cls

    return wrap


def registered() -> tuple[type[CompressionConfig], ...]:
    """Every config class with a handler (what conformance tests iterate over)."""
    return tuple(_HANDLERS)


def handler_for(config: CompressionConfig) -> Handler:
    """The registered handler of ``config`` (ConfigError listing the known methods if none)."""
    handler = _HANDLERS.get(type(config))
    if handler is None:
        known = ", ".join(sorted(c.__name__ for c in _HANDLERS))
        raise ConfigError(f"no compression handler for {type(config).__name__}; known methods: {known}")
    return handler


def compress_(model: nn.Module, config: CompressionConfig, ctx: CompressContext | None = None) -> nn.Module:
    """Apply one compression method to ``model`` in place (trailing ``_``); returns the model.

    >>> from crossrec.compress import EmbeddingQuantConfig
    >>> from crossrec.data.synthetic import SyntheticConfig
    >>> from crossrec.models import ModelSpec, build
    >>> model = build(ModelSpec.for_schema(SyntheticConfig(num_sparse=2, max_rows=10).schema(), embedding_dim=8))
    >>> _ = compress_(model, EmbeddingQuantConfig(precision="int8"))
    >>> type(model.embedding.bags[0]).__name__
    'QuantizedEmbeddingBag'
    """
    handler_for(config).apply(model, config, ctx or CompressContext())
    recipe = list(getattr(model, "compression_recipe", []))
    recipe.append(config)
    model.compression_recipe = recipe  # what artifacts record to rebuild the structure on load
    return model


def restore_(model: nn.Module, recipe: list[CompressionConfig]) -> nn.Module:
    """Give a freshly built model the structure of ``recipe`` (no data, no calibration)."""
    for config in recipe:
        handler_for(config).restore(model, config)
    model.compression_recipe = list(recipe)
    return model


def recipe_to_dicts(recipe: list[CompressionConfig]) -> list[dict]:
    return [{"type": type(c).__name__, **c.to_dict()} for c in recipe]


def recipe_from_dicts(items: list[dict]) -> list[CompressionConfig]:
    """Rebuild configs by their registered class name (the registry is the allowlist)."""
    by_name = {c.__name__: c for c in _HANDLERS}
    out = []
    for item in items:
        cls = by_name.get(item.get("type", ""))
        if cls is None:
            raise ConfigError(f"unknown compression method {item.get('type')!r}; known: {', '.join(sorted(by_name))}")
        out.append(cls.from_dict(item))
    return out
