"""Re-apply a recorded transform to new raw files: ``FeatureSchema.preprocessing`` -> reader call.

A trained model's artifact carries its :class:`~crossrec.data.schema.FeatureSchema` (JSON) and,
for ``mode="vocab"``, the vocabulary arrays (``vocab/<feature>``, safetensors). With both,
:func:`read_with_schema` encodes new raw rows exactly as the training data was encoded, and
refuses a vocabulary other than the one the schema was built with.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import BinaryIO

from crossrec.data.avazu import AvazuConfig, read_avazu
from crossrec.data.categorical import Vocabulary
from crossrec.data.criteo import CriteoConfig, read_criteo
from crossrec.data.dataset import CTRData
from crossrec.data.schema import FeatureSchema
from crossrec.data.textreader import OnBadRow
from crossrec.errors import DataError

READERS = {"criteo": (CriteoConfig, read_criteo), "avazu": (AvazuConfig, read_avazu)}


def read_with_schema(source: str | Path | BinaryIO, schema: FeatureSchema, *, vocab: Vocabulary | None = None,
                     has_label: bool | None = None, on_bad_row: OnBadRow = "error") -> CTRData:
    """Read ``source`` with the reader and options recorded in ``schema.preprocessing``.

    ``has_label`` overrides the recorded Criteo option (raw rows at prediction time usually have
    no label); Avazu tells from its header. The result's schema equals ``schema`` up to the label
    flag, so a model built for ``schema`` accepts it.

    >>> import io
    >>> from crossrec.data.categorical import CategoricalEncoding
    >>> train = CriteoConfig(encoding=CategoricalEncoding(mode="hash", num_embeddings=64))
    >>> schema = FeatureSchema.from_json(read_criteo(io.BytesIO(b""), train).schema.to_json())
    >>> row = "\\t".join(["3"] * 13 + ["0000000a"] * 26) + "\\n"
    >>> d = read_with_schema(io.BytesIO(row.encode()), schema, has_label=False)
    >>> d.ids[:2].tolist(), d.schema.cardinalities == schema.cardinalities
    ([11, 11], True)
    """
    pre = schema.preprocessing
    if pre.get("reader") not in READERS:
        raise DataError(f"schema.preprocessing names reader {pre.get('reader')!r}; read_with_schema knows "
                        f"{', '.join(READERS)} (was this schema made by a crossrec text reader?)")
    config_cls, read = READERS[pre["reader"]]
    config = config_cls.from_dict(pre["config"])
    if has_label is not None and isinstance(config, CriteoConfig):
        config = dataclasses.replace(config, has_label=has_label)
    want = pre.get("vocab_sha256")
    if want is not None and (vocab is None or vocab.digest() != want):
        got = "none" if vocab is None else f"one with sha256 {vocab.digest()[:12]}..."
        raise DataError(f"this schema was built with the vocabulary sha256 {want[:12]}..., got {got}; pass the "
                        "vocabulary saved with the training data (Vocabulary.load(cache_dir) or the artifact's)")
    data = read(source, config, vocab=vocab, on_bad_row=on_bad_row)  # type: ignore[arg-type]
    if data.schema.cardinalities != schema.cardinalities or data.schema.dense != schema.dense:
        raise DataError(f"re-reading gave table sizes {data.schema.cardinalities}, the schema has "
                        f"{schema.cardinalities}; the schema and vocabulary do not belong together")
    return data
