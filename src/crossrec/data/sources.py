"""One door to every data set: name -> (train, val, test) splits, with defaults that just work.

Where the files come from, unless ``path`` says otherwise:
``$CROSSREC_DATA``, then the nearest ``shared/data`` folder above the working directory
(``../shared/data``: the real samples beside the project), then the
fetched copy under ``~/.cache/crossrec/datasets`` (``crossrec datasets fetch movielens-100k``).
Preprocessed caches go to ``$CROSSREC_CACHE`` or ``~/.cache/crossrec``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from crossrec.data.dataset import CTRData, load_cache
from crossrec.data.schema import FeatureSchema
from crossrec.errors import DataError, DatasetNotFoundError

DATASETS = {
    "synthetic": "Criteo-shaped synthetic data with a planted teacher (always available)",
    "movielens-100k": "MovieLens 100K as CTR (rating >= 4); splits 'random' and 'u1'",
    "criteo": "Criteo display ads TSV (Kaggle train.txt / Terabyte day_N); default: the 10k-row sample",
    "avazu": "Avazu CTR CSV; default: the 10k-row sample",
}
_DEFAULT_FILES = {"movielens-100k": "ml-100k", "criteo": "criteo-sample/train.txt", "avazu": "avazu-sample/train.csv"}
SPLIT = (0.8, 0.1, 0.1)


@dataclass
class Splits:
    """Train/validation/test data plus arrays an artifact must carry to re-apply the preprocessing."""

    train: CTRData
    val: CTRData
    test: CTRData
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    def __iter__(self):
        return iter((self.train, self.val, self.test))


def cache_root(cache_dir: str | Path | None = None) -> Path:
    return Path(cache_dir or os.environ.get("CROSSREC_CACHE") or Path.home() / ".cache" / "crossrec")


def default_path(name: str) -> Path:
    """Where ``name``'s files are looked for when no path is given."""
    rel = _DEFAULT_FILES[name]
    roots = [Path(os.environ["CROSSREC_DATA"])] if os.environ.get("CROSSREC_DATA") else []
    # ../shared/data beside the project: found from the project root or any folder below it.
    roots += [p / "shared" / "data" for p in (Path.cwd(), *Path.cwd().parents) if (p / "shared" / "data").is_dir()][:1]
    roots += [cache_root() / "datasets"]
    for root in roots:
        if (root / rel).exists():
            return root / rel
    how = ("run `crossrec datasets fetch movielens-100k`" if name == "movielens-100k"
           else f"pass --path to your {name} file")
    raise DatasetNotFoundError(f"{name}: no {rel} under {', '.join(map(str, roots))}; {how}")


def load_splits(name: str, *, path: str | Path | None = None, split: str = "random", seed: int = 0,
                rows: int | None = None, cache_dir: str | Path | None = None,
                on_bad_row: str = "error") -> Splits:
    """Load data set ``name`` as :class:`Splits` (seeded 80/10/10 unless ``split='u1'`` for MovieLens).

    >>> tr, va, te = load_splits("synthetic", rows=1000)
    >>> len(tr), len(va), len(te)
    (800, 100, 100)
    """
    if name not in DATASETS:
        raise DataError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")
    if split != "random" and name != "movielens-100k":
        raise DataError(f"split {split!r} is only defined for movielens-100k; use split='random' for {name}")
    if name == "synthetic":
        from crossrec.data.synthetic import SyntheticConfig, generate

        data = generate(SyntheticConfig(rows=rows or 200_000, max_rows=100, seed=seed))
        return Splits(*data.split(SPLIT, seed=seed))
    source = Path(path) if path else default_path(name)
    if name == "movielens-100k":
        from crossrec.data.movielens import load_movielens

        s = load_movielens(source, split=split, seed=seed, on_bad_row=on_bad_row)  # type: ignore[arg-type]
        return Splits(s.train, s.val, s.test)
    if not source.is_file():
        raise DatasetNotFoundError(f"{source} is not a file; pass --path to a {name} file")
    from crossrec.data.categorical import Vocabulary

    prepare, config = _prepare_function(name)
    key = hashlib.sha256(str(source.resolve()).encode()).hexdigest()[:12]
    cache = cache_root(cache_dir) / "prepared" / f"{name}-{source.name}-{key}"
    data = prepare(source, cache, config, on_bad_row=on_bad_row)
    extra = {}
    if config.encoding.mode == "vocab":
        extra = Vocabulary.load(cache).to_arrays()
    return Splits(*data.split(SPLIT, seed=seed), extra=extra)


def _prepare_function(name: str) -> tuple[Callable, object]:
    if name == "criteo":
        from crossrec.data.criteo import CriteoConfig, prepare_criteo

        return prepare_criteo, CriteoConfig()
    from crossrec.data.avazu import AvazuConfig, prepare_avazu

    return prepare_avazu, AvazuConfig()


def read_for_artifact(source: str | Path, schema: FeatureSchema, extra: dict[str, np.ndarray], *,
                      on_bad_row: str = "error") -> CTRData:
    """Read raw rows (or a crossrec cache) with exactly the preprocessing recorded in ``schema``."""
    source = Path(source)
    if source.is_dir() and (source / "manifest.json").is_file():
        data = load_cache(source)
    else:
        data = _read_raw(source, schema, extra, on_bad_row)
    if data.schema.cardinalities != schema.cardinalities or data.schema.num_dense != schema.num_dense:
        raise DataError(f"{source}: its features ({data.schema.num_dense} dense, tables "
                        f"{list(data.schema.cardinalities)}) do not match the model's ({schema.num_dense} dense, "
                        f"tables {list(schema.cardinalities)})")
    return data


def _read_raw(source: Path, schema: FeatureSchema, extra: dict[str, np.ndarray], on_bad_row: str) -> CTRData:
    reader = schema.preprocessing.get("reader")
    if not source.exists():
        raise DatasetNotFoundError(f"{source} does not exist")
    if reader == "movielens-100k" or reader == "movielens":
        from crossrec.data.movielens import MovieLens100K

        return MovieLens100K(source.parent, on_bad_row=on_bad_row).read(source.name)  # type: ignore[arg-type]
    if reader in ("criteo", "avazu"):
        from crossrec.data.categorical import Vocabulary
        from crossrec.data.raw import read_with_schema

        vocab = Vocabulary.from_arrays(extra) if extra else None
        has_label = None
        if reader == "criteo":  # Kaggle train.txt rows have 40 fields, test.txt rows 39 (no label)
            with open(source, "rb") as f:
                has_label = f.readline().count(b"\t") + 1 != 39
        return read_with_schema(source, schema, vocab=vocab, has_label=has_label,
                                on_bad_row=on_bad_row)  # type: ignore[arg-type]
    raise DataError(f"the model was trained on {reader!r} data, which has no raw file format; "
                    "pass a crossrec data cache directory instead")


def fetch(name: str, dest: Path, progress: Callable[[str], None] | None = None,
          source: str | Path | None = None) -> Path:
    """Obtain data set ``name`` under ``dest`` (sha256-verified); returns its folder."""
    if name != "movielens-100k":
        raise DataError(f"only movielens-100k can be fetched; {name} must be downloaded by you (licence terms)")
    from crossrec.data.fetch import fetch_movielens_100k

    return fetch_movielens_100k(dest, source=source, progress=progress)
