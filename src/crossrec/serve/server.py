"""Run a :class:`~crossrec.serve.plan.ServePlan`: replicas + Router + the HTTP app under uvicorn.

:func:`serve` is what ``crossrec serve`` calls: it builds the replicas of every deployment (worker
processes by default), starts the router (which starts the replicas and measures their latency
curves), binds ``plan.host:plan.port`` — 127.0.0.1 unless the plan says otherwise — and serves until
SIGINT or SIGTERM. Shutdown is graceful: the listening socket closes, requests in flight are answered,
then the router drains and stops its replicas (and their processes).

:class:`ServerHandle` and :func:`running` run the same server in a background thread on a free port,
for tests and benchmarks.

Additions to the serve contract (no deviation): :func:`build_router` (plan -> started-later Router and
the feature schemas), :func:`make_swap_loader` (what ``POST /v1/models/{name}`` uses), and
:class:`ServerHandle` exposes ``router`` and ``url``. ``serve(engine="ray")`` hands the plan to
:func:`crossrec.serve.ray_engine.deploy` and blocks until SIGINT/SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from crossrec.data.schema import FeatureSchema
from crossrec.errors import ConfigError, ServeError
from crossrec.serve.eventloop import run as run_loop
from crossrec.serve.plan import DeploymentSpec, ServePlan

if TYPE_CHECKING:
    from crossrec.serve.replica import Replica
    from crossrec.serve.router import Router

log = logging.getLogger("crossrec.serve")
ENGINES = ("local", "ray")


def schema_of(artifact: str) -> FeatureSchema:
    """The feature schema recorded in an artifact's manifest (no weights are read).

    >>> schema_of("/nonexistent")
    Traceback (most recent call last):
    ...
    crossrec.errors.ArtifactError: /nonexistent is not an artifact directory (train one with `crossrec train`)
    """
    from crossrec.artifact import read_manifest

    return FeatureSchema.from_dict(read_manifest(artifact)["schema"])


def _deployment_schema(dep: DeploymentSpec) -> FeatureSchema:
    schemas = {r.artifact: schema_of(r.artifact) for r in dep.replicas}
    first = next(iter(schemas.values()))
    for path, schema in schemas.items():
        if schema != first:
            raise ConfigError(f"deployment {dep.name!r}: artifact {path} has other features than "
                              f"{dep.replicas[0].artifact}; every replica of a model must accept the same requests")
    return first


def build_router(plan: ServePlan, *, workers: bool = True, clock: Callable[[], float] = time.monotonic
                 ) -> tuple[Router, dict[str, FeatureSchema]]:
    """The (not yet started) Router for ``plan`` and each deployment's feature schema.

    ``workers=False`` runs the replicas in this process (``crossrec serve --workers 0``).
    """
    from crossrec.serve.policy import get_policy
    from crossrec.serve.replica import build_replicas
    from crossrec.serve.router import Router

    schemas = {dep.name: _deployment_schema(dep) for dep in plan.deployments}
    replicas = build_replicas(plan, workers=workers)
    router = Router(replicas, get_policy(plan.routing.policy, **plan.routing.options), slo_p99_ms=plan.slo_p99_ms,
                    max_queue_items=plan.admission.max_queue_items, max_retries=plan.max_retries,
                    replica_timeout_s=plan.replica_timeout_s, clock=clock,
                    admission_slo_factor=plan.admission.slo_factor, split_items=plan.routing.split_items)
    return router, schemas


def make_swap_loader(plan: ServePlan, *, workers: bool = True) -> Callable[[str, str], tuple[list[Replica],
                                                                                             FeatureSchema]]:
    """``loader(model, artifact) -> (replicas, schema)``: the model's replicas as the plan describes them
    (runtime, device, threads, batching, count), on the new artifact. Swapped-in replicas are named
    ``<name>@<generation>`` so their metrics never mix with the draining old ones'."""
    from crossrec.serve.replica import build_replicas

    generation = itertools.count(1)

    def load(model: str, artifact: str) -> tuple[list[Replica], FeatureSchema]:
        dep = plan.deployment(model)
        new = DeploymentSpec(name=model, replicas=tuple(dataclasses.replace(r, artifact=artifact)
                                                        for r in dep.replicas))
        schema = _deployment_schema(new)
        replicas = build_replicas(dataclasses.replace(plan, deployments=(new,)), workers=workers)[model]
        gen = next(generation)
        for r in replicas:
            r.name = f"{r.name}@{gen}"
        return replicas, schema

    return load


def _bind(host: str, port: int) -> socket.socket:
    """A bound socket (uvicorn listens on it): a taken port is a clear ServeError, not uvicorn's exit(1)."""
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
    except OSError as exc:
        raise ServeError(f"cannot listen on {host}:{port} ({exc}); pick another port (--port) or stop what "
                         "uses it") from None
    sock.set_inheritable(True)
    return sock


class _Uvicorn:
    """uvicorn's Server without its signal capture: crossrec handles SIGINT/SIGTERM itself so the router
    can drain and stop its worker processes after the HTTP side has shut down."""

    def __new__(cls, config: Any) -> Any:
        import uvicorn

        class Server(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:
                yield

        return Server(config)


async def _run(plan: ServePlan, *, workers: bool, admin_token: str | None, port: int | None,
               on_ready: Callable[[str], None] | None, on_server: Callable[[Any, Router], None] | None,
               signals: bool) -> None:
    import uvicorn

    from crossrec.serve.app import create_app

    router, schemas = build_router(plan, workers=workers)
    sock = _bind(plan.host, plan.port if port is None else port)
    try:
        await router.start()
        try:
            app = create_app(router, schemas, admin_token=admin_token, limits=plan.admission,
                             swap_loader=make_swap_loader(plan, workers=workers))
            grace = min(60.0, plan.replica_timeout_s * (plan.max_retries + 1) + 5.0)
            server = _Uvicorn(uvicorn.Config(app, log_config=None, access_log=False, lifespan="off",
                                             timeout_graceful_shutdown=grace, backlog=2048))
            if on_server is not None:
                on_server(server, router)
            if signals:
                _install_signal_handlers(server)
            announce = asyncio.create_task(_announce(server, sock, on_ready))
            try:
                await server.serve(sockets=[sock])
            finally:
                announce.cancel()
        finally:
            await router.stop()
    finally:
        sock.close()


def _install_signal_handlers(server: Any) -> None:
    loop = asyncio.get_running_loop()

    def stop(sig: signal.Signals) -> None:
        if server.should_exit:  # a second Ctrl+C: stop waiting for in-flight requests
            server.force_exit = True
        server.should_exit = True
        log.info("received %s: shutting down gracefully", sig.name)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop, sig)


async def _announce(server: Any, sock: socket.socket, on_ready: Callable[[str], None] | None) -> None:
    while not server.started:
        await asyncio.sleep(0.01)
    host, port = sock.getsockname()[:2]
    url = f"http://{f'[{host}]' if ':' in host else host}:{port}"
    log.info("serving on %s", url)
    if on_ready is not None:
        on_ready(url)


def serve(plan: ServePlan, *, engine: str = "local", workers: bool = True, admin_token: str | None = None,
          ready_callback: Callable[[str], None] | None = None) -> None:
    """Serve ``plan`` until SIGINT/SIGTERM (see the module docstring); ``ready_callback(url)`` is called
    once requests are accepted. ``workers=False`` computes in this process; ``admin_token`` enables
    the hot-swap endpoint. ``engine="ray"`` deploys the plan on a local Ray Serve instance instead
    (:mod:`crossrec.serve.ray_engine`: no priorities, deadlines or admin endpoints there)."""
    if engine not in ENGINES:
        raise ConfigError(f"engine = {engine!r} is invalid: one of {', '.join(ENGINES)}")
    if engine == "ray":
        _serve_ray(plan, admin_token, ready_callback)
        return
    run_loop(_run(plan, workers=workers, admin_token=admin_token, port=None, on_ready=ready_callback,
                  on_server=None, signals=True), plan.event_loop)


def _serve_ray(plan: ServePlan, admin_token: str | None, ready_callback: Callable[[str], None] | None) -> None:
    from crossrec.serve.ray_engine import deploy

    if admin_token is not None:
        log.warning("the Ray engine has no admin endpoints: the admin token is not used")
    deployment = deploy(plan)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        if ready_callback is not None:
            ready_callback(deployment.url)
        while not stop.wait(0.5):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        deployment.stop()


class ServerHandle:
    """A server for ``plan`` in a background thread (its own event loop), on ``port`` (0 = a free one).

    ``start()`` returns once it accepts requests (or raises what stopped it from starting); ``url``,
    ``router`` are then set; ``stop()`` shuts it down gracefully. Also a context manager.
    """

    def __init__(self, plan: ServePlan, *, port: int = 0, workers: bool = True, admin_token: str | None = None,
                 startup_timeout_s: float = 300.0):
        self.plan, self.port, self.workers, self.admin_token = plan, port, workers, admin_token
        self.startup_timeout_s = startup_timeout_s
        self.url: str | None = None
        self.router: Router | None = None
        self._server: Any = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> ServerHandle:
        self._thread = threading.Thread(target=self._main, name="crossrec-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(self.startup_timeout_s):
            self.stop()
            raise ServeError(f"the server did not start within {self.startup_timeout_s} s")
        if self._error is not None:
            self._thread.join(5.0)
            raise self._error
        return self

    def _main(self) -> None:
        def on_server(server: Any, router: Router) -> None:
            self._server, self.router = server, router

        def on_ready(url: str) -> None:
            self.url = url
            self._ready.set()

        try:
            run_loop(_run(self.plan, workers=self.workers, admin_token=self.admin_token, port=self.port,
                          on_ready=on_ready, on_server=on_server, signals=False), self.plan.event_loop)
        except BaseException as exc:  # handed to the thread that called start()
            self._error = exc
        finally:
            self._ready.set()

    def stop(self, timeout_s: float = 60.0) -> None:
        """Graceful shutdown (answers in-flight requests, stops replicas); idempotent."""
        if self._server is not None:
            self._server.should_exit = True  # uvicorn polls it every 0.1 s
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive() and self._server is not None:
                self._server.force_exit = True
                self._thread.join(5.0)

    def __enter__(self) -> ServerHandle:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def running(plan: ServePlan, *, port: int = 0, workers: bool = True, admin_token: str | None = None,
            startup_timeout_s: float = 300.0) -> Iterator[str]:
    """Serve ``plan`` in a background thread for the ``with`` block and yield its URL; use
    :class:`ServerHandle` to reach the router too.

    >>> import tempfile, httpx
    >>> from crossrec.artifact import save_artifact
    >>> from crossrec.data.synthetic import SyntheticConfig
    >>> from crossrec.models import ModelSpec, build
    >>> from crossrec.serve.plan import ServePlan
    >>> schema = SyntheticConfig(num_sparse=2, max_rows=5).schema()
    >>> model = build(ModelSpec.for_schema(schema, embedding_dim=4, bottom_mlp=(4,), top_mlp=(4,)))
    >>> path = save_artifact(tempfile.mkdtemp() + "/m", model, schema)
    >>> plan = ServePlan.for_artifact(path, count=1, catalog_device="epyc-zen5-2vcpu")
    >>> with running(plan, workers=False) as url:
    ...     httpx.get(url + "/readyz").json()
    {'ready': True}
    """
    with ServerHandle(plan, port=port, workers=workers, admin_token=admin_token,
                      startup_timeout_s=startup_timeout_s) as handle:
        yield str(handle.url)
