"""Ray Serve engine: the same :class:`~crossrec.serve.plan.ServePlan` deployed as Ray Serve deployments.

``crossrec serve PLAN --engine ray`` (or :func:`deploy`) maps the plan onto Ray Serve:

- each deployment of the plan becomes one Ray Serve deployment whose replicas load the artifact
  (no unpickling: :func:`crossrec.artifact.load_artifact`) with the plan's runtime and options,
  ``torch.set_num_threads(threads)`` and ``ray_actor_options={"num_cpus": threads}``;
  ``num_replicas`` is the plan's replica count (all ``full``-stage replicas of that deployment
  must share one artifact/runtime/threads: Ray scales one replica template);
- batching uses Ray's own ``@serve.batch``, which counts *requests*, not items: ``max_batch_size =
  max(1, max_batch_items // ITEMS_PER_REQUEST)`` and ``batch_wait_timeout_s = max_wait_ms / 1000``;
- one ingress deployment (FastAPI, :mod:`crossrec.serve.codec`) serves the same HTTP API as the local
  engine for ``POST /v1/predict`` (JSON and ``application/x-npz``), ``GET /v1/models`` and
  ``GET /healthz``. Priorities and deadlines are parsed and validated but Ray has no priority
  queues, so they are not acted on (the local engine's batcher does this); Ray's own metrics
  replace ``/metrics``; no hot swap endpoint (redeploy with ``serve.run``).

Ray is an optional extra (``pip install 'crossrec[ray]'``); it is imported only here, inside functions.
"""

# No `from __future__ import annotations`: Ray pickles the ingress class by value, and FastAPI must
# see real classes (not strings it would resolve in globals the pickle did not carry).
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import Request

from crossrec.errors import BackendError, ConfigError
from crossrec.serve.plan import DeploymentSpec, ReplicaSpec, ServePlan
from crossrec.serve.replica import artifact_version

ITEMS_PER_REQUEST = 256  # mean candidate-list size assumed when converting an item budget to requests


def _ray():
    try:
        import ray
        from ray import serve
    except ImportError as exc:
        raise BackendError("the Ray engine needs Ray Serve: pip install 'crossrec[ray]' "
                           "(or serve with the local engine: crossrec serve without --engine)") from exc
    return ray, serve


def _template(dep: DeploymentSpec) -> tuple[ReplicaSpec, int]:
    full = [r for r in dep.replicas if r.stage == "full"]
    if len(full) != len(dep.replicas):
        raise ConfigError(f"deployment {dep.name!r}: the Ray engine runs whole models only (stage 'full'); "
                          "partitioned deployments need the local engine")
    first = full[0]
    for r in full[1:]:
        if (r.artifact, r.runtime, r.threads, r.options, r.batching, r.hugepages) != \
                (first.artifact, first.runtime, first.threads, first.options, first.batching, first.hugepages):
            raise ConfigError(f"deployment {dep.name!r}: Ray Serve scales one replica template, but its replicas "
                              "differ in artifact/runtime/threads/options/batching/hugepages; split them into "
                              "deployments")
    return first, sum(r.count for r in full)


class _ModelReplica:
    """Body of a model deployment: one loaded runtime behind ``@serve.batch`` (wrapped in :func:`deploy`)."""

    def __init__(self, artifact: str, runtime: str, options: dict, threads: int, hugepages: bool | str = False):
        import torch

        from crossrec.artifact import load_artifact
        from crossrec.runtime import load
        from crossrec.serve.worker import runtime_options

        torch.set_num_threads(threads)
        art = load_artifact(artifact)
        self.runtime = load(art.model, runtime, **runtime_options(art.model, runtime, "cpu", options, hugepages))
        self.version = artifact_version(artifact)

    def infer_many(self, requests: list[tuple[np.ndarray, np.ndarray, np.ndarray, int]]) -> list[np.ndarray]:
        """Merge whole requests into one batch, run it, split the probabilities back (the local
        engine's :func:`~crossrec.serve.batcher.merge_batches` / :func:`~crossrec.serve.batcher.split_rows`)."""
        import torch

        from crossrec.data.batch import Batch
        from crossrec.serve.batcher import merge_batches, split_rows

        batches = [Batch(dense=torch.from_numpy(d), ids=torch.from_numpy(i), offsets=torch.from_numpy(o), num_sparse=f)
                   for d, i, o, f in requests]
        probs = self.runtime.predict(merge_batches(batches)).numpy()
        return split_rows(probs, [b.batch_size for b in batches])


@dataclass
class RayDeployment:
    """A running Ray Serve application: its URL and how to stop it."""

    url: str
    models: dict[str, dict[str, Any]]

    def stop(self) -> None:
        ray, serve = _ray()
        serve.shutdown()
        ray.shutdown()


def _ingress_app(plan: ServePlan, schemas: dict, info: dict):
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse, Response

    from crossrec.serve.codec import (
        JSON_TYPE,
        NPZ_TYPE,
        BodyError,
        check_header,
        decode_npz,
        encode_response,
        parse_json,
        to_batch,
    )

    app = FastAPI(title="crossrec (Ray Serve engine)")
    limits = plan.admission

    async def decode(request: Request):
        body = await request.body()
        if len(body) > limits.max_body_bytes:
            raise BodyError(f"body of {len(body)} bytes exceeds {limits.max_body_bytes}", status=413)
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media == NPZ_TYPE:
            q = request.query_params
            name, _, _ = check_header(q.get("model"), int(q["priority"]) if "priority" in q else None, None)
            if name not in schemas:
                raise KeyError(name)
            return name, decode_npz(body, schemas[name], max_items=limits.max_items_per_request,
                                    max_decoded_bytes=4 * limits.max_body_bytes)
        if media != JSON_TYPE:
            raise BodyError(f"Content-Type {media!r} is not supported; send {JSON_TYPE} or {NPZ_TYPE}", status=415)
        req = parse_json(body)
        if req.model not in schemas:
            raise KeyError(req.model)
        return req.model, to_batch(req.instances, schemas[req.model], max_items=limits.max_items_per_request)

    return app, decode, (JSONResponse, Response, BodyError, encode_response, JSON_TYPE)


def deploy(plan: ServePlan, *, port: int | None = None, num_cpus: int | None = None) -> RayDeployment:
    """Start a local Ray instance and deploy ``plan`` on Ray Serve; returns its URL (non-blocking).

    ``port`` overrides ``plan.port`` (0 is not supported by Ray's proxy: pass a free port).
    """
    from crossrec.serve.server import schema_of

    ray, serve = _ray()
    templates = {dep.name: _template(dep) for dep in plan.deployments}
    schemas = {name: schema_of(t.artifact) for name, (t, _) in templates.items()}
    cpus = num_cpus or max(os.cpu_count() or 1, sum(t.threads * n for t, n in templates.values()))
    ray.init(num_cpus=cpus, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False,
             configure_logging=False)
    serve.start(http_options={"host": plan.host, "port": port or plan.port})
    handles = {}
    for name, (t, count) in templates.items():
        batched = _batched_class(serve, t)
        dep = serve.deployment(batched, name=name, num_replicas=count,
                               ray_actor_options={"num_cpus": t.threads},
                               max_ongoing_requests=max(8, 4 * _max_batch_requests(t)))
        handles[name] = dep.bind(t.artifact, t.runtime, dict(t.options), t.threads, t.hugepages)
    info = {name: {"replicas": count, "runtime": t.runtime, "engine": "ray"} for name, (t, count) in templates.items()}
    ingress = _ingress_class(serve, plan, schemas, info)
    serve.run(ingress.bind(**{f"h_{i}": h for i, h in enumerate(handles.values())}), name=plan.name,
              route_prefix="/", blocking=False)
    return RayDeployment(url=f"http://{plan.host}:{port or plan.port}", models=info)


def _max_batch_requests(t: ReplicaSpec) -> int:
    return max(1, t.batching.max_batch_items // ITEMS_PER_REQUEST)


def _batched_class(serve, t: ReplicaSpec):
    max_size, wait_s = _max_batch_requests(t), t.batching.max_wait_ms / 1e3

    class RayModelReplica(_ModelReplica):
        @serve.batch(max_batch_size=max_size, batch_wait_timeout_s=wait_s)
        async def __call__(self, requests: list) -> list:
            return [(p, self.version) for p in self.infer_many(requests)]

    return RayModelReplica


def _ingress_class(serve, plan: ServePlan, schemas: dict, info: dict):
    app, decode, (JSONResponse, Response, BodyError, encode_response, JSON_TYPE) = _ingress_app(plan, schemas, info)
    names = list(info)

    # The ingress only parses and forwards: it must not take a (logical) CPU from the model replicas, or
    # a plan whose replicas use every core leaves it unschedulable and the deployment never becomes ready.
    @serve.deployment(name=f"{plan.name}-ingress", max_ongoing_requests=256, ray_actor_options={"num_cpus": 0})
    @serve.ingress(app)
    class Ingress:
        def __init__(self, **handles):
            self.handles = {names[int(k[2:])]: h for k, h in handles.items()}

        @app.post("/v1/predict")
        async def predict(self, request: Request):
            try:
                name, batch = await decode(request)
            except BodyError as exc:
                return JSONResponse({"detail": str(exc)}, status_code=exc.status)
            except KeyError as exc:
                return JSONResponse({"detail": f"unknown model {exc.args[0]!r}; models: {names}"}, status_code=404)
            req = (batch.dense.numpy(), batch.ids.numpy(), batch.offsets.numpy(), batch.num_sparse)
            probs, version = await self.handles[name].remote(req)
            return Response(encode_response(name, version, f"{name}/ray", probs, 0.0, 0.0), media_type=JSON_TYPE)

        @app.get("/v1/models")
        async def models(self):
            return info

        @app.get("/healthz")
        async def healthz(self):
            return {"status": "ok"}

    return Ingress
