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
import json
import math
import re
import struct
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import quote, unquote

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from crossrec.data.batch import Batch
from crossrec.data.schema import FeatureSchema
from crossrec.errors import DataError

JSON_TYPE, NPZ_TYPE, RAW_TYPE = "application/json", "application/x-npz", "application/octet-stream"
RESPONSE_TYPES = (JSON_TYPE, NPZ_TYPE, RAW_TYPE)  # what an answer may be encoded as (see negotiate)
MAX_ID = 2**62  # ids beyond int64 range would overflow numpy before the cardinality check
MAX_PRIORITY = 2
MAX_DEADLINE_MS = 3_600_000.0  # an hour: beyond that a "deadline" is a mistake, not a budget
_NPZ_KEYS = ("dense", "ids", "offsets")

Id = Annotated[int, Field(strict=True, ge=0, le=MAX_ID)]
Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]


class BodyError(DataError):
    """A request body the HTTP front refuses; ``status`` is the HTTP code to answer.

    >>> BodyError("too many items", status=413).status
    413
    """

    def __init__(self, message: str, *, status: int = 422):
        super().__init__(message)
        self.status = status


class Instance(BaseModel):
    """One item to score: every dense feature (by name, or a list in schema order) and every sparse
    feature's ids (one id, or a list: empty = missing bag, several = multi-hot)."""

    model_config = ConfigDict(extra="forbid")
    dense: dict[str, Number] | list[Number] | None = None
    sparse: dict[str, Id | list[Id]] | None = None


class PredictRequest(BaseModel):
    """The JSON body of ``POST /v1/predict``."""

    model_config = ConfigDict(extra="forbid")
    model: str = Field(min_length=1, max_length=200)
    priority: Annotated[int, Field(strict=True, ge=0, le=MAX_PRIORITY)] = 1
    deadline_ms: Annotated[float, Field(gt=0, le=MAX_DEADLINE_MS, allow_inf_nan=False)] | None = None
    instances: list[Instance] = Field(min_length=1)


class PredictResponse(BaseModel):
    """The JSON answer of ``POST /v1/predict``: one click probability per instance, in order."""

    model: str
    version: str
    replica: str
    predictions: list[float]
    queue_ms: float
    compute_ms: float


@dataclass
class ParsedRequest:
    """A JSON body after :func:`parse_json`: the header fields and the (unchecked) instances."""

    model: str
    priority: int
    deadline_ms: float | None
    instances: list[Any]


_FIELDS = ("model", "priority", "deadline_ms", "instances")
_INSTANCE_FIELDS = frozenset(("dense", "sparse"))


def _json_type(value: Any) -> str:
    names = {type(None): "null", bool: "a boolean", int: "a number", float: "a number", str: "a string",
             list: "an array", dict: "an object"}
    return names.get(type(value), type(value).__name__)


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def parse_json(body: bytes) -> ParsedRequest:
    """Parse a JSON body and check its header fields (:func:`to_batch` checks the instances).

    Parsing is hand-written over :func:`json.loads`, not pydantic: a 700-item request is ~20x faster
    this way. The pydantic models (:class:`PredictRequest`, :class:`Instance`) publish the same format
    in the OpenAPI schema.

    >>> try:
    ...     parse_json(b'{"model": "m", "instances": [{}], "colour": 1}')
    ... except BodyError as e:
    ...     print(e.status, e)
    422 colour: unknown field; the fields are model, priority, deadline_ms, instances
    """
    try:
        doc = json.loads(body, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, NaN, too deep
        msg = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise BodyError(f"the body is not valid JSON ({msg}); send a JSON object or {NPZ_TYPE} with the "
                        "matching Content-Type", status=400) from None
    if type(doc) is not dict:
        raise BodyError(f'body: expected a JSON object {{"model": ..., "instances": [...]}}, got {_json_type(doc)}')
    for key in doc:
        if key not in _FIELDS:
            raise BodyError(f"{str(key)[:40]}: unknown field; the fields are {', '.join(_FIELDS)}")
    model = doc.get("model")
    if type(model) is not str or not 1 <= len(model) <= 200:
        raise BodyError(f"model: expected the model's name (a string of 1-200 characters), got {_json_type(model)}")
    priority = doc.get("priority", 1)
    if type(priority) is not int or not 0 <= priority <= MAX_PRIORITY:
        raise BodyError(f"priority: expected an integer in [0, {MAX_PRIORITY}] (0 = most urgent), got "
                        f"{_json_type(priority)} {str(priority)[:20]}")
    deadline = doc.get("deadline_ms")
    if deadline is not None and (type(deadline) not in (int, float) or not 0 < deadline <= MAX_DEADLINE_MS):
        raise BodyError(f"deadline_ms: expected null or a number of ms in (0, {MAX_DEADLINE_MS:.0f}], got "
                        f"{_json_type(deadline)} {str(deadline)[:20]}")
    instances = doc.get("instances")
    if type(instances) is not list:
        raise BodyError(f"instances: expected an array of instances, got {_json_type(instances)}")
    return ParsedRequest(model, priority, None if deadline is None else float(deadline), instances)


def to_batch(instances: Sequence[Any], schema: FeatureSchema, *, max_items: int) -> Batch:
    """Check parsed JSON instances against ``schema`` and pack them into one :class:`Batch`."""
    _check_items(len(instances), max_items)
    rows: list[list[Any]] = []
    ids: list[int] = []
    lengths: list[int] = []
    names = frozenset(f.name for f in schema.sparse)
    for i, inst in enumerate(instances):
        if type(inst) is not dict:
            raise BodyError(f'instances[{i}]: expected an object {{"dense": ..., "sparse": ...}}, got '
                            f"{_json_type(inst)}")
        if not inst.keys() <= _INSTANCE_FIELDS:
            extra = sorted(str(k)[:40] for k in inst.keys() - _INSTANCE_FIELDS)
            raise BodyError(f"instances[{i}].{extra[0]}: unknown field; an instance has dense and sparse")
        rows.append(_dense_row(inst.get("dense"), schema, i))
        sparse = inst.get("sparse")
        sparse = {} if sparse is None else sparse
        if type(sparse) is not dict:
            raise BodyError(f"instances[{i}].sparse: expected an object {{feature: id or [ids]}}, got "
                            f"{_json_type(sparse)}")
        if sparse.keys() != names:
            _missing_or_unknown(f"instances[{i}].sparse", names, sparse, "send [] for an empty bag")
        for feature in schema.sparse:
            value = sparse[feature.name]
            if type(value) is int:  # `type(...) is int` refuses booleans
                ids.append(value)
                lengths.append(1)
            elif type(value) is list and all(type(x) is int for x in value):
                ids.extend(value)
                lengths.append(len(value))
            else:
                bad = value if type(value) is not list else next(x for x in value if type(x) is not int)
                raise BodyError(f"instances[{i}].sparse.{feature.name}: expected a row id or a list of row ids "
                                f"(integers), got {_json_type(bad)} {str(bad)[:20]}")
    try:
        dense = np.array(rows, dtype=np.float64).reshape(len(instances), schema.num_dense)
    except OverflowError:
        raise BodyError("instances: a dense value is too large for a float (|x| < 3.4e38)") from None
    try:
        id_array = np.array(ids, dtype=np.int64)
    except OverflowError:
        raise BodyError("instances: a sparse id is beyond any table (ids are row numbers)") from None
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return _finish(dense, id_array, offsets, schema, where="instances")


def _dense_row(dense: Any, schema: FeatureSchema, i: int) -> list[Any]:
    if dense is None:
        dense = {}
    if type(dense) is list:
        if len(dense) != schema.num_dense:
            raise BodyError(f"instances[{i}].dense: expected {schema.num_dense} values in the order "
                            f"{', '.join(schema.dense)}; got {len(dense)}")
        row = dense
    elif type(dense) is dict:
        if dense.keys() != set(schema.dense):
            _missing_or_unknown(f"instances[{i}].dense", set(schema.dense), dense, "every dense feature is required")
        row = [dense[name] for name in schema.dense]
    else:
        raise BodyError(f"instances[{i}].dense: expected an object {{feature: number}} or an array of numbers, "
                        f"got {_json_type(dense)}")
    for j, v in enumerate(row):
        if type(v) is not float and type(v) is not int:
            raise BodyError(f"instances[{i}].dense.{schema.dense[j]}: expected a number, got {_json_type(v)} "
                            f"{str(v)[:20]}")
    return row


def _missing_or_unknown(where: str, expected: set[str], got: Mapping[str, Any], hint: str) -> None:
    missing, unknown = sorted(expected - set(got)), sorted(set(got) - expected)
    if missing:
        raise BodyError(f"{where}: missing feature(s) {', '.join(missing)} ({hint})")
    raise BodyError(f"{where}: unknown feature(s) {', '.join(unknown)}; the model's features are "
                    f"{', '.join(sorted(expected)) or '(none)'}")


def _check_items(items: int, max_items: int) -> None:
    if items < 1:
        raise BodyError("the request holds no items; send at least one instance")
    if items > max_items:
        raise BodyError(f"the request holds {items} items, more than the limit of {max_items} per request; "
                        "split it into smaller requests", status=413)


def _finish(dense: np.ndarray, ids: np.ndarray, offsets: np.ndarray, schema: FeatureSchema, where: str) -> Batch:
    """The checks both body formats share, then the Batch (zero-copy into torch)."""
    with np.errstate(over="ignore", invalid="ignore"):  # overflow to inf is reported below, by feature
        dense32 = dense.astype(np.float32)
        bad = ~np.isfinite(dense32)
    if bad.any():
        i, j = (int(x) for x in np.argwhere(bad)[0])
        raise BodyError(f"{where}[{i}].dense.{schema.dense[j]} = {float(dense[i, j])!r} is not a finite float32 "
                        f"(|x| < 3.4e38); send finite dense values")
    num_sparse, batch = schema.num_sparse, dense.shape[0]
    lengths = np.diff(offsets).reshape(batch, num_sparse) if num_sparse else np.zeros((batch, 0), np.int64)
    one_hot = np.array([not f.multi_hot for f in schema.sparse], dtype=bool)
    multi = (lengths > 1) & one_hot
    if multi.any():
        i, f = (int(x) for x in np.argwhere(multi)[0])
        raise BodyError(f"{where}[{i}].sparse.{schema.sparse[f].name}: {int(lengths[i, f])} ids for a one-hot "
                        "feature; send one id (or [] for missing)")
    cards = np.asarray(schema.cardinalities, dtype=np.int64)
    if ids.size == batch * num_sparse and ids.size and (lengths == 1).all():  # one id per bag (the common case)
        wrong = (ids.reshape(batch, num_sparse) >= cards) | (ids.reshape(batch, num_sparse) < 0)
        if wrong.any():
            i, f = (int(x) for x in np.argwhere(wrong)[0])
            raise BodyError(f"{where}[{i}].sparse.{schema.sparse[f].name}: id {int(ids[i * num_sparse + f])} is "
                            f"outside [0, {int(cards[f])}) (the feature's table rows)")
    elif ids.size:
        feature = np.repeat(np.tile(np.arange(num_sparse), batch), lengths.reshape(-1))
        limit = cards[feature]
        wrong = (ids < 0) | (ids >= limit)
        if wrong.any():
            k = int(np.argmax(wrong))
            bag = int(np.searchsorted(offsets, k, side="right")) - 1
            name = schema.sparse[bag % num_sparse].name
            raise BodyError(f"{where}[{bag // num_sparse}].sparse.{name}: id {int(ids[k])} is outside [0, "
                            f"{int(limit[k])}) (the feature's table rows)")
    return Batch(dense=torch.from_numpy(dense32), ids=torch.from_numpy(ids), offsets=torch.from_numpy(offsets),
                 num_sparse=num_sparse)


def decode_npz(body: bytes, schema: FeatureSchema, *, max_items: int, max_decoded_bytes: int) -> Batch:
    """Decode an ``application/x-npz`` body (see the module docstring) into a checked Batch.

    >>> from crossrec.data.schema import FeatureSchema, SparseFeature
    >>> schema = FeatureSchema(dense=("I1",), sparse=(SparseFeature(name="C1", num_embeddings=10),))
    >>> body = encode_npz(np.ones((2, 1), np.float32), np.array([4, 5]), np.array([0, 1, 2]))
    >>> decode_npz(body, schema, max_items=10, max_decoded_bytes=2**20).ids.tolist()
    [4, 5]
    """
    arrays = _read_npz(body, max_decoded_bytes)
    dense, ids, offsets = (arrays[k] for k in _NPZ_KEYS)
    if dense.ndim != 2 or dense.dtype.kind not in "fiu":
        raise BodyError(f"dense: expected a (B, {schema.num_dense}) float array, got {dense.dtype} {dense.shape}")
    for name, arr in (("ids", ids), ("offsets", offsets)):
        if arr.ndim != 1 or arr.dtype.kind not in "iu":
            raise BodyError(f"{name}: expected a 1-D integer array, got {arr.dtype} {arr.shape}")
    batch = dense.shape[0]
    _check_items(batch, max_items)
    if dense.shape[1] != schema.num_dense:
        raise BodyError(f"dense: expected {schema.num_dense} columns ({', '.join(schema.dense)}), "
                        f"got {dense.shape[1]}")
    if ids.dtype.kind == "u" and ids.size and int(ids.max()) > MAX_ID:
        raise BodyError(f"ids: {int(ids.max())} is beyond any table")
    ids, offsets = ids.astype(np.int64), offsets.astype(np.int64)  # uint64 > 2**63 wraps negative: caught below
    want = batch * schema.num_sparse + 1
    if offsets.shape != (want,) or offsets[0] != 0 or offsets[-1] != ids.size or (np.diff(offsets) < 0).any():
        raise BodyError(f"offsets: expected {want} non-decreasing entries from 0 to len(ids)={ids.size} "
                        "(bags in sample-major order: bag b*F+f is feature f of sample b)")
    return _finish(dense, ids, offsets, schema, where="dense/ids")


def _read_npz(body: bytes, max_decoded_bytes: int) -> dict[str, np.ndarray]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(body))
        infos = archive.infolist()
    except Exception as exc:  # any failure to parse untrusted bytes is the client's error, never a 500
        raise BodyError(f"the body is not an .npz archive ({exc}); write it with numpy.savez", status=400) from None
    members = {m.filename: m for m in infos}
    if len(infos) != len(_NPZ_KEYS) or set(members) != {f"{k}.npy" for k in _NPZ_KEYS}:
        raise BodyError(f"the .npz must hold exactly the arrays {', '.join(_NPZ_KEYS)}; it holds "
                        f"{', '.join(sorted(m.removesuffix('.npy') for m in members)) or 'nothing'}")
    total = sum(m.file_size for m in infos)
    if total > max_decoded_bytes:  # a small deflated body may expand to gigabytes: refuse before reading
        raise BodyError(f"the .npz expands to {total} bytes, more than the limit of {max_decoded_bytes}", status=413)
    view = memoryview(body)
    out = {}
    for key in _NPZ_KEYS:
        info = members[f"{key}.npy"]
        data = _stored_member(view, info)
        if data is None:  # deflated, encrypted, flagged or inconsistent: zipfile's own reader decides
            try:
                data = memoryview(archive.read(info))
            except (zipfile.BadZipFile, zlib.error, ValueError, OSError, EOFError, NotImplementedError,
                    RuntimeError) as exc:  # corrupt, truncated, encrypted or unsupported-compression members
                raise BodyError(f"{key}: the .npz member cannot be read ({exc})", status=400) from None
        out[key] = _read_npy(data, key)
    return out


_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")  # zipfile's sizeFileHeader layout (30 bytes)


def _stored_member(view: memoryview, info: zipfile.ZipInfo) -> memoryview | None:
    """An uncompressed member (what ``np.savez`` writes) as a view into the body, CRC-checked, without
    zipfile's per-member file object and copy; None when zipfile's reader must decide."""
    if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x61 or info.compress_size != info.file_size:
        return None  # 0x01 encrypted, 0x20 patched data, 0x40 strong encryption
    start = info.header_offset
    if start < 0 or start + _LOCAL_HEADER.size > len(view):
        return None
    fields = _LOCAL_HEADER.unpack(view[start:start + _LOCAL_HEADER.size])
    name_len, extra_len = fields[10], fields[11]
    begin = start + _LOCAL_HEADER.size
    if fields[0] != zipfile.stringFileHeader or bytes(view[begin:begin + name_len]) != info.orig_filename.encode():
        return None  # zipfile raises its own clear error for these
    begin += name_len + extra_len
    data = view[begin:begin + info.file_size]
    if len(data) != info.file_size or zlib.crc32(data) != info.CRC:
        return None
    return data


# The header np.save writes for a C-contiguous simple dtype; anything else goes to numpy's own parser.
_NPY_HEADER = re.compile(r"\{'descr': '([<>|=](?:b1|u[1248]|i[1248]|f[248]))', 'fortran_order': (False|True), "
                         r"'shape': \(((?:\d+, ?)*\d*)\), \} *\n")


def _read_npy(data: memoryview, key: str) -> np.ndarray:
    """Parse one .npy without np.load: the header's shape must match the bytes present (no pickle,
    no allocation sized by an untrusted header)."""
    shape, fortran, dtype, start = _npy_header(data, key)
    if dtype.hasobject or dtype.kind not in "biuf" or dtype.itemsize > 8:
        raise BodyError(f"{key}: dtype {dtype} is not allowed; send float32 / int64 arrays")
    if any(d < 0 for d in shape):
        raise BodyError(f"{key}: negative dimension in shape {shape}", status=400)
    count = math.prod(shape)
    payload = data[start:]
    if count * dtype.itemsize != len(payload):
        raise BodyError(f"{key}: the header declares shape {shape} ({count * dtype.itemsize} bytes) but "
                        f"{len(payload)} bytes follow", status=400)
    array = np.frombuffer(payload, dtype=dtype, count=count)
    return array.reshape(shape, order="F" if fortran else "C")


def _npy_header(data: memoryview, key: str) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """(shape, fortran_order, dtype, offset of the array bytes). The common header is matched by a
    regex (numpy's parser runs ``ast.literal_eval``: ~25 us per array); the rest by numpy itself."""
    head = bytes(data[:10])
    if head[:6] == b"\x93NUMPY" and head[6] == 1 and len(head) == 10:
        end = 10 + int.from_bytes(head[8:10], "little")
        match = _NPY_HEADER.fullmatch(bytes(data[10:end]).decode("latin1")) if end <= len(data) else None
        if match is not None:
            descr, fortran, dims = match.groups()
            return tuple(int(d) for d in dims.split(",") if d.strip()), fortran == "True", np.dtype(descr), end
    fp = io.BytesIO(bytes(data[:min(len(data), 1 << 16)]))  # a header is < 64 KiB (numpy's own limit)
    try:
        major, _ = np.lib.format.read_magic(fp)
        read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(fp)
    except (ValueError, TypeError, SyntaxError, OSError, EOFError) as exc:
        raise BodyError(f"{key}: not a valid .npy array ({exc})", status=400) from None
    return shape, fortran, dtype, fp.tell()


def check_header(model: str | None, priority: int | None, deadline_ms: float | None) -> tuple[str, int, float | None]:
    """Validate the header fields of a binary request (they come as query parameters).

    >>> check_header("dlrm", None, None)
    ('dlrm', 1, None)
    """
    if not model:
        raise BodyError(f"a {NPZ_TYPE} body needs the model name as a query parameter: ?model=NAME")
    priority = 1 if priority is None else priority
    if not 0 <= priority <= MAX_PRIORITY:
        raise BodyError(f"priority = {priority} is invalid: an integer in [0, {MAX_PRIORITY}] (0 = most urgent)")
    if deadline_ms is not None and not (math.isfinite(deadline_ms) and 0 < deadline_ms <= MAX_DEADLINE_MS):
        raise BodyError(f"deadline_ms = {deadline_ms} is invalid: a number of ms in (0, {MAX_DEADLINE_MS:.0f}]")
    return model, priority, deadline_ms


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
