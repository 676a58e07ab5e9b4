"""`loadgen`: drive a crossrec server over HTTP and measure what a client sees.

Two load models (Schroeder et al., "Open versus closed", NSDI 2006):

- ``mode="open"``: Poisson arrivals at ``rate_qps`` — the next request is sent at its scheduled time
  whether or not earlier ones were answered, as independent users do. Latency is measured from the
  *scheduled* send time, so a client that falls behind cannot hide server queueing (no coordinated
  omission).
- ``mode="closed"``: ``concurrency`` users, each sending its next request as soon as the previous one
  is answered; throughput then reflects capacity at that concurrency.

Query sizes (items = candidate rows per request), ``size_dist``:

- ``"mlperf"``: a ranking query carries one user's candidate list of 1-700 items:
  ``1 + round(699 * Beta(2, 2.6756))`` — mean 300, median ~292, p10 ~111, p90 ~502, p99 ~621. This is our
  stand-in for the MLPerf DLRM server scenario's query-size distribution (its quantile file spans
  ~100-700 items); the issue's workload asks for 1-700 items with mean ~300, which this matches.
- ``"fixed:N"``: every request N items; ``"uniform:A:B"``: uniform on [A, B].

Request contents: dense features uniform in [0, 1), one id per sparse feature uniform over its table
(so lookups touch the whole table, the pessimistic case for caches). A pool of ``pool_size`` requests
is encoded up front, in the body format in use only (the client must not be the bottleneck); each
request picks one at random.

Wire: ``binary=True`` sends ``application/x-npz`` bodies and asks for a raw float32 answer
(``Accept: application/octet-stream``, JSON accepted too, so servers that only answer JSON still
count); ``binary=False`` sends and receives JSON. The client shares the machine with the server in
our benchmarks, so its CPU per request is kept low (issue #5): ``http://`` URLs are driven by
:mod:`crossrec.serve.httpclient` (keep-alive connections, httptools parsing; BENCHMARKS.md §9, session 10,
for its CPU per request against aiohttp), ``https://`` by aiohttp when it is installed (the ``serve`` extra;
~3x less client CPU per request than httpx in our measurement); an injected ``transport`` (e.g.
``httpx.ASGITransport(app)`` in tests) runs on httpx. ``client=`` picks one; ``LoadResult.client`` says which
one ran.

Results: :class:`LoadResult` — p50/p95/p99/mean/max latency of *successful* requests, throughput in
items/s and requests/s over the measured window, and counts per HTTP status or client error; per
request JSON lines (plus a final summary line) go to ``jsonl`` when given.

>>> sizes = SizeDistribution.parse("fixed:8").sample(np.random.default_rng(0), 3)
>>> sizes.tolist()
[8, 8, 8]
>>> bool(abs(SizeDistribution.parse("mlperf").sample(np.random.default_rng(0), 20000).mean() - 300) < 5)
True
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import json
import re
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import numpy as np

from crossrec.config import Config, check
from crossrec.data.schema import FeatureSchema, SparseFeature
from crossrec.errors import ConfigError, ServeError
from crossrec.serve.codec import JSON_TYPE, NPZ_TYPE, RAW_TYPE, decode_predictions, encode_npz, instances_from_arrays
from crossrec.serve.eventloop import run as run_loop
from crossrec.serve.httpclient import Answer as _Answer
from crossrec.serve.httpclient import NoAnswer as _NoAnswer
from crossrec.serve.httpclient import RawHttpClient
from crossrec.serve.httpclient import usable as raw_usable

MLPERF_BETA = (2.0, 2.6756)  # Beta shape on [0, 1] scaled to 1..700: mean 300
_NUMBER = re.compile(r"\d+(\.\d+)?(e[-+]?\d+)?")


@dataclass(frozen=True)
class SizeDistribution:
    """Items per request: ``kind`` is ``"mlperf"``, ``"fixed"`` or ``"uniform"`` (see the module docstring).

    >>> SizeDistribution.parse("uniform:10:20")
    SizeDistribution(kind='uniform', low=10, high=20)
    """

    kind: str
    low: int = 1
    high: int = 700

    @staticmethod
    def parse(text: str) -> SizeDistribution:
        """``"mlperf"``, ``"fixed:N"`` or ``"uniform:A:B"``; ConfigError otherwise."""
        kind, _, rest = str(text).partition(":")
        try:
            nums = [int(a) for a in rest.split(":")] if rest else []
        except ValueError:
            nums = [0]  # falls through to the error below
        if kind == "mlperf" and not rest:
            return SizeDistribution("mlperf", 1, 700)
        if kind == "fixed" and len(nums) == 1 and nums[0] >= 1:
            return SizeDistribution("fixed", nums[0], nums[0])
        if kind == "uniform" and len(nums) == 2 and 1 <= nums[0] <= nums[1]:
            return SizeDistribution("uniform", nums[0], nums[1])
        raise ConfigError(f"size_dist = {text!r} is invalid: 'mlperf', 'fixed:N' (N >= 1) or 'uniform:A:B' "
                          "(1 <= A <= B)")

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` request sizes (int64)."""
        if self.kind == "mlperf":
            return 1 + np.rint(699 * rng.beta(*MLPERF_BETA, size=n)).astype(np.int64)
        return rng.integers(self.low, self.high + 1, size=n, dtype=np.int64)


@dataclass(frozen=True, kw_only=True)
class LoadResult(Config):
    """What one load run measured (a frozen record; ``to_json`` / ``from_json`` round-trip).

    Latencies (ms) are over successful (HTTP 200) requests; ``counts`` maps an HTTP status (``"200"``,
    ``"503"``, ...) or a client-side failure (``"timeout"``, ``"connect_error"``, ``"bad_response"``) to
    its count; ``errors`` each distinct error message (numbers masked as ``#``) to its count;
    ``client`` the HTTP client library that sent the requests.

    >>> LoadResult(url="http://x", mode="open", requests=0).ok
    0
    """

    url: str
    mode: str
    model: str = ""
    binary: bool = True
    client: str = ""  # the HTTP client that sent the load: "aiohttp" or "httpx"
    size_dist: str = "mlperf"
    offered_qps: float | None = None
    concurrency: int | None = None
    seed: int = 0
    duration_s: float = 0.0
    requests: int = 0
    ok: int = 0
    items_ok: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    mean_ms: float | None = None
    max_ms: float | None = None
    throughput_items_s: float = 0.0
    throughput_rps: float = 0.0

    def summary(self) -> str:
        """One human line (for the CLI)."""
        p = " ".join(f"{k}={getattr(self, k + '_ms'):.1f}ms" for k in ("p50", "p95", "p99")
                     if getattr(self, k + "_ms") is not None)
        counts = ", ".join(f"{k}: {v}" for k, v in sorted(self.counts.items()))
        return (f"{self.requests} requests in {self.duration_s:.1f}s: {self.throughput_items_s:,.0f} items/s, "
                f"{self.throughput_rps:.1f} req/s; {p or 'no successful request'}; statuses {counts or '-'}")


@dataclass
class _Payload:
    items: int
    body: bytes  # binary: the npz body; JSON: the array of instances, spliced into each body


@dataclass
class _Outcome:
    scheduled: float
    sent: float
    done: float
    items: int
    priority: int
    status: str
    replica: str = ""
    error: str = ""


def parse_priorities(text: str | Mapping[int, float] | None) -> dict[int, float]:
    """Priority mix: ``"0:0.1,1:0.8,2:0.1"`` (class: weight) or a mapping; None = all class 1.

    >>> parse_priorities("0:1,1:3")
    {0: 0.25, 1: 0.75}
    """
    if text is None:
        return {1: 1.0}
    pairs: Mapping[Any, Any]
    if isinstance(text, str):
        try:
            pairs = {int(k): float(v) for k, v in (p.split(":") for p in text.split(",") if p.strip())}
        except ValueError:
            raise ConfigError(f"priorities = {text!r} is invalid: 'CLASS:WEIGHT,...' e.g. '0:0.1,1:0.9'") from None
    else:
        pairs = text
    check(bool(pairs) and all(isinstance(k, int) and 0 <= k <= 2 for k in pairs)
          and all(v >= 0 for v in pairs.values()) and sum(pairs.values()) > 0, "loadgen", "priorities",
          text, "weights >= 0 (not all 0) for priority classes 0..2")
    total = sum(pairs.values())
    return {int(k): float(v) / total for k, v in sorted(pairs.items())}


def schema_from_models(doc: Mapping[str, Any], model: str | None) -> tuple[str, FeatureSchema]:
    """The model name and its FeatureSchema from a ``GET /v1/models`` answer (``model=None``: the only one)."""
    models = doc.get("models") if isinstance(doc, Mapping) else None
    if not isinstance(models, Mapping):
        raise ConfigError("the /v1/models answer holds no 'models' mapping; is this a crossrec server?")
    if model is None:
        if len(models) != 1:
            raise ConfigError(f"the server serves {len(models)} models ({', '.join(sorted(models))}); pass model=")
        model = next(iter(models))
    if model not in models:
        raise ConfigError(f"the server has no model {model!r}; it serves {', '.join(sorted(models)) or 'none'}")
    try:
        feats = models[model]["features"]
        sparse = tuple(SparseFeature(**f) for f in feats.get("sparse", ()))
        return model, FeatureSchema(dense=tuple(feats.get("dense", ())), sparse=sparse)
    except (KeyError, TypeError, AttributeError, ConfigError) as exc:
        raise ConfigError(f"model {model!r}: the server lists no usable features ({type(exc).__name__}: {exc}); "
                          "pass schema=") from None


def _payloads(schema: FeatureSchema, sizes: np.ndarray, rng: np.random.Generator, binary: bool) -> list[_Payload]:
    """The request pool, encoded only in the format that will be sent (JSON is ~25x the CPU of npz)."""
    out = []
    cards = np.asarray(schema.cardinalities, dtype=np.int64)
    for n in sizes.tolist():
        dense = rng.random((n, schema.num_dense), dtype=np.float32)
        ids = (rng.random((n, schema.num_sparse)) * cards).astype(np.int64).reshape(-1)  # (n*F,) one id per bag
        offsets = np.arange(n * schema.num_sparse + 1, dtype=np.int64)
        if binary:
            body = encode_npz(dense, ids, offsets)
        else:
            body = json.dumps(instances_from_arrays(schema, dense, ids, offsets), separators=(",", ":")).encode()
        out.append(_Payload(items=n, body=body))
    return out


class _HttpxClient:
    """httpx: runs over any httpx transport (tests inject ``httpx.ASGITransport``)."""

    name = "httpx"

    def __init__(self, timeout_s: float, max_connections: int, transport: httpx.AsyncBaseTransport | None):
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self._client = httpx.AsyncClient(transport=transport, timeout=timeout_s, limits=limits)

    def target(self, url: str) -> Any:
        return httpx.URL(url)  # parsed once, not per request

    async def request(self, method: str, target: Any, body: bytes | None, headers: Mapping[str, str]) -> _Answer:
        try:
            resp = await self._client.request(method, target, content=body, headers=headers)
        except httpx.TimeoutException:
            raise _NoAnswer("timeout", "no answer within the client timeout") from None
        except httpx.TransportError as exc:
            raise _NoAnswer("connect_error", f"{type(exc).__name__}: {exc}") from None
        return _Answer(resp.status_code, resp.headers.get("content-type", ""), resp.headers, resp.content)

    async def close(self) -> None:
        await self._client.aclose()


class _AiohttpClient:
    """aiohttp: the client for real URLs (C-accelerated HTTP parsing, far less Python per request)."""

    name = "aiohttp"

    def __init__(self, timeout_s: float, max_connections: int):
        import aiohttp

        self._aiohttp = aiohttp
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s),
                                              connector=aiohttp.TCPConnector(limit=max_connections),
                                              skip_auto_headers=("User-Agent",))

    def target(self, url: str) -> Any:
        from yarl import URL

        return URL(url)

    async def request(self, method: str, target: Any, body: bytes | None, headers: Mapping[str, str]) -> _Answer:
        try:
            async with self._session.request(method, target, data=body, headers=headers) as resp:
                data = await resp.read()
                return _Answer(resp.status, resp.headers.get("Content-Type", ""), resp.headers, data)
        except TimeoutError:  # asyncio's and aiohttp's timeouts both subclass it
            raise _NoAnswer("timeout", "no answer within the client timeout") from None
        except self._aiohttp.ClientError as exc:
            raise _NoAnswer("connect_error", f"{type(exc).__name__}: {exc}") from None

    async def close(self) -> None:
        await self._session.close()


CLIENTS = ("auto", "raw", "aiohttp", "httpx")
_Client = _HttpxClient | _AiohttpClient | RawHttpClient


def _has_aiohttp() -> bool:
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        return False
    return True


def _client_kind(transport: httpx.AsyncBaseTransport | None, url: str = "", client: str = "auto") -> str:
    """Which HTTP client sends the load: ``client`` when named (``"raw"``: :mod:`crossrec.serve.httpclient`);
    ``"auto"``: httpx for an injected transport, else the raw client for ``http://`` URLs, else aiohttp when
    installed, else httpx."""
    if client == "raw" and not raw_usable(url):
        raise ConfigError(f"loadgen.client = 'raw' speaks plain http:// only, not {url!r}, and needs httptools "
                          "(pip install 'crossrec[serve]'); use client='aiohttp'")
    if client == "aiohttp" and not _has_aiohttp():
        raise ConfigError("loadgen.client = 'aiohttp' needs aiohttp: pip install 'crossrec[serve]'")
    if client != "auto":
        return client
    if transport is not None:
        return "httpx"
    if raw_usable(url):
        return "raw"
    return "aiohttp" if _has_aiohttp() else "httpx"


def _open_client(kind: str, timeout_s: float, max_connections: int,
                 transport: httpx.AsyncBaseTransport | None) -> _Client:
    if kind == "raw":
        return RawHttpClient(timeout_s, max_connections)
    if kind == "aiohttp":
        return _AiohttpClient(timeout_s, max_connections)
    return _HttpxClient(timeout_s, max_connections, transport)


BINARY_ACCEPT = f"{RAW_TYPE}, {JSON_TYPE};q=0.5"  # raw float32 answers; JSON from servers without them


class _Run:
    """One load run's client state: the payload pool, the RNG, the prepared targets and the outcomes."""

    def __init__(self, client: _Client, url: str, model: str, payloads: list[_Payload],
                 priorities: dict[int, float], binary: bool, deadline_ms: float | None, seed: int):
        self.client, self.model, self.payloads, self.binary = client, model, payloads, binary
        self.classes = list(priorities)
        self.cumulative = list(itertools.accumulate(priorities.values()))
        self.rng = np.random.default_rng(seed + 1)
        self.outcomes: list[_Outcome] = []
        base = url.rstrip("/") + "/v1/predict"
        if binary:  # everything but the body is the same for every request of a priority class: build it once
            self.targets = {}
            for p in self.classes:
                params: dict[str, Any] = {"model": model, "priority": p}
                if deadline_ms is not None:
                    params["deadline_ms"] = deadline_ms
                self.targets[p] = client.target(f"{base}?{urlencode(params)}")
            self.headers = {"Content-Type": NPZ_TYPE, "Accept": BINARY_ACCEPT}
        else:
            target = client.target(base)
            self.targets = dict.fromkeys(self.classes, target)
            self.heads = {p: json.dumps({"model": model, "priority": p, "deadline_ms": deadline_ms},
                                        separators=(",", ":"))[:-1].encode() + b',"instances":'
                          for p in self.classes}
            self.headers = {"Content-Type": JSON_TYPE, "Accept": JSON_TYPE}

    def pick(self) -> tuple[_Payload, int]:
        # Generator.random() is ~10x cheaper per call than .integers() / .choice(p=...)
        payload = self.payloads[int(self.rng.random() * len(self.payloads))]
        k = bisect.bisect_right(self.cumulative, self.rng.random() * self.cumulative[-1])
        return payload, self.classes[min(k, len(self.classes) - 1)]

    async def send(self, payload: _Payload, priority: int, scheduled: float) -> None:
        loop = asyncio.get_running_loop()
        sent = loop.time()
        out = _Outcome(scheduled=scheduled, sent=sent, done=sent, items=payload.items, priority=priority, status="")
        body = payload.body if self.binary else self.heads[priority] + payload.body + b"}"
        try:
            answer = await self.client.request("POST", self.targets[priority], body, self.headers)
            out.status = str(answer.status)
            if answer.status == 200:
                predictions, meta = decode_predictions(answer.content_type, answer.body, answer.headers)
                out.replica = str(meta.get("replica") or "")
                if predictions.shape != (payload.items,):
                    out.status, out.error = "bad_response", f"{predictions.size} predictions"
            else:
                out.error = _detail(answer.body)
        except _NoAnswer as exc:
            out.status, out.error = exc.kind, str(exc)
        except ValueError as exc:  # an unparsable 200 body
            out.status, out.error = "bad_response", str(exc)
        out.done = loop.time()
        self.outcomes.append(out)


def _detail(body: bytes) -> str:
    try:
        doc = json.loads(body)
        return str(doc.get("detail", "") if isinstance(doc, dict) else doc)[:200]
    except ValueError:
        return body[:200].decode("utf-8", "replace")


async def _open_loop(run: _Run, rate_qps: float, duration_s: float) -> None:
    loop = asyncio.get_running_loop()
    start = scheduled = loop.time()
    tasks: set[asyncio.Task] = set()
    while True:
        scheduled += float(run.rng.exponential(1.0 / rate_qps))
        if scheduled - start > duration_s:
            break
        delay = scheduled - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(run.send(*run.pick(), scheduled=scheduled))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.gather(*tasks)


async def _closed_loop(run: _Run, concurrency: int, duration_s: float) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + duration_s

    async def user() -> None:
        while loop.time() < end:
            await run.send(*run.pick(), scheduled=loop.time())

    await asyncio.gather(*(user() for _ in range(concurrency)))


async def aloadgen(url: str, *, mode: str = "open", rate_qps: float = 50.0, concurrency: int = 8,
                   duration_s: float = 10.0, size_dist: str = "mlperf",
                   priorities: str | Mapping[int, float] | None = None, model: str | None = None,
                   binary: bool = True, seed: int = 0, schema: FeatureSchema | None = None,
                   deadline_ms: float | None = None, jsonl: str | Path | None = None, timeout_s: float = 30.0,
                   pool_size: int = 64, max_connections: int = 256,
                   transport: httpx.AsyncBaseTransport | None = None, client: str = "auto") -> LoadResult:
    """:func:`loadgen` for callers already inside an event loop (same arguments)."""
    _check_args(url, mode, rate_qps, concurrency, duration_s, timeout_s, pool_size)
    check(client in CLIENTS, "loadgen", "client", client, f"one of {', '.join(CLIENTS)}")
    dist, mix = SizeDistribution.parse(size_dist), parse_priorities(priorities)
    http = _open_client(_client_kind(transport, url, client), timeout_s, max_connections, transport)
    try:
        if schema is None or model is None:
            model, fetched = schema_from_models(await _models(http, url), model)
            schema = schema or fetched
        rng = np.random.default_rng(seed)
        run = _Run(http, url, model, _payloads(schema, dist.sample(rng, pool_size), rng, binary), mix, binary,
                   deadline_ms, seed)
        t0 = time.perf_counter()
        if mode == "open":
            await _open_loop(run, rate_qps, duration_s)
        else:
            await _closed_loop(run, concurrency, duration_s)
        wall = time.perf_counter() - t0
    finally:
        await http.close()
    result = _summarize(run.outcomes, wall, url=url, mode=mode, model=model, binary=binary, client=http.name,
                        size_dist=size_dist, offered_qps=rate_qps if mode == "open" else None,
                        concurrency=concurrency if mode == "closed" else None, seed=seed)
    if jsonl is not None:
        _write_jsonl(Path(jsonl), run.outcomes, result)
    return result


async def _models(client: _Client, url: str) -> Any:
    """The server's ``GET /v1/models`` document; ServeError when it cannot be had."""
    try:
        answer = await client.request("GET", client.target(url.rstrip("/") + "/v1/models"), None, {})
        if answer.status != 200:
            raise ValueError(f"HTTP {answer.status}: {_detail(answer.body)}")
        return json.loads(answer.body)
    except (_NoAnswer, ValueError) as exc:
        raise ServeError(f"cannot read the model list from {url}/v1/models ({exc}); is the server up? "
                         "Or pass model= and schema=") from None


def loadgen(url: str, *, event_loop: str = "auto", **kwargs: Any) -> LoadResult:
    """Send load to the server at ``url`` and measure it (see the module docstring for the modes).

    Arguments: ``mode`` (``"open"`` | ``"closed"``), ``rate_qps`` (open), ``concurrency`` (closed),
    ``duration_s``, ``size_dist``, ``priorities`` (``"0:0.1,1:0.9"``), ``model`` and ``schema`` (default:
    read from ``GET /v1/models``), ``binary`` (npz bodies and float32 answers, else JSON), ``seed``,
    ``deadline_ms``, ``jsonl`` (per-request lines), ``timeout_s``, ``pool_size``, ``max_connections``,
    ``transport`` (an httpx transport, e.g. ``httpx.ASGITransport(app)`` to test without sockets) and
    ``client`` (``"auto"``: httpx for a transport, else the raw client for ``http://``, else aiohttp
    when installed, else httpx; or one of ``"raw"``, ``"aiohttp"``, ``"httpx"``). ``event_loop``: the
    client's asyncio loop (:mod:`crossrec.serve.eventloop`; ``"auto"`` = uvloop when installed: less client
    CPU beside the server).

    >>> loadgen("ftp://x")
    Traceback (most recent call last):
    ...
    crossrec.errors.ConfigError: loadgen.url = 'ftp://x' is invalid: an http:// or https:// URL
    """
    return run_loop(aloadgen(url, **kwargs), event_loop)


def _check_args(url: str, mode: str, rate_qps: float, concurrency: int, duration_s: float, timeout_s: float,
                pool_size: int) -> None:
    check(isinstance(url, str) and url.startswith(("http://", "https://")), "loadgen", "url", url,
          "an http:// or https:// URL")
    check(mode in ("open", "closed"), "loadgen", "mode", mode, "'open' (Poisson arrivals) or 'closed' (N users)")
    check(mode != "open" or rate_qps > 0, "loadgen", "rate_qps", rate_qps, "> 0 requests/s")
    check(mode != "closed" or concurrency >= 1, "loadgen", "concurrency", concurrency, ">= 1 user")
    check(duration_s > 0, "loadgen", "duration_s", duration_s, "> 0 s")
    check(timeout_s > 0, "loadgen", "timeout_s", timeout_s, "> 0 s")
    check(pool_size >= 1, "loadgen", "pool_size", pool_size, ">= 1")


def _summarize(outcomes: Sequence[_Outcome], wall_s: float, **meta: Any) -> LoadResult:
    ok = [o for o in outcomes if o.status == "200"]
    lat = np.array([(o.done - o.scheduled) * 1e3 for o in ok])
    pct = {f"p{q}_ms": float(np.percentile(lat, q)) for q in (50, 95, 99)} if lat.size else {}
    if lat.size:
        pct.update(mean_ms=float(lat.mean()), max_ms=float(lat.max()))
    # numbers differ per request ("... (0.4 ms)"): group messages by their words
    errors = Counter(f"{o.status}: {_NUMBER.sub('#', o.error)[:80]}" for o in outcomes if o.status != "200")
    items_ok = sum(o.items for o in ok)
    return LoadResult(duration_s=round(wall_s, 4), requests=len(outcomes), ok=len(ok), items_ok=items_ok,
                      counts=dict(Counter(o.status for o in outcomes)), errors=dict(errors.most_common(20)),
                      throughput_items_s=items_ok / wall_s if wall_s > 0 else 0.0,
                      throughput_rps=len(ok) / wall_s if wall_s > 0 else 0.0, **pct, **meta)


def _write_jsonl(path: Path, outcomes: Sequence[_Outcome], result: LoadResult) -> None:
    t0 = min((o.scheduled for o in outcomes), default=0.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for o in sorted(outcomes, key=lambda o: o.scheduled):
            f.write(json.dumps({"kind": "request", "t_s": round(o.scheduled - t0, 6),
                                "latency_ms": round((o.done - o.scheduled) * 1e3, 3),
                                "send_lag_ms": round((o.sent - o.scheduled) * 1e3, 3), "status": o.status,
                                "items": o.items, "priority": o.priority, "replica": o.replica,
                                "error": o.error}) + "\n")
        f.write(json.dumps({"kind": "summary", **result.to_dict()}) + "\n")
