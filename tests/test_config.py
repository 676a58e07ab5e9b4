"""Config base: round trips, validation, unknown keys, file formats, registry allowlist."""

from dataclasses import dataclass

import pytest

from crossrec.config import Config, dump, load
from crossrec.errors import ConfigError
from crossrec.train import TrainConfig


@dataclass(frozen=True, kw_only=True)
class _Inner(Config):
    x: int = 1


@dataclass(frozen=True, kw_only=True)
class _Outer(Config):
    inner: _Inner = _Inner()
    items: tuple[_Inner, ...] = ()
    ratio: float = 0.5
    name: str | None = None


def test_nested_round_trip(tmp_path):
    cfg = _Outer(inner=_Inner(x=3), items=(_Inner(x=4),), ratio=2, name="n")
    assert _Outer.from_dict(cfg.to_dict()) == cfg
    for suffix in (".json", ".yaml"):
        assert load(dump(cfg, tmp_path / f"c{suffix}"), _Outer) == cfg


def test_errors_name_the_field():
    with pytest.raises(ConfigError, match="_Outer.ratio: expected float"):
        _Outer.from_dict({"ratio": "high"})
    with pytest.raises(ConfigError, match="unknown type 'os.system'"):
        _Outer.from_dict({"inner": {"type": "os.system", "x": 1}})
    with pytest.raises(ConfigError, match="TrainConfig.epochs = 0 is invalid"):
        TrainConfig(epochs=0)
    with pytest.raises(ConfigError, match="unknown key 'lr_dense'; valid keys: .*lr"):
        TrainConfig.from_dict({"lr_dense": 1})


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load(tmp_path / "missing.yaml", TrainConfig)
    (tmp_path / "c.toml").write_text("x")
    with pytest.raises(ConfigError, match="unknown config format"):
        load(tmp_path / "c.toml", TrainConfig)


def test_fixed_length_tuples_decode_each_item_with_its_type():
    from dataclasses import dataclass

    from crossrec.config import Config

    @dataclass(frozen=True, kw_only=True)
    class Pair(Config):
        span: tuple[float, int]

    assert Pair.from_dict({"span": [0.5, 3]}).span == (0.5, 3)
