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
is encoded up front (the client must not be the bottleneck); each request picks one at random.

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
import json
import re
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from crossrec.config import Config, check
from crossrec.data.schema import FeatureSchema, SparseFeature
from crossrec.errors import ConfigError, ServeError
from crossrec.serve.codec import JSON_TYPE, NPZ_TYPE, encode_npz, instances_from_arrays

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
    its count; ``errors`` each distinct error message (numbers masked as ``#``) to its count.

    >>> LoadResult(url="http://x", mode="open", requests=0).ok
    0
    """

    url: str
    mode: str
    model: str = ""
    binary: bool = True
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
    npz: bytes
    instances_json: bytes  # the JSON array of instances, spliced into each body


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


def _payloads(schema: FeatureSchema, sizes: np.ndarray, rng: np.random.Generator) -> list[_Payload]:
    out = []
    cards = np.asarray(schema.cardinalities, dtype=np.int64)
    for n in sizes.tolist():
        dense = rng.random((n, schema.num_dense), dtype=np.float32)
        ids = (rng.random((n, schema.num_sparse)) * cards).astype(np.int64).reshape(-1)  # (n*F,) one id per bag
        offsets = np.arange(n * schema.num_sparse + 1, dtype=np.int64)
        inst = json.dumps(instances_from_arrays(schema, dense, ids, offsets), separators=(",", ":")).encode()
        out.append(_Payload(items=n, npz=encode_npz(dense, ids, offsets), instances_json=inst))
    return out


class _Run:
    """One load run's client state: the payload pool, the RNG and the outcomes."""

    def __init__(self, client: httpx.AsyncClient, model: str, payloads: list[_Payload], priorities: dict[int, float],
                 binary: bool, deadline_ms: float | None, seed: int):
        self.client, self.model, self.payloads, self.binary = client, model, payloads, binary
        self.deadline_ms = deadline_ms
        self.classes, self.weights = list(priorities), list(priorities.values())
        self.rng = np.random.default_rng(seed + 1)
        self.outcomes: list[_Outcome] = []

    def pick(self) -> tuple[_Payload, int]:
        payload = self.payloads[int(self.rng.integers(len(self.payloads)))]
        return payload, int(self.rng.choice(self.classes, p=self.weights))

    async def send(self, payload: _Payload, priority: int, scheduled: float) -> None:
        loop = asyncio.get_running_loop()
        sent = loop.time()
        out = _Outcome(scheduled=scheduled, sent=sent, done=sent, items=payload.items, priority=priority, status="")
        try:
            if self.binary:
                params: dict[str, Any] = {"model": self.model, "priority": priority}
                if self.deadline_ms is not None:
                    params["deadline_ms"] = self.deadline_ms
                resp = await self.client.post("/v1/predict", content=payload.npz, params=params,
                                              headers={"content-type": NPZ_TYPE})
            else:
                head = {"model": self.model, "priority": priority, "deadline_ms": self.deadline_ms}
                body = json.dumps(head, separators=(",", ":"))[:-1].encode() + b',"instances":' + \
                    payload.instances_json + b"}"
                resp = await self.client.post("/v1/predict", content=body, headers={"content-type": JSON_TYPE})
            out.status = str(resp.status_code)
            if resp.status_code == 200:
                doc = resp.json()
                out.replica = str(doc.get("replica", ""))
                if len(doc.get("predictions", ())) != payload.items:
                    out.status, out.error = "bad_response", f"{len(doc.get('predictions', ()))} predictions"
            else:
                out.error = _detail(resp)
        except httpx.TimeoutException:
            out.status, out.error = "timeout", "no answer within the client timeout"
        except httpx.TransportError as exc:
            out.status, out.error = "connect_error", f"{type(exc).__name__}: {exc}"
        except ValueError as exc:  # an unparsable 200 body
            out.status, out.error = "bad_response", str(exc)
        out.done = loop.time()
        self.outcomes.append(out)


def _detail(resp: httpx.Response) -> str:
    try:
        return str(resp.json().get("detail", ""))[:200]
    except ValueError:
        return resp.text[:200]


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
                   transport: httpx.AsyncBaseTransport | None = None) -> LoadResult:
    """:func:`loadgen` for callers already inside an event loop (same arguments)."""
    _check_args(url, mode, rate_qps, concurrency, duration_s, timeout_s, pool_size)
    dist, mix = SizeDistribution.parse(size_dist), parse_priorities(priorities)
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    async with httpx.AsyncClient(base_url=url, transport=transport, timeout=timeout_s, limits=limits) as client:
        if schema is None or model is None:
            try:
                resp = await client.get("/v1/models")
                resp.raise_for_status()
                doc = resp.json()
            except (httpx.HTTPError, ValueError) as exc:
                raise ServeError(f"cannot read the model list from {url}/v1/models ({exc}); is the server up? "
                                 "Or pass model= and schema=") from None
            model, fetched = schema_from_models(doc, model)
            schema = schema or fetched
        rng = np.random.default_rng(seed)
        run = _Run(client, model, _payloads(schema, dist.sample(rng, pool_size), rng), mix, binary, deadline_ms,
                   seed)
        t0 = time.perf_counter()
        if mode == "open":
            await _open_loop(run, rate_qps, duration_s)
        else:
            await _closed_loop(run, concurrency, duration_s)
        wall = time.perf_counter() - t0
    result = _summarize(run.outcomes, wall, url=url, mode=mode, model=model, binary=binary, size_dist=size_dist,
                        offered_qps=rate_qps if mode == "open" else None,
                        concurrency=concurrency if mode == "closed" else None, seed=seed)
    if jsonl is not None:
        _write_jsonl(Path(jsonl), run.outcomes, result)
    return result


def loadgen(url: str, **kwargs: Any) -> LoadResult:
    """Send load to the server at ``url`` and measure it (see the module docstring for the modes).

    Arguments: ``mode`` (``"open"`` | ``"closed"``), ``rate_qps`` (open), ``concurrency`` (closed),
    ``duration_s``, ``size_dist``, ``priorities`` (``"0:0.1,1:0.9"``), ``model`` and ``schema`` (default:
    read from ``GET /v1/models``), ``binary`` (npz bodies, else JSON), ``seed``, ``deadline_ms``,
    ``jsonl`` (per-request lines), ``timeout_s``, ``pool_size``, ``max_connections`` and ``transport``
    (an httpx transport, e.g. ``httpx.ASGITransport(app)`` to test without sockets).

    >>> loadgen("ftp://x")
    Traceback (most recent call last):
    ...
    crossrec.errors.ConfigError: loadgen.url = 'ftp://x' is invalid: an http:// or https:// URL
    """
    return asyncio.run(aloadgen(url, **kwargs))


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
