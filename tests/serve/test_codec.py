"""The wire formats of the HTTP front: JSON and npz bodies -> Batch, with every refusal a clear 4xx."""

from __future__ import annotations

import io
import json
import pickle
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crossrec.data.schema import FeatureSchema, SparseFeature
from crossrec.errors import DataError
from crossrec.serve.codec import (
    JSON_TYPE,
    NPZ_TYPE,
    RAW_TYPE,
    BodyError,
    PredictRequest,
    answer_headers,
    check_header,
    decode_npz,
    decode_predictions,
    encode_npz,
    encode_predictions,
    encode_response,
    instances_from_arrays,
    negotiate,
    parse_json,
    to_batch,
)

SCHEMA = FeatureSchema(dense=("I1", "I2"), sparse=(SparseFeature(name="C1", num_embeddings=10),
                                                  SparseFeature(name="C2", num_embeddings=3, multi_hot=True)))
MB = 2**20


def body(instances, **head) -> bytes:
    return json.dumps({"model": "m", **head, "instances": instances}).encode()


def decode_json(raw: bytes, schema=SCHEMA, max_items=100):
    return to_batch(parse_json(raw).instances, schema, max_items=max_items)


def refused(fn, *args, status=422, **kwargs) -> str:
    with pytest.raises(BodyError) as info:
        fn(*args, **kwargs)
    assert info.value.status == status, str(info.value)
    assert isinstance(info.value, DataError)
    return str(info.value)


GOOD = {"dense": {"I1": 0.5, "I2": -1.0}, "sparse": {"C1": 7, "C2": [0, 2]}}


def test_json_by_name_and_by_position_give_the_same_batch():
    a = decode_json(body([GOOD]))
    b = decode_json(body([{"dense": [0.5, -1.0], "sparse": {"C1": [7], "C2": [0, 2]}}]))
    for x, y in ((a.dense, b.dense), (a.ids, b.ids), (a.offsets, b.offsets)):
        assert x.tolist() == y.tolist()
    assert a.dense.tolist() == [[0.5, -1.0]] and a.ids.tolist() == [7, 0, 2] and a.offsets.tolist() == [0, 1, 3]
    assert a.num_sparse == 2 and a.dense.dtype.is_floating_point


def test_header_fields_and_defaults():
    req = parse_json(body([GOOD]))
    assert (req.model, req.priority, req.deadline_ms) == ("m", 1, None)
    req = parse_json(body([GOOD], priority=0, deadline_ms=12.5))
    assert (req.priority, req.deadline_ms) == (0, 12.5)


def test_empty_bag_is_a_missing_value_not_an_error():
    batch = decode_json(body([{"dense": [0, 0], "sparse": {"C1": [], "C2": []}}]))
    assert batch.ids.numel() == 0 and batch.offsets.tolist() == [0, 0, 0]


@pytest.mark.parametrize("instance,needle", [
    ({"dense": {"I1": 1.0}, "sparse": GOOD["sparse"]}, "missing feature(s) I2"),
    ({"dense": {"I1": 1.0, "I2": 2.0, "I9": 0.0}, "sparse": GOOD["sparse"]}, "unknown feature(s) I9"),
    ({"sparse": GOOD["sparse"]}, "missing feature(s) I1, I2"),
    ({"dense": [1.0], "sparse": GOOD["sparse"]}, "expected 2 values"),
    ({"dense": GOOD["dense"], "sparse": {"C1": 1}}, "missing feature(s) C2"),
    ({"dense": GOOD["dense"], "sparse": {"C1": 1, "C2": [], "C3": 0}}, "unknown feature(s) C3"),
    ({"dense": GOOD["dense"], "sparse": {"C1": 10, "C2": []}}, "instances[1].sparse.C1: id 10 is outside [0, 10)"),
    ({"dense": GOOD["dense"], "sparse": {"C1": 0, "C2": [1, 3]}}, "sparse.C2: id 3 is outside [0, 3)"),
    ({"dense": GOOD["dense"], "sparse": {"C1": [1, 2], "C2": []}}, "2 ids for a one-hot feature"),
    ({"dense": {"I1": 1e39, "I2": 0}, "sparse": GOOD["sparse"]}, "I1 = 1e+39 is not a finite float32"),
])
def test_schema_violations_name_the_field(instance, needle):
    assert needle in refused(decode_json, body([GOOD, instance]))


def test_the_failing_instance_is_named_by_index():
    bad = {"dense": GOOD["dense"], "sparse": {"C1": 99, "C2": []}}
    assert "instances[2]" in refused(decode_json, body([GOOD, GOOD, bad]))


@pytest.mark.parametrize("raw,needle", [
    (body([{"dense": [1.0, "2"], "sparse": GOOD["sparse"]}]), "instances[0].dense.I2: expected a number, got a string"),
    (body([{"dense": GOOD["dense"], "sparse": {"C1": True, "C2": []}}]), "sparse.C1"),
    (body([{"dense": GOOD["dense"], "sparse": {"C1": -1, "C2": []}}]), "sparse.C1: id -1 is outside [0, 10)"),
    (body([{"dense": GOOD["dense"], "sparse": {"C1": 2**70, "C2": []}}]), "beyond any table"),
    (body([{"dense": GOOD["dense"], "sparse": {"C1": 1, "C2": [1, None]}}]), "sparse.C2: expected a row id"),
    (body([{"dense": [2**2000, 1], "sparse": GOOD["sparse"]}]), "too large"),
    (body([{"dense": "1,2", "sparse": GOOD["sparse"]}]), "instances[0].dense: expected an object"),
    (body([{"dense": [1, 2], "sparse": [1, []]}]), "instances[0].sparse: expected an object"),
    (body([[1, 2]]), "instances[0]: expected an object"),
    (body([{**GOOD, "label": 1}]), "instances[0].label: unknown field"),
    (body([{"dense": GOOD["dense"], "sparse": {"C1": 1.5, "C2": []}}]), "sparse.C1"),
    (b'{"model": "m", "instances": [{"dense": [1e999, 1], "sparse": {"C1": 1, "C2": []}}]}', "I1 = inf is not a"),
    (body([]), "no items"),
    (json.dumps({"model": "m", "instances": {}}).encode(), "instances: expected an array"),
    (body([GOOD], priority=3), "priority"),
    (body([GOOD], priority="0"), "priority"),
    (body([GOOD], deadline_ms=-5), "deadline_ms"),
    (json.dumps({"instances": [GOOD]}).encode(), "model: expected the model's name"),
    (body([GOOD], extra=1), "extra: unknown field; the fields are model, priority, deadline_ms, instances"),
    (b"[1, 2]", "body: expected a JSON object"),
])
def test_malformed_json_content_is_a_422_naming_the_place(raw, needle):
    assert needle in refused(decode_json, raw)


@pytest.mark.parametrize("raw", [b"", b"{", b"\xff\xfe", b'{"model": "m",}', b"nope", b"[" * 100_000,
                                 b'{"model": "m", "instances": [{"dense": [NaN, 1]}]}', b'{"deadline_ms": Infinity}'])
def test_unparsable_json_is_a_400(raw):
    assert "not valid JSON" in refused(parse_json, raw, status=400)


def test_item_limits():
    assert "limit of 2" in refused(decode_json, body([GOOD] * 3), max_items=2, status=413)
    decode_json(body([GOOD] * 2), max_items=2)


def arrays(batch: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    dense = rng.normal(size=(batch, 2)).astype(np.float32)
    lengths = np.stack([np.ones(batch, np.int64), rng.integers(0, 4, size=batch)], axis=1)  # C1 one id, C2 0-3
    ids = np.concatenate([rng.integers(0, 10 if j % 2 == 0 else 3, size=n) for j, n in enumerate(lengths.ravel())])
    offsets = np.concatenate([[0], np.cumsum(lengths.ravel())]).astype(np.int64)
    return dense, ids.astype(np.int64), offsets


def decode(raw: bytes, max_items=100, max_decoded_bytes=MB):
    return decode_npz(raw, SCHEMA, max_items=max_items, max_decoded_bytes=max_decoded_bytes)


def test_npz_round_trip_matches_json_of_the_same_batch():
    dense, ids, offsets = arrays(5)
    a = decode(encode_npz(dense, ids, offsets))
    b = decode_json(body(instances_from_arrays(SCHEMA, dense, ids, offsets)))
    assert a.dense.tolist() == b.dense.tolist() == dense.tolist()
    assert a.ids.tolist() == b.ids.tolist() == ids.tolist()
    assert a.offsets.tolist() == b.offsets.tolist() == offsets.tolist()


def npz(**members) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **members)
    return buf.getvalue()


@pytest.mark.parametrize("mutate,needle", [
    (lambda d, i, o: {"dense": d, "ids": i}, "exactly the arrays dense, ids, offsets"),
    (lambda d, i, o: {"dense": d, "ids": i, "offsets": o, "labels": d}, "exactly the arrays"),
    (lambda d, i, o: {"dense": d[:, :1], "ids": i, "offsets": o}, "expected 2 columns"),
    (lambda d, i, o: {"dense": d.ravel(), "ids": i, "offsets": o}, "dense: expected a (B, 2) float array"),
    (lambda d, i, o: {"dense": d, "ids": i.astype(np.float32), "offsets": o}, "ids: expected a 1-D integer array"),
    (lambda d, i, o: {"dense": d, "ids": i, "offsets": o[:-1]}, "offsets: expected 9 non-decreasing entries"),
    (lambda d, i, o: {"dense": d, "ids": i, "offsets": o[::-1].copy()}, "offsets: expected"),
    (lambda d, i, o: {"dense": d, "ids": i, "offsets": o + 1}, "offsets: expected"),
    (lambda d, i, o: {"dense": d, "ids": i + 10, "offsets": o}, "is outside [0, 10)"),
    (lambda d, i, o: {"dense": d, "ids": -i - 1, "offsets": o}, "is outside"),
    (lambda d, i, o: {"dense": d, "ids": np.full_like(i, 2**63 + 5, dtype=np.uint64), "offsets": o},
     "beyond any table"),
    (lambda d, i, o: {"dense": d * np.inf, "ids": i, "offsets": o}, "not a finite float32"),
    (lambda d, i, o: {"dense": d.astype(np.complex64), "ids": i, "offsets": o}, "dtype complex64 is not allowed"),
])
def test_npz_violations_are_422s(mutate, needle):
    dense, ids, offsets = arrays(4)
    assert needle in refused(decode, npz(**mutate(dense, ids, offsets)))


def test_npz_multi_hot_rule_and_empty_bags():
    dense = arrays(2)[0]
    lengths = [2, 0, 0, 0]  # C1 (one-hot) with 2 ids
    assert "one-hot" in refused(decode, encode_npz(dense, np.array([1, 2]), np.concatenate([[0], np.cumsum(lengths)])))
    empty = decode(encode_npz(dense, np.array([], np.int64), np.zeros(5, np.int64)))
    assert empty.ids.numel() == 0


class Boom:
    triggered = False

    def __reduce__(self):
        return (Boom._trigger, ())

    @staticmethod
    def _trigger():
        Boom.triggered = True
        return 0


def test_npz_never_unpickles():
    buf = io.BytesIO()
    np.savez(buf, dense=np.array([Boom()], dtype=object), ids=np.zeros(1, np.int64), offsets=np.zeros(3, np.int64))
    assert "not allowed" in refused(decode, buf.getvalue())
    assert not Boom.triggered
    # a raw pickle is not an npz at all
    refused(decode, pickle.dumps({"dense": Boom()}), status=400)
    assert not Boom.triggered


def test_forged_npy_header_cannot_make_the_server_allocate():
    """A header declaring 10^12 elements over 8 bytes of data is refused before any allocation."""
    header = np.lib.format.header_data_from_array_1_0(np.zeros(1, np.int64))
    header["shape"] = (10**12,)
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(out, header)
    forged = out.getvalue() + np.zeros(1, np.int64).tobytes()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("dense.npy", _npy(np.zeros((1, 2), np.float32)))
        z.writestr("ids.npy", forged)
        z.writestr("offsets.npy", _npy(np.arange(3)))
    assert "declares shape (1000000000000,)" in refused(decode, buf.getvalue(), status=400)


def _npy(a: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.lib.format.write_array(out, a)
    return out.getvalue()


def test_a_deflate_bomb_is_refused_by_its_declared_size():
    buf = io.BytesIO()
    np.savez_compressed(buf, dense=np.zeros((200_000, 2), np.float32), ids=np.zeros(0, np.int64),
                        offsets=np.zeros(400_001, np.int64))
    assert len(buf.getvalue()) < 64 * 1024  # small on the wire ...
    assert "expands to" in refused(decode, buf.getvalue(), max_decoded_bytes=MB, status=413)  # ... big inside


@pytest.mark.parametrize("raw", [b"", b"PK\x03\x04garbage", b"\x00" * 100, npz(dense=np.zeros((1, 2)))[:40]])
def test_unreadable_npz_is_a_400(raw):
    refused(decode, raw, status=400)


def test_npz_item_limit():
    dense, ids, offsets = arrays(5)
    assert "limit of 4" in refused(decode, encode_npz(dense, ids, offsets), max_items=4, status=413)


def test_check_header():
    assert check_header("m", 0, 5.0) == ("m", 0, 5.0)
    assert "?model=NAME" in refused(check_header, None, None, None)
    assert "priority" in refused(check_header, "m", 7, None)
    for bad in (0.0, -1.0, float("nan"), float("inf"), 1e12):
        assert "deadline_ms" in refused(check_header, "m", 1, bad)


def test_encode_response():
    doc = json.loads(encode_response("m", "v", "m/cpu#0", np.array([0.1, 0.9], np.float32), 1.23456, 2.0))
    assert doc["predictions"] == pytest.approx([0.1, 0.9]) and doc["queue_ms"] == 1.235
    assert "non-finite" in refused(encode_response, "m", "v", "r", np.array([np.nan], np.float32), 0, 0)


@st.composite
def schemas_and_batches(draw):
    num_dense = draw(st.integers(0, 3))
    cards = draw(st.lists(st.integers(1, 50), min_size=1 if num_dense == 0 else 0, max_size=4))
    multi = draw(st.lists(st.booleans(), min_size=len(cards), max_size=len(cards)))
    schema = FeatureSchema(dense=tuple(f"d{i}" for i in range(num_dense)),
                           sparse=tuple(SparseFeature(name=f"s{j}", num_embeddings=c, multi_hot=m)
                                        for j, (c, m) in enumerate(zip(cards, multi))))
    b = draw(st.integers(1, 6))
    floats = st.floats(allow_nan=False, allow_infinity=False, width=32)
    dense = np.array(draw(st.lists(floats, min_size=b * num_dense, max_size=b * num_dense)), np.float32)
    bags = []
    for _ in range(b):
        for c, m in zip(cards, multi):
            bags.append(draw(st.lists(st.integers(0, c - 1), max_size=3 if m else 1)))
    ids = np.array([i for bag in bags for i in bag], np.int64)
    offsets = np.concatenate([[0], np.cumsum([len(x) for x in bags])]).astype(np.int64)
    return schema, dense.reshape(b, num_dense), ids, offsets


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(schemas_and_batches())
def test_both_formats_round_trip_any_valid_batch(case):
    schema, dense, ids, offsets = case
    raw = body(instances_from_arrays(schema, dense, ids, offsets))
    PredictRequest.model_validate_json(raw)  # the published (OpenAPI) model accepts what the parser accepts
    from_json = to_batch(parse_json(raw).instances, schema, max_items=10)
    from_npz = decode_npz(encode_npz(dense, ids, offsets), schema, max_items=10, max_decoded_bytes=MB)
    for batch in (from_json, from_npz):
        assert batch.dense.numpy().tobytes() == dense.tobytes()
        assert batch.ids.tolist() == ids.tolist() and batch.offsets.tolist() == offsets.tolist()
        batch.validate(schema.cardinalities, schema.num_dense)  # the model-side check agrees


# ---- cheaper npz decoding: same answers, same refusals --------------------------------------------


def one_hot_arrays(batch: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    dense = rng.normal(size=(batch, 2)).astype(np.float32)
    ids = np.stack([rng.integers(0, 10, size=batch), rng.integers(0, 3, size=batch)], axis=1).reshape(-1)
    return dense, ids.astype(np.int64), np.arange(2 * batch + 1, dtype=np.int64)


def test_stored_npz_members_are_read_without_zipfiles_member_reader(monkeypatch):
    """np.savez bodies (stored members) are sliced from the body, CRC-checked; a deflated body takes
    zipfile's reader and decodes to the same batch."""
    dense, ids, offsets = arrays(6)
    buf = io.BytesIO()
    np.savez_compressed(buf, dense=dense, ids=ids, offsets=offsets)
    deflated = decode(buf.getvalue())

    def no_read(*args, **kwargs):
        raise AssertionError("zipfile.ZipFile.read was called for a stored member")

    monkeypatch.setattr(zipfile.ZipFile, "read", no_read)
    stored = decode(encode_npz(dense, ids, offsets))
    for a, b in ((stored.dense, deflated.dense), (stored.ids, deflated.ids), (stored.offsets, deflated.offsets)):
        assert a.tolist() == b.tolist()
    assert stored.dense.numpy().flags.writeable and stored.ids.numpy().flags.writeable  # copies, not body views


def test_a_corrupted_stored_member_is_still_a_400():
    raw = bytearray(encode_npz(*arrays(4)))
    raw[raw.index(b"offsets.npy") - 200] ^= 0xFF  # a byte of a member's data (before the last local header)
    assert "cannot be read" in refused(decode, bytes(raw), status=400)  # zipfile's Bad CRC-32


def _npz_of(**members) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(f"{name}.npy", data)
    return buf.getvalue()


def test_npy_headers_in_other_forms_decode_the_same():
    """Fortran order, big-endian and version-2 headers go to numpy's own header parser: same batch."""
    dense, ids, offsets = arrays(5)
    expected = decode(encode_npz(dense, ids, offsets))
    v2 = io.BytesIO()
    np.lib.format.write_array(v2, ids, version=(2, 0))
    for body in (npz(dense=np.asfortranarray(dense), ids=ids, offsets=offsets),
                 npz(dense=dense.astype(">f4"), ids=ids, offsets=offsets),
                 _npz_of(dense=_npy(dense), ids=v2.getvalue(), offsets=_npy(offsets))):
        got = decode(body)
        assert got.dense.tolist() == expected.dense.tolist() and got.ids.tolist() == expected.ids.tolist()


def test_one_id_per_bag_batches_name_the_bad_id():
    dense, ids, offsets = one_hot_arrays(3)
    assert decode(encode_npz(dense, ids, offsets)).ids.tolist() == ids.tolist()
    ids[1 * 2 + 1] = 7  # sample 1, C2 (3 rows)
    assert "dense/ids[1].sparse.C2: id 7 is outside [0, 3)" in refused(decode, encode_npz(dense, ids, offsets))
    ids[1 * 2 + 1], ids[0] = 0, -4
    assert "dense/ids[0].sparse.C1: id -4 is outside [0, 10)" in refused(decode, encode_npz(dense, ids, offsets))


# ---- answer formats ------------------------------------------------------------------------------


@pytest.mark.parametrize("accept,media", [
    (None, JSON_TYPE), ("", JSON_TYPE), ("*/*", JSON_TYPE), (RAW_TYPE, RAW_TYPE), (NPZ_TYPE, NPZ_TYPE),
    (f"{RAW_TYPE}, {JSON_TYPE};q=0.5", RAW_TYPE), (f"{JSON_TYPE}, {RAW_TYPE}", JSON_TYPE),
    (f"{JSON_TYPE};q=0.1, {NPZ_TYPE};q=0.9", NPZ_TYPE), (f"{RAW_TYPE};q=0", JSON_TYPE),
    (f"{RAW_TYPE};q=nan", JSON_TYPE), (f"{RAW_TYPE};q=x", JSON_TYPE), ("text/html, */*;q=0.8", JSON_TYPE),
    ("APPLICATION/OCTET-STREAM", RAW_TYPE), (",,;;,=", JSON_TYPE), ("text/plain," * 100 + RAW_TYPE, JSON_TYPE),
])
def test_negotiate(accept, media):
    assert negotiate(accept) == media


def test_answer_formats_round_trip():
    probs = np.array([0.125, 0.5, 0.875], np.float32)
    headers = answer_headers("m", "v1", "m/cpu#0", 1.5, 2.25)
    assert headers == {"x-crossrec-model": "m", "x-crossrec-version": "v1", "x-crossrec-replica": "m/cpu#0",
                       "x-crossrec-queue-ms": "1.500", "x-crossrec-compute-ms": "2.250"}
    raw = encode_predictions(RAW_TYPE, probs)
    assert raw == probs.astype("<f4").tobytes()
    for media, body in ((RAW_TYPE, raw), (NPZ_TYPE, encode_predictions(NPZ_TYPE, probs)),
                        (JSON_TYPE + "; charset=utf-8", encode_response("m", "v1", "m/cpu#0", probs, 1.5, 2.25))):
        preds, meta = decode_predictions(media, body, {k.upper(): v for k, v in headers.items()})
        assert preds.dtype == np.float32 and preds.tolist() == probs.tolist()
        assert meta == {"model": "m", "version": "v1", "replica": "m/cpu#0", "queue_ms": 1.5, "compute_ms": 2.25}
    named = answer_headers("modèle\n", "v", "r", 0, 0)["x-crossrec-model"]
    assert named == "mod%C3%A8le%0A" and named.isascii()
    assert decode_predictions(RAW_TYPE, b"", {"x-crossrec-model": named})[1]["model"] == "modèle\n"


def test_answer_encoding_refusals():
    assert "non-finite" in refused(encode_predictions, RAW_TYPE, np.array([0.5, np.nan], np.float32))
    with pytest.raises(ValueError, match="not a binary answer"):
        encode_predictions(JSON_TYPE, np.zeros(1, np.float32))
    for media, body, needle in ((RAW_TYPE, b"abc", "multiple of 4"), (NPZ_TYPE, b"PK junk", "cannot be read"),
                                (JSON_TYPE, b'{"detail": "x"}', "no 'predictions'"), ("text/html", b"", "expected")):
        with pytest.raises(ValueError, match=needle):
            decode_predictions(media, body)
