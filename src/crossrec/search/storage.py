"""Where a search keeps its memory: the Optuna study (RDB storage, SQLite by default), opened so that
workers started together on a new file do not trip over each other, and refused when it was made
with another config (the fields of ``_FINGERPRINT`` decide what a trial's numbers mean). Split out
of :mod:`crossrec.search.loop` to keep modules small.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Iterator
from typing import Any

from crossrec.errors import ConfigError
from crossrec.search.config import SearchConfig
from crossrec.search.objectives import objective_names

# Fields that decide what a trial's numbers mean: resuming a study with other values would mix them.
_FINGERPRINT = ("data", "space", "objectives", "devices", "catalog", "latency", "proxy", "baseline", "seed",
                "strategy")


def _fingerprint(config: SearchConfig) -> str:
    d = config.to_dict()
    return hashlib.sha256(json.dumps({k: d[k] for k in _FINGERPRINT}, sort_keys=True).encode()).hexdigest()[:16]


@contextlib.contextmanager
def _quiet_optuna() -> Iterator[None]:
    import optuna

    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the library never prints (DESIGN.md §4)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(level)


def _storage(url: str, attempts: int = 5) -> Any:
    """Optuna's RDB storage. Workers started together on a new file race to create its tables (one
    gets "table ... already exists" or a duplicate alembic version row): retry. SQLite serializes
    writers: wait 60 s for the lock, not 5."""
    import optuna
    from sqlalchemy.exc import IntegrityError, OperationalError

    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    for attempt in range(attempts):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
        except (OperationalError, IntegrityError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def _open_study(config: SearchConfig) -> Any:
    import optuna

    directions = [d for _, d in objective_names(config.objectives, config.devices)]
    study = optuna.create_study(storage=_storage(config.storage_url()), study_name=config.name,
                                directions=directions, load_if_exists=True)
    mine, theirs = _fingerprint(config), study.user_attrs.get("fingerprint")
    if theirs is None:
        study.set_user_attr("fingerprint", mine)
        study.set_user_attr("config", config.to_dict())
    elif theirs != mine:
        old = study.user_attrs.get("config", {})
        differ = [k for k in _FINGERPRINT if old.get(k) != config.to_dict()[k]]
        raise ConfigError(f"study {config.name!r} in {config.storage_url()} was made with another config "
                          f"(differs in {differ or 'unknown fields'}); resume with the same config, or pick another "
                          "name or out folder")
    return study
