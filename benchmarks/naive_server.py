"""The naive serving baseline of issue #5: FastAPI, one request at a time, FP32 eager, no batching.

    python benchmarks/naive_server.py ARTIFACT --port 8100 [--threads 2]

What a team writes first: load the model, wrap ``predict`` in an endpoint, guard it with a lock. It
speaks the same ``POST /v1/predict`` API as ``crossrec serve`` (JSON or ``application/x-npz`` via
crossrec's codec, so the wire format is not what differs) and ``GET /v1/models`` for the load generator.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import torch
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from crossrec.artifact import load_artifact
from crossrec.runtime import load
from crossrec.serve.codec import NPZ_TYPE, BodyError, decode_npz, encode_response, parse_json, to_batch


def make_app(artifact: str, model_name: str) -> FastAPI:
    art = load_artifact(artifact)
    runtime = load(art.model, "eager")
    schema = art.schema
    lock = asyncio.Lock()
    app = FastAPI(title="naive baseline")

    @app.get("/v1/models")
    async def models():
        return {"models": {model_name: {"features": {"dense": list(schema.dense),
                                                     "sparse": [s.to_dict() for s in schema.sparse]}}}}

    @app.post("/v1/predict")
    async def predict(request: Request):
        body = await request.body()
        try:
            if request.headers.get("content-type", "").startswith(NPZ_TYPE):
                batch = decode_npz(body, schema, max_items=100_000, max_decoded_bytes=1 << 30)
            else:
                batch = to_batch(parse_json(body).instances, schema, max_items=100_000)
        except BodyError as exc:
            return JSONResponse({"detail": str(exc)}, status_code=exc.status)
        async with lock:  # one request at a time, computed on the event loop: no batching, no overlap
            probs = runtime.predict(batch).numpy()
        return Response(encode_response(model_name, "naive", "naive", probs, 0.0, 0.0), media_type="application/json")

    return app


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("artifact")
    p.add_argument("--port", type=int, default=8100)
    p.add_argument("--model", default="dlrm")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    uvicorn.run(make_app(args.artifact, args.model), host="127.0.0.1", port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
