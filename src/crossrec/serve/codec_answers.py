"""Answer formats of ``POST /v1/predict``: content negotiation over the ``Accept`` header, the JSON
answer (:class:`PredictResponse`), the binary ones (raw float32 or ``.npz``) with their
``X-Crossrec-*`` headers, and the client-side decoder for all three. The formats are described in
:mod:`crossrec.serve.codec`, which re-exports every name here.

>>> media = negotiate("application/x-npz")
>>> preds, meta = decode_predictions(media, encode_predictions(media, np.array([0.5], np.float32)),
...                                  answer_headers("m", "v1", "m/cpu#0", 1.0, 2.0))
>>> media, preds.tolist(), meta["version"]
('application/x-npz', [0.5], 'v1')
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, unquote

import numpy as np
from pydantic import BaseModel

from crossrec.serve.codec_requests import JSON_TYPE, NPZ_TYPE, RAW_TYPE, BodyError

RESPONSE_TYPES = (JSON_TYPE, NPZ_TYPE, RAW_TYPE)  # what an answer may be encoded as (see negotiate)


class PredictResponse(BaseModel):
    """The JSON answer of ``POST /v1/predict``: one click probability per instance, in order."""

    model: str
    version: str
    replica: str
    predictions: list[float]
    queue_ms: float
    compute_ms: float


def encode_response(model: str, version: str, replica: str, probabilities: np.ndarray, queue_ms: float,
                    compute_ms: float) -> bytes:
    """The JSON answer (see :class:`PredictResponse`); refuses non-finite predictions with a 422
    rather than emitting invalid JSON.

    >>> encode_response("m", "v1", "m/cpu#0", np.array([0.25], np.float32), 1.0, 2.0)
    b'{"model":"m","version":"v1","replica":"m/cpu#0","predictions":[0.25],"queue_ms":1.0,"compute_ms":2.0}'
    """
    probabilities = np.asarray(probabilities)
    if not np.isfinite(probabilities).all():
        raise BodyError("the model produced non-finite predictions for this input: dense values are far "
                        "outside the range the model was trained on")
    doc = {"model": model, "version": version, "replica": replica, "predictions": probabilities.tolist(),
           "queue_ms": round(float(queue_ms), 3), "compute_ms": round(float(compute_ms), 3)}
    return json.dumps(doc, separators=(",", ":")).encode()


def negotiate(accept: str | None) -> str:
    """The media type to answer in for an ``Accept`` header: the highest-``q`` type of
    :data:`RESPONSE_TYPES` (the first listed on a tie), else JSON (see the module docstring).

    >>> negotiate("application/octet-stream, application/json;q=0.5")
    'application/octet-stream'
    >>> negotiate(None), negotiate("*/*"), negotiate("text/html"), negotiate("application/x-npz;q=0")
    ('application/json', 'application/json', 'application/json', 'application/json')
    """
    if not accept or accept == "*/*":
        return JSON_TYPE
    best, best_q = JSON_TYPE, 0.0
    for part in accept.split(",", 32)[:32]:  # a hostile header costs at most 32 short parses
        media, _, params = part.partition(";")
        media = media.strip().lower()
        if media not in RESPONSE_TYPES:
            continue
        q = 1.0
        for param in params.split(";") if params else ():
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if q > best_q:  # NaN never wins
            best, best_q = media, q
    return best


def encode_predictions(media: str, probabilities: np.ndarray) -> bytes:
    """A binary answer body (``RAW_TYPE`` or ``NPZ_TYPE``); the same 422 as :func:`encode_response` for
    non-finite predictions.

    >>> encode_predictions(RAW_TYPE, np.array([0.5, 0.25], np.float32))
    b'\\x00\\x00\\x00?\\x00\\x00\\x80>'
    """
    probabilities = np.asarray(probabilities).astype("<f4", copy=False).reshape(-1)
    if not np.isfinite(probabilities).all():
        raise BodyError("the model produced non-finite predictions for this input: dense values are far "
                        "outside the range the model was trained on")
    if media == RAW_TYPE:
        return probabilities.tobytes()
    if media == NPZ_TYPE:
        buf = io.BytesIO()
        np.savez(buf, predictions=probabilities)
        return buf.getvalue()
    raise ValueError(f"media type {media!r} is not a binary answer; one of {RAW_TYPE}, {NPZ_TYPE}")


_META_HEADERS = ("model", "version", "replica", "queue_ms", "compute_ms")


def answer_headers(model: str, version: str, replica: str, queue_ms: float, compute_ms: float) -> dict[str, str]:
    """The ``X-Crossrec-*`` headers of a binary answer (the fields of :class:`PredictResponse` but the
    predictions); names that are not printable ASCII are percent-encoded (headers are latin-1).

    >>> answer_headers("m", "v1", "m/cpu#0", 1.23456, 2.0)["x-crossrec-queue-ms"]
    '1.235'
    """
    values = (model, version, replica, f"{float(queue_ms):.3f}", f"{float(compute_ms):.3f}")
    return {f"x-crossrec-{name.replace('_', '-')}": v if v.isascii() and v.isprintable() else quote(v, safe="")
            for name, v in zip(_META_HEADERS, values)}


def decode_predictions(content_type: str, body: bytes, headers: Mapping[str, str] | None = None
                       ) -> tuple[np.ndarray, dict[str, Any]]:
    """Client side: ``(predictions float32 (B,), the other fields)`` of a 200 answer in any response
    format; ValueError for a body that is not one.

    >>> body = encode_predictions(RAW_TYPE, np.array([0.5], np.float32))
    >>> preds, meta = decode_predictions(RAW_TYPE, body, answer_headers("m", "v1", "m/cpu#0", 1.0, 2.0))
    >>> preds.tolist(), meta["replica"], meta["compute_ms"]
    ([0.5], 'm/cpu#0', 2.0)
    """
    media = content_type.split(";")[0].strip().lower()
    if media == JSON_TYPE:
        doc = json.loads(body)
        if type(doc) is not dict or type(doc.get("predictions")) is not list:
            raise ValueError("the JSON answer holds no 'predictions' array")
        return np.asarray(doc["predictions"], dtype=np.float32), {k: doc.get(k) for k in _META_HEADERS}
    if media == RAW_TYPE:
        if len(body) % 4:
            raise ValueError(f"a float32 answer of {len(body)} bytes (not a multiple of 4)")
        preds = np.frombuffer(body, dtype="<f4")
    elif media == NPZ_TYPE:
        try:
            with np.load(io.BytesIO(body), allow_pickle=False) as archive:
                preds = np.asarray(archive["predictions"], dtype=np.float32).reshape(-1)
        except Exception as exc:  # a broken answer is the server's fault, reported, never a crash
            raise ValueError(f"the .npz answer cannot be read ({type(exc).__name__}: {exc})") from None
    else:
        raise ValueError(f"an answer of type {content_type[:60]!r}; expected one of {', '.join(RESPONSE_TYPES)}")
    lower = {k.lower(): v for k, v in (headers or {}).items()}
    meta: dict[str, Any] = {k: unquote(lower.get(f"x-crossrec-{k.replace('_', '-')}", "")) for k in _META_HEADERS}
    for k in ("queue_ms", "compute_ms"):
        try:
            meta[k] = float(meta[k])
        except ValueError:
            meta[k] = None
    return preds, meta
