"""Heterogeneous serving (issue #5): a plan of replicas on devices, a router that batches and routes, an
HTTP front, and a load generator.

==================  ===========================================================================
``plan``            :class:`ServePlan` and its parts (YAML/JSON records)
``policy``          :class:`RoutingPolicy` plugins: round-robin, least-outstanding, latency-, cost-, power-aware
``batcher``         :class:`Batcher`: priority classes, whole-request batching, SLO-sized batches, deadlines
``router``          :class:`Router`: admission, routing, dispatch, retries, restarts, hot swap, metrics
``replica``         :class:`Replica`: :class:`InProcessReplica`, :class:`ProcessReplica`, :func:`build_replicas`
``partition``       :class:`PartitionedReplica`: embedding and dense stages on different workers/devices
``codec`` / ``app``  the HTTP boundary: request bodies -> Batch, and :func:`create_app` (FastAPI)
``server``          :func:`serve` (``crossrec serve``), :func:`running` / :class:`ServerHandle` for tests
``loadgen``         :func:`loadgen` (``crossrec loadgen``): open/closed loop, MLPerf-like query sizes
==================  ===========================================================================

Importing ``crossrec.serve`` is cheap: every name below is imported from its submodule on first use,
so plan tooling does not pull in torch, FastAPI or uvicorn until it needs them.

>>> import crossrec.serve as serve
>>> serve.ServePlan.__name__, serve.get_policy("round-robin").name
('ServePlan', 'round-robin')
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    **dict.fromkeys(("AdmissionConfig", "BatchingConfig", "DeploymentSpec", "ReplicaSpec", "RoutingConfig",
                     "ServePlan"), "plan"),
    **dict.fromkeys(("POLICIES", "ReplicaState", "RequestInfo", "RoutingPolicy", "get_policy", "register_policy"),
                    "policy"),
    "Batcher": "batcher",
    **dict.fromkeys(("PredictResult", "Router"), "router"),
    "LatencyFeedback": "admission_feedback",
    "ServeMetrics": "metrics",
    **dict.fromkeys(("InProcessReplica", "ProcessReplica", "Replica", "build_replicas"), "replica"),
    **dict.fromkeys(("PartitionedReplica", "TransferStats"), "partition"),
    "create_app": "app",
    **dict.fromkeys(("ServerHandle", "build_router", "running", "serve"), "server"),
    **dict.fromkeys(("LoadResult", "aloadgen", "loadgen"), "loadgen"),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'crossrec.serve' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"crossrec.serve.{module}"), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
