"""The HTTP boundary's wire formats: request bodies -> :class:`~crossrec.data.batch.Batch`, results -> JSON.

Two request bodies are accepted by ``POST /v1/predict``:

- **JSON** (``application/json``)::

      {"model": "dlrm", "priority": 1, "deadline_ms": 20.0,
       "instances": [{"dense": {"I1": 0.5, ...} | [0.5, ...],
                      "sparse": {"C1": 17, "C2": [3, 9], "C3": [], ...}}]}

  Every dense and sparse feature of the model's :class:`~crossrec.data.schema.FeatureSchema` must be
  present (a missing one is an error that names it — no silent 0.0); a sparse feature's empty list is
  an explicit missing bag (a zero vector). Ids are table row ids in ``[0, num_embeddings)``; a feature
  that is not ``multi_hot`` carries at most one id.
- **NumPy** (``application/x-npz``, for throughput): an ``.npz`` with ``dense`` (B, num_dense) float,
  ``ids`` (nnz,) int and ``offsets`` (B*F+1,) int arrays in :class:`Batch` layout; ``model``,
  ``priority`` and ``deadline_ms`` travel as query parameters. The archive is read without pickle, and
  each ``.npy`` header is checked against the bytes actually present *before* anything is allocated,
  so a forged shape cannot make the server allocate gigabytes.

Both bodies are checked the same way (shapes, finiteness, id ranges, one-hot features) and every
refusal is a :class:`BodyError` (a :class:`~crossrec.errors.DataError`) carrying the HTTP status to
answer (400 unparsable, 413 too large, 415 wrong media type, 422 invalid) and a message naming the
field. The pydantic models (:class:`PredictRequest`, :class:`Instance`, :class:`PredictResponse`)
publish the formats in the OpenAPI schema; parsing itself is hand-written (see :func:`parse_json`).

The answer (``200``) comes in the format the client's ``Accept`` header asks for (content negotiation;
the highest-``q`` type the server knows, the first one listed on a tie; anything else, or no header,
gets JSON — a missing match is never a 406):

- ``application/json`` (default): :class:`PredictResponse`.
- ``application/octet-stream``: the predictions as raw little-endian float32, 4 bytes per item in
  request order, nothing else in the body.
- ``application/x-npz``: an uncompressed ``.npz`` holding one float32 array ``predictions`` (B,).

Binary answers carry the other fields of :class:`PredictResponse` as headers: ``X-Crossrec-Model``,
``X-Crossrec-Version``, ``X-Crossrec-Replica``, ``X-Crossrec-Queue-Ms``, ``X-Crossrec-Compute-Ms``
(percent-encoded where a name is not printable ASCII). They skip the float -> decimal text round trip on
both ends (~6 KB of JSON for a 300-item answer). Refusals are always JSON ``{"detail": ...}``.
:func:`decode_predictions` reads any of the three (client side).

The code lives in :mod:`crossrec.serve.codec_requests` (request decoding, the shared media types and
limits, :class:`BodyError`) and :mod:`crossrec.serve.codec_answers` (answer formats); this module
re-exports their public names and holds the client-side request encoders (:func:`encode_npz`,
:func:`instances_from_arrays`).

Addition to the serve contract: :class:`BodyError` lives here rather than in ``crossrec.errors``
because HTTP statuses belong to the HTTP boundary; it subclasses DataError, so ``except DataError``
still catches it.

>>> from crossrec.data.schema import FeatureSchema, SparseFeature
>>> schema = FeatureSchema(dense=("I1",), sparse=(SparseFeature(name="C1", num_embeddings=10),))
>>> req = parse_json(b'{"model": "m", "instances": [{"dense": [0.5], "sparse": {"C1": 3}}]}')
>>> batch = to_batch(req.instances, schema, max_items=100)
>>> batch.dense.tolist(), batch.ids.tolist(), batch.offsets.tolist()
([[0.5]], [3], [0, 1])
>>> try:
...     to_batch(parse_json(b'{"model": "m", "instances": [{"dense": [0.5], "sparse": {}}]}').instances, schema,
...              max_items=100)
... except BodyError as e:
...     print(e.status, e)
422 instances[0].sparse: missing feature(s) C1 (send [] for an empty bag)
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from crossrec.data.schema import FeatureSchema
from crossrec.serve.codec_answers import (
    RESPONSE_TYPES,
    PredictResponse,
    answer_headers,
    decode_predictions,
    encode_predictions,
    encode_response,
    negotiate,
)
from crossrec.serve.codec_requests import (
    JSON_TYPE,
    MAX_DEADLINE_MS,
    MAX_ID,
    MAX_PRIORITY,
    NPZ_TYPE,
    RAW_TYPE,
    BodyError,
    Id,
    Instance,
    Number,
    ParsedRequest,
    PredictRequest,
    check_header,
    decode_npz,
    parse_json,
    to_batch,
)

__all__ = ["JSON_TYPE", "MAX_DEADLINE_MS", "MAX_ID", "MAX_PRIORITY", "NPZ_TYPE", "RAW_TYPE", "RESPONSE_TYPES",
           "BodyError", "Id", "Instance", "Number", "ParsedRequest", "PredictRequest", "PredictResponse",
           "answer_headers", "check_header", "decode_npz", "decode_predictions", "encode_npz", "encode_predictions",
           "encode_response", "instances_from_arrays", "negotiate", "parse_json", "to_batch"]


def encode_npz(dense: np.ndarray, ids: np.ndarray, offsets: np.ndarray) -> bytes:
    """Client side: the ``application/x-npz`` body for one batch (uncompressed ``np.savez``)."""
    buf = io.BytesIO()
    np.savez(buf, dense=np.asarray(dense, dtype=np.float32), ids=np.asarray(ids, dtype=np.int64),
             offsets=np.asarray(offsets, dtype=np.int64))
    return buf.getvalue()


def instances_from_arrays(schema: FeatureSchema, dense: np.ndarray, ids: np.ndarray,
                          offsets: np.ndarray) -> list[dict[str, Any]]:
    """Client side: JSON instances for a batch in :class:`Batch` layout — dense values as a list in
    schema order, sparse features by name (a bare id for a one-id bag: the compact form parses ~4x
    faster than named dense values and one-element lists).

    >>> from crossrec.data.schema import FeatureSchema, SparseFeature
    >>> schema = FeatureSchema(dense=("I1",), sparse=(SparseFeature(name="C1", num_embeddings=10),
    ...                                               SparseFeature(name="C2", num_embeddings=5, multi_hot=True)))
    >>> instances_from_arrays(schema, np.array([[0.5]]), np.array([3, 1, 4]), np.array([0, 1, 3]))
    [{'dense': [0.5], 'sparse': {'C1': 3, 'C2': [1, 4]}}]
    """
    f = schema.num_sparse
    ids_l, off_l, dense_l = np.asarray(ids).tolist(), np.asarray(offsets).tolist(), np.asarray(dense).tolist()
    out = []
    for b, row in enumerate(dense_l):
        bags = {}
        for j, feat in enumerate(schema.sparse):
            lo, hi = off_l[b * f + j], off_l[b * f + j + 1]
            bags[feat.name] = ids_l[lo] if hi - lo == 1 and not feat.multi_hot else ids_l[lo:hi]
        out.append({"dense": row, "sparse": bags})
    return out
