"""Request decoding for the HTTP front: JSON and ``.npz`` bodies -> :class:`~crossrec.data.batch.Batch`,
checked (shapes, finiteness, id ranges, one-hot features), every refusal a :class:`BodyError` with its
HTTP status. The formats are described in :mod:`crossrec.serve.codec`, which re-exports every name
here; this module also holds what both sides share (media types, limits, :class:`BodyError`).

>>> from crossrec.data.schema import FeatureSchema, SparseFeature
>>> schema = FeatureSchema(dense=("I1", "I2"), sparse=(SparseFeature(name="C1", num_embeddings=10),))
>>> req = parse_json(b'{"model": "m", "priority": 0, "instances": [{"dense": [1, 2], "sparse": {"C1": [4]}}]}')
>>> req.model, req.priority, to_batch(req.instances, schema, max_items=10).ids.tolist()
('m', 0, [4])
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

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from crossrec.data.batch import Batch
from crossrec.data.schema import FeatureSchema
from crossrec.errors import DataError

JSON_TYPE, NPZ_TYPE, RAW_TYPE = "application/json", "application/x-npz", "application/octet-stream"
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
    >>> from crossrec.serve.codec import encode_npz  # the client side
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
