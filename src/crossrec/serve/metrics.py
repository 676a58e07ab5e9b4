"""Prometheus metrics of one Router, in its own ``CollectorRegistry`` (two routers never share series).

What ``GET /metrics`` shows (all names prefixed ``crossrec_``):

=================================  =========  ==================  ==================================================
name                               type       labels              meaning
=================================  =========  ==================  ==================================================
requests_total                     counter    model, status       requests answered, by outcome (see STATUSES)
items_total                        counter    model, status       items (candidate rows) in those requests
request_seconds                    histogram  model               admission to answer, for answered requests
queue_seconds                      histogram  model               admission to dispatch of the batch that answered it
queue_items                        gauge      replica             items waiting in the replica's batcher
outstanding_items                  gauge      replica             items routed to the replica and not yet answered
batch_items                        histogram  replica             items per computed batch
compute_seconds                    histogram  replica, device     time of ``replica.infer`` per batch
model_seconds                      histogram  replica, device     the model's own time per batch, in a worker process
ipc_seconds                        histogram  replica, device,    a worker call's legs across the process boundary:
                                              leg                 request (write, wake, read), answer (the same back)
replica_healthy                    gauge      replica, device     1 while the router routes to the replica
retries_total                      counter    model               requests re-queued after a replica failure
rejections_total                   counter    model, reason       requests refused: overloaded / deadline / ...
replica_failures_total             counter    replica             ReplicaErrors and timeouts
replica_restarts_total             counter    replica             successful restarts
admission_budget_seconds           gauge                          predicted finish past which a busy router refuses
admission_target_seconds           gauge                          latency the admission feedback holds its p99 under
admission_latency_seconds          gauge      quantile            admitted requests' latency over the feedback window
=================================  =========  ==================  ==================================================

>>> m = ServeMetrics(replicas=lambda: [ReplicaGauges("dlrm/cpu#0", "epyc-zen5-2vcpu", 12, 40, True)])
>>> m.answered("dlrm", "ok", items=300)
>>> text = m.render().decode()
>>> 'crossrec_items_total{model="dlrm",status="ok"} 300.0' in text
True
>>> 'crossrec_queue_items{replica="dlrm/cpu#0"} 12.0' in text
True
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

# Outcome labels of requests_total / items_total.
STATUSES: tuple[str, ...] = ("ok", "overloaded", "deadline", "bad_request", "unavailable", "error")
# Batch sizes: powers of two up to the largest batch a plan allows by default x 8.
BATCH_BUCKETS: tuple[float, ...] = tuple(float(2**i) for i in range(14))
# Latencies from 0.1 ms to 10 s, dense around typical SLOs (5-50 ms).
SECONDS_BUCKETS: tuple[float, ...] = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015,
                                      0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


class ReplicaGauges(NamedTuple):
    """What the replica gauges show for one replica at scrape time."""

    replica: str
    device: str
    queued_items: int
    outstanding_items: int
    healthy: bool


class _ReplicaCollector(Collector):
    """Reads the router's replicas when scraped, so the gauges cost nothing per request and never go stale."""

    def __init__(self, snapshot: Callable[[], Iterable[ReplicaGauges]]):
        self._snapshot = snapshot

    def collect(self) -> Iterator[GaugeMetricFamily]:
        queue = GaugeMetricFamily("crossrec_queue_items", "Items waiting in a replica's batcher", labels=["replica"])
        out = GaugeMetricFamily("crossrec_outstanding_items", "Items routed to a replica, not yet answered",
                                labels=["replica"])
        healthy = GaugeMetricFamily("crossrec_replica_healthy", "1 while the router routes to the replica",
                                    labels=["replica", "device"])
        for g in self._snapshot():
            queue.add_metric([g.replica], g.queued_items)
            out.add_metric([g.replica], g.outstanding_items)
            healthy.add_metric([g.replica, g.device], 1.0 if g.healthy else 0.0)
        yield from (queue, out, healthy)


class LabelCache:
    """A labelled metric whose children are looked up once per label values: prometheus-client's
    ``labels()`` takes a lock and rebuilds the key on every call, and the router calls it several
    times per request (issue #5: per-request CPU). Anything else is the metric's own attribute.
    Label values must come from a bounded set (model, replica and status names — never user input).

    >>> registry = CollectorRegistry()
    >>> c = LabelCache(Counter("demo", "demo", ["model"], registry=registry))
    >>> c.labels(model="m") is c.labels(model="m")
    True
    >>> c.labels(model="m").inc(); c.labels("m").inc(); registry.get_sample_value("demo_total", {"model": "m"})
    2.0
    """

    def __init__(self, metric: Counter | Histogram):
        self.metric = metric
        self._children: dict[Any, Any] = {}

    def labels(self, *values: str, **named: str) -> Any:
        key = values or tuple(named.items())  # another keyword order is another key to the same child
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.metric.labels(*values, **named)
        return child

    def __getattr__(self, name: str) -> Any:
        return getattr(self.metric, name)


class ServeMetrics:
    """The serving metrics (table in the module docstring) registered in ``registry`` (a fresh
    ``CollectorRegistry`` when None). ``replicas`` returns the replica gauges' values at scrape time.

    >>> m = ServeMetrics()
    >>> m.compute_seconds.labels(replica="dlrm/cpu#0", device="epyc-zen5-2vcpu").observe(0.004)
    >>> b"crossrec_compute_seconds_count" in m.render()
    True
    """

    def __init__(self, registry: CollectorRegistry | None = None, *,
                 replicas: Callable[[], Iterable[ReplicaGauges]] | None = None):
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        if replicas is not None:
            r.register(_ReplicaCollector(replicas))
        # the per-request and per-batch metrics cache their children (LabelCache); the rare ones need not
        self.requests = LabelCache(Counter("crossrec_requests", "Requests answered, by outcome", ["model", "status"],
                                           registry=r))
        self.items = LabelCache(Counter("crossrec_items", "Items (candidate rows) in answered requests, by outcome",
                                        ["model", "status"], registry=r))
        self.request_seconds = LabelCache(Histogram("crossrec_request_seconds", "Admission to answer of successful "
                                                    "requests", ["model"], buckets=SECONDS_BUCKETS, registry=r))
        self.queue_seconds = LabelCache(Histogram("crossrec_queue_seconds", "Admission to dispatch of the answering "
                                                  "batch", ["model"], buckets=SECONDS_BUCKETS, registry=r))
        self.batch_items = LabelCache(Histogram("crossrec_batch_items", "Items per computed batch", ["replica"],
                                                buckets=BATCH_BUCKETS, registry=r))
        self.compute_seconds = LabelCache(Histogram("crossrec_compute_seconds", "replica.infer time per batch",
                                                    ["replica", "device"], buckets=SECONDS_BUCKETS, registry=r))
        # compute_seconds minus this is what the process boundary costs (pipe, wake-ups): BENCHMARKS.md §9
        self.model_seconds = LabelCache(Histogram("crossrec_model_seconds", "The model's own time per batch inside "
                                                  "a worker process (no pipe, no wake-ups)", ["replica", "device"],
                                                  buckets=SECONDS_BUCKETS, registry=r))
        self.ipc_seconds = LabelCache(Histogram("crossrec_ipc_seconds", "A worker call's legs across the process "
                                                "boundary: request = the front's write to the worker's read done, "
                                                "answer = the worker's write to the front's read done (wake-ups "
                                                "and event-loop waits included)", ["replica", "device", "leg"],
                                                buckets=SECONDS_BUCKETS, registry=r))
        self.retries = Counter("crossrec_retries", "Requests re-queued after a replica failure", ["model"],
                               registry=r)
        self.rejections = LabelCache(Counter("crossrec_rejections", "Requests refused without computing them",
                                             ["model", "reason"], registry=r))  # per request under overload
        self.replica_failures = Counter("crossrec_replica_failures", "Replica errors and timeouts", ["replica"],
                                        registry=r)
        self.replica_restarts = Counter("crossrec_replica_restarts", "Successful replica restarts", ["replica"],
                                        registry=r)

    def answered(self, model: str, status: str, items: int) -> None:
        """Count one finished request (any outcome)."""
        self.requests.labels(model=model, status=status).inc()
        self.items.labels(model=model, status=status).inc(items)

    def render(self) -> bytes:
        """The registry in the Prometheus text exposition format."""
        return generate_latest(self.registry)
