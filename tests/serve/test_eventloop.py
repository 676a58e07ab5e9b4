"""The event loop the server and load generator run on (crossrec.serve.eventloop)."""

import asyncio
import builtins

import pytest

from crossrec.errors import ConfigError
from crossrec.serve import eventloop
from crossrec.serve.plan import ServePlan


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_auto_uses_uvloop_when_installed():
    pytest.importorskip("uvloop")
    assert eventloop.loop_name("auto") == "uvloop"
    assert eventloop.run(_loop_module(), "auto").startswith("uvloop")
    assert eventloop.run(_loop_module(), "asyncio").startswith("asyncio")


def test_without_uvloop_auto_falls_back_and_uvloop_is_a_clear_error(monkeypatch):
    real_import = builtins.__import__

    def no_uvloop(name, *args, **kwargs):
        if name == "uvloop":
            raise ImportError("No module named 'uvloop'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_uvloop)
    assert eventloop.loop_name("auto") == "asyncio"
    assert eventloop.run(_loop_module(), "auto").startswith("asyncio")
    with pytest.raises(ConfigError, match="needs the uvloop package"):
        eventloop.run(_loop_module(), "uvloop")


def test_plan_checks_event_loop():
    from crossrec.serve.plan import DeploymentSpec, ReplicaSpec

    dep = DeploymentSpec(name="m", replicas=(ReplicaSpec(artifact="a"),))
    assert ServePlan(deployments=(dep,)).event_loop == "auto"
    with pytest.raises(ConfigError, match="event_loop"):
        ServePlan(deployments=(dep,), event_loop="trio")
