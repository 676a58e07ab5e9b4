"""Which asyncio event loop the server and the load generator run on: uvloop where it is installed.

The HTTP front and ``crossrec loadgen`` are event-loop bound: per request they parse HTTP, move a
body through a socket and (the front) through a worker pipe. uvloop (libuv, written in Cython) does
that work with less CPU than the standard library's selector loop. ``"auto"`` (the default) uses it
when it imports and the standard loop otherwise; ``"uvloop"`` insists (ConfigError naming the install
when it is missing); ``"asyncio"`` is the standard loop.

>>> run(_answer(), "asyncio")
42
>>> run(_answer(), "tornado")
Traceback (most recent call last):
...
crossrec.errors.ConfigError: event_loop = 'tornado' is invalid: one of auto, uvloop, asyncio
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from crossrec.errors import ConfigError

__all__ = ["EVENT_LOOPS", "loop_factory", "loop_name", "run"]

EVENT_LOOPS = ("auto", "uvloop", "asyncio")
T = TypeVar("T")


def loop_factory(kind: str = "auto") -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The loop constructor for ``kind`` (None: the standard library's default loop)."""
    if kind not in EVENT_LOOPS:
        raise ConfigError(f"event_loop = {kind!r} is invalid: one of {', '.join(EVENT_LOOPS)}")
    if kind == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if kind == "uvloop":
            raise ConfigError("event_loop = 'uvloop' needs the uvloop package: pip install 'crossrec[serve]' "
                              "(or uvloop), or use 'auto' / 'asyncio'") from None
        return None
    return uvloop.new_event_loop


def loop_name(kind: str = "auto") -> str:
    """``"uvloop"`` or ``"asyncio"``: what :func:`run` would use for ``kind``."""
    return "asyncio" if loop_factory(kind) is None else "uvloop"


def run(coro: Coroutine[Any, Any, T], kind: str = "auto") -> T:
    """``asyncio.run(coro)`` on the loop ``kind`` selects."""
    try:
        factory = loop_factory(kind)
    except ConfigError:
        coro.close()  # never started: close it, so no "coroutine was never awaited" warning follows the error
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)


async def _answer() -> int:  # for the doctest
    await asyncio.sleep(0)
    return 42
