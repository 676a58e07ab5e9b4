"""Frozen-dataclass configs that round-trip through JSON and YAML.

A config class is ``@dataclass(frozen=True, kw_only=True)`` and subclasses :class:`Config`.
``to_dict`` writes plain JSON types; ``from_dict`` rebuilds the object, converting nested
configs and tuples from the type hints. Nested configs carry a ``"type"`` key looked up in a
registry filled by subclassing, so only crossrec's own config classes can ever be built
from a file (the registry is the allowlist). Unknown keys are errors that list the valid keys.

>>> from dataclasses import dataclass
>>> @dataclass(frozen=True, kw_only=True)
... class DemoConfig(Config):
...     rows: int = 10
...     dims: tuple[int, ...] = (8, 4)
>>> DemoConfig.from_dict({"rows": 3, "dims": [2]})
DemoConfig(rows=3, dims=(2,))
>>> DemoConfig.from_dict({"rowz": 3})
Traceback (most recent call last):
...
crossrec.errors.ConfigError: DemoConfig: unknown key 'rowz'; valid keys: dims, rows
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from crossrec.errors import ConfigError

_REGISTRY: dict[str, type[Config]] = {}

C = TypeVar("C", bound="Config")


class Config:
    """Base of every crossrec config/spec; see the module docstring."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _REGISTRY[cls.__name__] = cls

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-compatible dict of every field (nested configs get a ``type`` key)."""
        return {f.name: _encode(getattr(self, f.name)) for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any]) -> C:
        """Build from a dict; unknown keys and wrong types raise :class:`ConfigError`."""
        if not isinstance(data, dict):
            raise ConfigError(f"{cls.__name__}: expected a mapping, got {type(data).__name__}")
        data = dict(data)
        data.pop("type", None)
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
        for key in data:
            if key not in fields:
                raise ConfigError(f"{cls.__name__}: unknown key {key!r}; valid keys: {', '.join(sorted(fields))}")
        hints = typing.get_type_hints(cls)
        kwargs = {k: _decode(v, hints[k], f"{cls.__name__}.{k}") for k, v in data.items()}
        try:
            return cls(**kwargs)
        except TypeError as exc:  # a required field is missing
            raise ConfigError(f"{cls.__name__}: {exc}") from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls: type[C], text: str) -> C:
        return cls.from_dict(json.loads(text))


def _encode(value: Any) -> Any:
    if isinstance(value, Config):
        return {"type": type(value).__name__, **value.to_dict()}
    if isinstance(value, (tuple, list)):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _encode(v) for k, v in value.items()}
    return value


def _decode(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _decode(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{where}: {value!r} matches none of {hint}: {'; '.join(errors)}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_decode(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}")
        return tuple(_decode(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return {k: _decode(v, args[1], f"{where}.{k}") for k, v in value.items()} if args else dict(value)
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if isinstance(hint, type) and issubclass(hint, Config):
        if isinstance(value, hint):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping for {hint.__name__}, got {value!r}")
        cls = hint
        if "type" in value:
            cls = _REGISTRY.get(value["type"])  # type: ignore[assignment]
            if cls is None or not issubclass(cls, hint):
                allowed = sorted(n for n, c in _REGISTRY.items() if issubclass(c, hint))
                raise ConfigError(f"{where}: unknown type {value['type']!r}; allowed: {', '.join(allowed)}")
        return cls.from_dict(value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    scalar = isinstance(hint, type) and hint in (int, float, str, bool)
    if scalar and (not isinstance(value, hint) or (hint is int and isinstance(value, bool))):
        raise ConfigError(f"{where}: expected {hint.__name__}, got {value!r}")
    return value


def load(path: str | Path, cls: type[C]) -> C:
    """Read a config of class ``cls`` from a ``.json``, ``.yaml`` or ``.yml`` file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text)
    elif path.suffix == ".json":
        data = json.loads(text)
    else:
        raise ConfigError(f"{path}: unknown config format {path.suffix!r}; use .json, .yaml or .yml")
    return cls.from_dict(data)


def dump(config: Config, path: str | Path) -> Path:
    """Write ``config`` to ``path`` as JSON or YAML (by suffix); returns the path."""
    path = Path(path)
    if path.suffix in (".yaml", ".yml"):
        import yaml

        path.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    else:
        path.write_text(config.to_json() + "\n")
    return path


def check(condition: bool, owner: str, field: str, value: Any, allowed: str) -> None:
    """Raise ConfigError naming ``owner.field``, the ``value`` and what is ``allowed``."""
    if not condition:
        raise ConfigError(f"{owner}.{field} = {value!r} is invalid: {allowed}")
