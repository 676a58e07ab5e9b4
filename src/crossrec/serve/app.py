"""The HTTP front: a FastAPI app over a :class:`~crossrec.serve.router.Router`.

=======================  ===============================================================================
``POST /v1/predict``     score instances (JSON or ``application/x-npz``; the answer JSON, raw float32 or npz
                         as ``Accept`` asks: see :mod:`crossrec.serve.codec`)
``GET /v1/models``       served models: versions, replicas, devices and the features a request must carry
``POST /v1/models/NAME``  admin (``Authorization: Bearer TOKEN``): hot-swap NAME to ``{"artifact": PATH}``
``GET /healthz``         the process answers (liveness)
``GET /readyz``          every model has a healthy replica (readiness; 503 otherwise)
``GET /metrics``         Prometheus text: the router's metrics (admission budget and feedback included) plus
                         the HTTP front's
``GET /openapi.json``    the OpenAPI schema (FastAPI), ``/docs`` its browsable form
=======================  ===============================================================================

Every refusal is JSON ``{"detail": message, "error": kind}`` with a status that tells the client what
to do: 400 unparsable body, 401/403 admin auth, 404 unknown model, 413 body or request too large,
415 unsupported media type, 422 invalid content (the message names the field), 503 overloaded or no
healthy replica (with ``Retry-After``), 504 deadline passed (not computed). Bad input never gets a 5xx:
a 500 means a bug in crossrec, and is logged with its traceback.

The body is read with a byte limit *before* parsing (``Content-Length`` is checked first, the stream
is counted as it arrives), so an oversized body costs the server nothing but the bytes it refused.

``POST /v1/predict`` is the hot path (issue #5: every front millisecond is taken from the replicas on a
2-core machine), so the app takes it in a fast lane: :class:`ServingApp` hands it straight to its
handler, skipping Starlette's middleware stack, routing and FastAPI's parameter solving; the handler
parses its three query parameters itself (no pydantic on the request path) and counts its own
response. The route is still declared to FastAPI — for the OpenAPI schema, other methods (405) and
an app mounted under a prefix — and runs the same handler there. (The lane also skips FastAPI's
optional OpenTelemetry instrumentation of that route.)

Each admitted and answered prediction's latency, from the handler's entry to the answer sent, goes to
the router's admission feedback (``Router.observe_latency``; :class:`~crossrec.serve.router_admission.
LatencyFeedback`), which shrinks the admission budget while their p99 is over its target (issue #5).

"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from crossrec.data.schema import FeatureSchema
from crossrec.errors import ArtifactError, ConfigError, DataError, DeadlineExceededError, OverloadedError, ServeError
from crossrec.serve.codec import (
    JSON_TYPE,
    MAX_DEADLINE_MS,
    MAX_PRIORITY,
    NPZ_TYPE,
    RAW_TYPE,
    BodyError,
    PredictRequest,
    PredictResponse,
    answer_headers,
    check_header,
    decode_npz,
    encode_predictions,
    encode_response,
    negotiate,
    parse_json,
    to_batch,
)
from crossrec.serve.plan import AdmissionConfig

if TYPE_CHECKING:
    from crossrec.serve.replica import Replica

log = logging.getLogger("crossrec.serve")

# swap_loader(model, artifact_path) -> (replicas, not started; the artifact's feature schema)
SwapLoader = Callable[[str, str], "tuple[Sequence[Replica], FeatureSchema]"]
ADMIN_BODY_BYTES = 64 * 1024
NPZ_EXPANSION = 4  # an .npz may expand to this many times max_body_bytes (deflated members)
_ERRORS = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 413: "too_large",
           415: "unsupported_media_type", 422: "invalid", 500: "internal", 501: "not_configured",
           503: "unavailable", 504: "deadline_exceeded"}


class SwapRequest(BaseModel):
    """Body of ``POST /v1/models/{name}``: the artifact directory of the new version."""

    model_config = ConfigDict(extra="forbid")
    artifact: str = Field(min_length=1, max_length=4096)


class _Problem(Exception):
    """A refusal decided by the app itself (status, message, extra headers)."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status, self.headers = status, dict(headers or {})


@dataclass
class _State:
    router: Any
    schemas: dict[str, FeatureSchema]
    admin_token: str | None
    limits: AdmissionConfig
    swap_loader: SwapLoader | None
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    swap_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def __post_init__(self) -> None:
        r = self.registry
        self.responses = Counter("crossrec_http_responses", "HTTP responses by route and status code",
                                 ["route", "code"], registry=r)
        self.decode_seconds = Histogram("crossrec_http_decode_seconds", "Time to read and decode a request body",
                                        ["format"], registry=r,
                                        buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0))
        # labelled children looked up once (``labels()`` takes a lock and builds a key on every call)
        self.decode_child = {fmt: self.decode_seconds.labels(format=fmt) for fmt in ("npz", "json")}
        self._response_child: dict[tuple[str, int], Any] = {}

    def count_response(self, route: str, code: int) -> None:
        child = self._response_child.get((route, code))
        if child is None:  # routes are a fixed set and codes < 600: this cache stays small
            child = self._response_child[(route, code)] = self.responses.labels(route=route, code=str(code))
        child.inc()

    def schema(self, model: str) -> FeatureSchema:
        schema = self.schemas.get(model)
        if schema is None:
            raise _Problem(404, f"unknown model {model!r}; served models: {', '.join(sorted(self.schemas)) or 'none'}"
                                " (GET /v1/models lists them)")
        return schema


def status_of(exc: BaseException) -> tuple[int, str, dict[str, str]]:
    """(HTTP status, message, headers) for an exception raised while answering a request.

    >>> status_of(OverloadedError("queue full", retry_after_s=0.2))
    (503, 'queue full', {'Retry-After': '1'})
    >>> status_of(DeadlineExceededError("too late"))[0], status_of(ConfigError("bad priority"))[0]
    (504, 422)
    """
    if isinstance(exc, _Problem):
        return exc.status, str(exc), exc.headers
    if isinstance(exc, BodyError):
        return exc.status, str(exc), {}
    if isinstance(exc, OverloadedError):
        # Retry-After takes whole seconds (RFC 9110); round up so a client never retries too early.
        return 503, str(exc), {"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))}
    if isinstance(exc, DeadlineExceededError):
        return 504, str(exc), {}
    if isinstance(exc, ServeError):  # no healthy replica, shutting down, a replica failed past its retries
        return 503, str(exc), {"Retry-After": "1"}
    if isinstance(exc, (DataError, ConfigError, ArtifactError)):  # ArtifactError: a swap to a bad directory
        return 422, str(exc), {}
    return 500, f"internal error ({type(exc).__name__}); see the server log", {}


def _error_response(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": message, "error": _ERRORS.get(status, "error")}, status_code=status,
                        headers=dict(headers or {}))


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise _Problem(400, f"Content-Length {declared[:40]!r} is not a byte count")
        if int(declared) > limit:
            raise _Problem(413, f"the body is {int(declared)} bytes, more than the limit of {limit}; "
                                "split the request (or send application/x-npz, ~5x smaller than JSON)")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _Problem(413, f"the body exceeds the limit of {limit} bytes; split the request")
        chunks.append(chunk)
    return b"".join(chunks)


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", JSON_TYPE).split(";")[0].strip().lower() or JSON_TYPE


def _features(schema: FeatureSchema) -> dict[str, Any]:
    return {"dense": list(schema.dense),
            "sparse": [{"name": f.name, "num_embeddings": f.num_embeddings, "multi_hot": f.multi_hot}
                       for f in schema.sparse]}


def _same_features(a: FeatureSchema, b: FeatureSchema) -> bool:
    return _features(a) == _features(b)


_ANSWER_FIELDS = (("Model", "string", "the model"), ("Version", "string", "the artifact version that answered"),
                  ("Replica", "string", "the replica that answered"),
                  ("Queue-Ms", "number", "ms from admission to dispatch"),
                  ("Compute-Ms", "number", "ms the batch took on the replica"))
_BINARY_ANSWER_HEADERS = {f"X-Crossrec-{name}": {"schema": {"type": kind}, "description": text}
                          for name, kind, text in _ANSWER_FIELDS}
_PREDICT_DOC = {
    "parameters": [
        {"name": "model", "in": "query", "required": False, "description": "x-npz bodies: the model",
         "schema": {"type": "string", "maxLength": 200}},
        {"name": "priority", "in": "query", "required": False, "description": "x-npz bodies: 0 = most urgent "
         "(default 1)", "schema": {"type": "integer", "minimum": 0, "maximum": MAX_PRIORITY}},
        {"name": "deadline_ms", "in": "query", "required": False, "description": "x-npz bodies: answer within "
         "this many ms or not at all (504)",
         "schema": {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_DEADLINE_MS}}],
    "requestBody": {"required": True, "content": {
        JSON_TYPE: {"schema": {"$ref": "#/components/schemas/PredictRequest"}},
        NPZ_TYPE: {"schema": {"type": "string", "format": "binary",
                              "description": "np.savez of dense (B, num_dense) float32, ids (nnz,) int64, offsets "
                                             "(B*F+1,) int64; model, priority and deadline_ms as query parameters"}}}},
    "responses": {"200": {
        "description": "one click probability per instance, in request order, in the format the Accept header "
                       f"asks for ({JSON_TYPE} by default); binary answers carry the other fields as headers",
        "headers": _BINARY_ANSWER_HEADERS,
        "content": {RAW_TYPE: {"schema": {"type": "string", "format": "binary",
                                          "description": "B little-endian float32 predictions, nothing else"}},
                    NPZ_TYPE: {"schema": {"type": "string", "format": "binary",
                                          "description": "np.savez holding predictions (B,) float32"}}}}}}
_SWAP_BODY = {"requestBody": {"required": True,
                              "content": {JSON_TYPE: {"schema": {"$ref": "#/components/schemas/SwapRequest"}}}}}
_ERROR_DOCS: dict[int | str, dict[str, Any]] = {
    code: {"description": text} for code, text in (
        (400, "unparsable body"), (404, "unknown model"), (413, "body or request too large"),
        (415, "unsupported Content-Type"), (422, "invalid request (the message names the field)"),
        (503, "overloaded or no healthy replica; see Retry-After"), (504, "deadline passed; not computed"))}


def create_app(router: Any, schemas: Mapping[str, FeatureSchema], *, admin_token: str | None = None,
               limits: AdmissionConfig | None = None, swap_loader: SwapLoader | None = None) -> FastAPI:
    """The FastAPI app serving ``router`` (a started :class:`~crossrec.serve.router.Router`) for the
    models in ``schemas`` (model name -> the FeatureSchema requests are checked against).

    ``admin_token`` enables ``POST /v1/models/{name}`` (None: admin endpoints answer 403);
    ``limits`` bounds body bytes and items per request; ``swap_loader(model, artifact)`` builds the
    new version's replicas (not started) and returns them with the artifact's schema. The app does
    not start or stop the router: :func:`crossrec.serve.server.serve` does.

    >>> app = create_app(None, {})  # no router: only the process-level endpoints answer usefully
    >>> sorted(r.path for r in app.routes if r.path.startswith("/v1"))
    ['/v1/models', '/v1/models/{name}', '/v1/predict']
    """
    from crossrec import __version__

    state = _State(router, dict(schemas), admin_token, limits or AdmissionConfig(), swap_loader)
    # The admission feedback runs on the latency measured here, from the handler's entry to the answer
    # sent: more of a request than the router sees (body reading, decoding, the answer's encoding and
    # sending, and event-loop queueing in between). The plan's limits carry the feedback's settings.
    observe = getattr(router, "observe_latency", None)
    if observe is not None and hasattr(router, "configure_admission"):
        router.configure_admission(limits, external_latency=True)
    app = ServingApp(title="crossrec serving", version=__version__,
                     description="Click-probability scoring for recommendation models; see crossrec.serve.app.")
    app.state.crossrec = state

    app.add_middleware(_CountResponses, state=state)

    async def fast_predict(scope: dict, receive: Callable, send: Callable) -> None:
        t0 = time.perf_counter()  # as early as the handler can: uvicorn has parsed the head, nothing more
        response, unloaded = await _answer_predict(state, Request(scope, receive))
        state.count_response("/v1/predict", response.status_code)
        await response(scope, receive, send)
        if observe is not None and response.status_code == 200:  # admitted and answered
            observe((time.perf_counter() - t0) * 1e3, unloaded)

    app.fast_predict = fast_predict

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = [f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', 'invalid')}" for e in exc.errors()]
        return _error_response(422, "; ".join(parts[:3]) or "invalid request")

    @app.post("/v1/predict", response_model=PredictResponse, responses=_ERROR_DOCS, openapi_extra=_PREDICT_DOC,
              summary="Score instances with a served model")
    async def predict(request: Request) -> Response:  # reached when the fast lane is off (see ServingApp)
        t0 = time.perf_counter()
        response, unloaded = await _answer_predict(state, request)
        if observe is not None and response.status_code == 200:
            observe((time.perf_counter() - t0) * 1e3, unloaded)  # without the sending: FastAPI sends after we return
        return response

    @app.get("/v1/models", summary="Served models, their versions, replicas, devices and features")
    async def models() -> dict[str, Any]:
        listed = state.router.models() if state.router is not None else {}
        return {"models": {name: {**listed.get(name, {}), "features": _features(schema)}
                           for name, schema in sorted(state.schemas.items())}}

    @app.post("/v1/models/{name}", openapi_extra=_SWAP_BODY, summary="Admin: hot-swap a model to a new artifact",
              responses={401: {"description": "missing or wrong bearer token"},
                         403: {"description": "admin endpoints disabled (no token configured)"}, **_ERROR_DOCS})
    async def swap(name: str, request: Request) -> Response:
        try:
            return await _swap(state, name, request)
        except Exception as exc:
            return _refusal(exc, f"POST /v1/models/{name}")

    @app.get("/healthz", summary="Liveness: the process answers")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="Readiness: every model has a healthy replica",
             responses={503: {"description": "not ready"}})
    async def readyz() -> Response:
        ready = state.router is not None and bool(state.router.ready())
        return JSONResponse({"ready": ready}, status_code=200 if ready else 503)

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def metrics() -> Response:
        body = state.router.render_metrics() if state.router is not None else b""
        return Response(body + generate_latest(state.registry), media_type=CONTENT_TYPE_LATEST)

    _publish_body_schemas(app)
    return app


def _publish_body_schemas(app: FastAPI) -> None:
    """Add the request-body models to the OpenAPI components. The bodies are read by hand (byte limit
    first, two media types), so FastAPI does not see these models on its own."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in (PredictRequest, SwapRequest):
                js = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(js.pop("$defs", {}))
                components[model.__name__] = js
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


_ROUTES = {"/v1/predict", "/v1/models", "/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"}


class ServingApp(FastAPI):
    """A FastAPI app with a fast lane: while ``fast_predict`` is set (:func:`create_app` sets it),
    ``POST /v1/predict`` goes straight to that ASGI callable instead of through the middleware stack
    and the router (see the module docstring). Everything else, and an app with a ``root_path``, takes
    the ordinary path; ``app.fast_predict = None`` sends ``/v1/predict`` there too.

    >>> ServingApp().fast_predict is None
    True
    """

    fast_predict: Callable[[dict, Callable, Callable], Awaitable[None]] | None = None

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if (self.fast_predict is not None and scope["type"] == "http" and scope["path"] == "/v1/predict"
                and scope["method"] == "POST" and not scope.get("root_path") and not self.root_path):
            scope["app"] = self
            await self.fast_predict(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


class _CountResponses:
    """ASGI middleware counting responses by route and status (a plain ASGI wrapper: no per-request
    task or body buffering, unlike ``BaseHTTPMiddleware``). The fast lane counts its own."""

    def __init__(self, app: Any, state: _State):
        self.app, self.state = app, state

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        route = "/v1/models/{name}" if path.startswith("/v1/models/") else path if path in _ROUTES else "other"

        async def counting_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                self.state.count_response(route, int(message["status"]))
            await send(message)

        await self.app(scope, receive, counting_send)


def _refusal(exc: Exception, where: str) -> JSONResponse:
    status, message, headers = status_of(exc)
    if status == 500:
        log.error("%s failed", where, exc_info=exc)
    return _error_response(status, message, headers)


async def _answer_predict(state: _State, request: Request) -> tuple[Response, bool | None]:
    """``POST /v1/predict``, whichever lane it came by: the answer, or the refusal as a JSON response;
    with whether the request found a replica idle (:attr:`~crossrec.serve.router.PredictResult.unloaded`,
    None for a refusal)."""
    try:
        return await _predict(state, request)
    except Exception as exc:
        return _refusal(exc, "POST /v1/predict"), None


_INTEGER = re.compile(r"[+-]?[0-9]{1,8}")


def _query(request: Request) -> tuple[str | None, int | None, float | None]:
    """``model``, ``priority`` and ``deadline_ms`` from the query string, parsed by hand (the fast lane
    runs no pydantic); :func:`~crossrec.serve.codec.check_header` checks their ranges for x-npz bodies."""
    query = request.query_params
    model, priority, deadline = query.get("model"), query.get("priority"), query.get("deadline_ms")
    if model is not None and len(model) > 200:
        raise BodyError(f"query.model: expected a model name of at most 200 characters, got {len(model)}")
    if priority is not None:
        text = priority.strip()
        if not _INTEGER.fullmatch(text):
            raise BodyError(f"query.priority: expected an integer in [0, {MAX_PRIORITY}] (0 = most urgent), got "
                            f"{priority[:20]!r}")
        priority = int(text)  # type: ignore[assignment]
        if not 0 <= priority <= MAX_PRIORITY:  # type: ignore[operator]
            raise BodyError(f"query.priority: expected an integer in [0, {MAX_PRIORITY}] (0 = most urgent), got "
                            f"{priority}")
    if deadline is not None:
        try:
            value = float(deadline) if len(deadline) <= 40 else math.nan
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and 0 < value <= MAX_DEADLINE_MS):
            raise BodyError(f"query.deadline_ms: expected a number of ms in (0, {MAX_DEADLINE_MS:.0f}], got "
                            f"{deadline[:20]!r}")
        deadline = value  # type: ignore[assignment]
    return model, priority, deadline  # type: ignore[return-value]


async def _predict(state: _State, request: Request) -> tuple[Response, bool | None]:
    t0 = time.perf_counter()
    model, priority, deadline_ms = _query(request)
    limits = state.limits
    body = await _read_body(request, limits.max_body_bytes)
    media = _media_type(request)
    if media == NPZ_TYPE:
        name, priority, deadline_ms = check_header(model, priority, deadline_ms)
        batch = decode_npz(body, state.schema(name), max_items=limits.max_items_per_request,
                           max_decoded_bytes=NPZ_EXPANSION * limits.max_body_bytes)
    elif media == JSON_TYPE or media.endswith("+json"):
        req = parse_json(body)
        name, priority, deadline_ms = req.model, req.priority, req.deadline_ms
        batch = to_batch(req.instances, state.schema(name), max_items=limits.max_items_per_request)
    else:
        raise _Problem(415, f"Content-Type {media!r} is not supported; send {JSON_TYPE} or {NPZ_TYPE}")
    elapsed_ms = (time.perf_counter() - t0) * 1e3
    state.decode_child["npz" if media == NPZ_TYPE else "json"].observe(elapsed_ms / 1e3)
    if deadline_ms is not None:  # the deadline counts from arrival: reading and decoding spent part of it
        deadline_ms -= elapsed_ms
        if deadline_ms <= 0:
            raise DeadlineExceededError(f"the deadline passed while the body was read and decoded ({elapsed_ms:.1f} "
                                        "ms); the request was not computed")
    if state.router is None:
        raise ServeError("no router is attached to this app")
    try:
        result = await state.router.predict(name, batch, priority=priority, deadline_ms=deadline_ms)
    except ConfigError as exc:
        if name not in state.router.models():
            raise _Problem(404, str(exc)) from None
        raise
    answer = negotiate(request.headers.get("accept"))
    unloaded = result.unloaded
    if answer == JSON_TYPE:
        return Response(encode_response(name, result.version, result.replica, result.probabilities,
                                        result.queue_ms, result.compute_ms), media_type=JSON_TYPE), unloaded
    return Response(encode_predictions(answer, result.probabilities), media_type=answer,
                    headers=answer_headers(name, result.version, result.replica, result.queue_ms,
                                           result.compute_ms)), unloaded


def _authorize(state: _State, request: Request) -> None:
    if state.admin_token is None:
        raise _Problem(403, "admin endpoints are disabled: start the server with an admin token "
                            "(crossrec serve --admin-token-env VAR)")
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    # compare_digest: the time taken must not reveal how much of a guessed token was right
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), state.admin_token.encode()):
        raise _Problem(401, "missing or wrong admin token: send 'Authorization: Bearer TOKEN'",
                       {"WWW-Authenticate": "Bearer"})


async def _swap(state: _State, name: str, request: Request) -> Response:
    _authorize(state, request)
    if state.swap_loader is None or state.router is None:
        raise _Problem(501, "hot swap is not configured on this server (no swap loader)")
    old = state.schema(name)
    body = await _read_body(request, ADMIN_BODY_BYTES)
    try:
        artifact = SwapRequest.model_validate_json(body).artifact
    except ValidationError as exc:
        bad_json = any(e["type"] == "json_invalid" for e in exc.errors())
        msg = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors()[:3])
        raise _Problem(400 if bad_json else 422, f'{msg}; send {{"artifact": "PATH"}}') from None
    async with state.swap_lock:  # one swap at a time: two interleaved swaps could strand replicas
        replicas, schema = await asyncio.to_thread(state.swap_loader, name, artifact)
        if not _same_features(schema, old):
            raise _Problem(422, f"the artifact {artifact!r} expects other features than model {name!r} serves; "
                                "a hot swap must keep the request format. Deploy it under a new model name")
        await state.router.swap(name, replicas)
        state.schemas[name] = schema
    info = state.router.models().get(name, {})
    log.info("model %s swapped to %s (%s)", name, artifact, info.get("versions"))
    return JSONResponse({"model": name, "artifact": artifact, **info})
