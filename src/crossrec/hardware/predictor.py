"""`LatencyPredictor`: p50 latency of (spec, compression, device, batch size), learned from measurements.

Issue #4. The model is deliberately physical, so that it extrapolates to architectures it never saw:
one call costs the sum of non-negative per-term costs,

    latency_ms = sum_k  w_k[device] * feature_k(spec, compression, batch size)

over the work terms of :mod:`crossrec.hardware.features` (per-op overheads, matmul FLOPs and
elementwise work per precision, bytes gathered per table precision, weight bytes, the roofline
estimate as a prior). ``w >= 0`` is fitted by non-negative least squares on *relative* residuals
``(prediction - measured) / measured`` — the error the ±10 % target counts — with a small ridge and
a Huber loss (a point disturbed by another job on the machine pulls linearly, not quadratically).
Non-negativity makes every prediction monotone in the work: more FLOPs, bytes or layers never
predict less time. No new dependency: a Lawson-Hanson NNLS in numpy (:func:`nnls`).

Per device, by how much was measured there:

- **fit** (``min_fit_records`` records over ``min_fit_specs`` architectures or more): its own weights;
- **transfer** (fewer, but another device is fitted): that device's weights with one scale per
  block of terms (overhead / compute / memory / prior), fitted on the few points and shrunk towards
  one common scale (with fewer than two points per block, only the common scale is fitted); the
  base device is the one that explains the points best;
- **calibrated roofline** (few records, no fitted device): ``a + b * roofline_ms``;
- **no records**: the analytic :func:`~crossrec.hardware.estimate` — ``source="modeled"``.

A fitted (or transferred) device prices only the dense precisions its records measured: its weights
for another precision's terms are zero, so it would call, say, static int8 MLPs free. Such a choice
gets the roofline of the device's catalog entry instead, labelled ``source="modeled"`` (and a
ConfigError without a catalog entry). A predictor saved before a term existed (e.g. before
``int8-static``, issue #4) loads; it predicts what its terms cover and models the rest the same way.

The first three say ``source="predicted"``. Saved as JSON (no pickle): :meth:`LatencyPredictor.save`.

**Runtimes.** A device's records are fitted per runtime they were timed on (:class:`ProfileRecord`'s
``runtime``: eager PyTorch, or TorchScript's ``script``, which drops most per-op Python dispatch): records
of two runtimes are never mixed in one fit. A model is keyed by :func:`model_key` — the bare device label for
eager (as predictors saved before runtimes were recorded are), ``label@runtime`` otherwise — and ``predict``
takes ``runtime=`` (default ``"eager"``). A runtime without records on a device falls back exactly as an
unknown device does: the roofline, ``source="modeled"``, its method naming what was missing. A device with few
records of a runtime may be transferred from a fitted device of another runtime (its block scales absorb
the difference: mostly the overhead block); ``method`` says from which.

>>> from crossrec.models import ModelSpec, TableSpec
>>> spec = ModelSpec(num_dense=13, tables=tuple(TableSpec(name=f"C{i}", num_embeddings=1000) for i in range(8)),
...                  embedding_dim=16, bottom_mlp=(64, 16), top_mlp=(64,))
>>> p = LatencyPredictor().predict(spec, CompressionChoice(), "epyc-zen5-2vcpu", 64)
>>> p.source, p.method, p.latency_ms > 0
('modeled', 'roofline', True)
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from crossrec.config import Config, check
from crossrec.errors import ConfigError
from crossrec.hardware.collect import ProfileRecord, spec_key
from crossrec.hardware.estimate import estimate
from crossrec.hardware.features import (
    CACHE_BYTES,
    COMPUTE_TERMS,
    DENSE_PRECISIONS,
    MEMORY_TERMS,
    OVERHEAD_TERMS,
    PRIOR_TERMS,
    TERMS,
    CompressionChoice,
    dense_term,
    features,
)
from crossrec.hardware.spec import DeviceSpec, load_catalog

if TYPE_CHECKING:
    from crossrec.models.spec import ModelSpec

FORMAT = "crossrec-latency-predictor"
# What a predictor learns: the median call (the target), or the fastest call, which is steadier
# than the median on a machine shared with other jobs (both come from the same timed calls).
TARGETS: tuple[str, ...] = ("p50_ms", "min_ms")
VERSION = 1
BLOCKS: dict[str, tuple[str, ...]] = {"overhead": OVERHEAD_TERMS, "compute": COMPUTE_TERMS, "memory": MEMORY_TERMS,
                                      "prior": PRIOR_TERMS}


def model_key(device: str, runtime: str = "eager") -> str:
    """The key of a device's model in :attr:`LatencyPredictor.models` (and a saved predictor's ``devices``): the
    device label for eager, so that predictors saved before runtimes were recorded load as they were, else
    ``label@runtime``.

    >>> model_key("epyc-zen5-2vcpu"), model_key("epyc-zen5-2vcpu", "script")
    ('epyc-zen5-2vcpu', 'epyc-zen5-2vcpu@script')
    """
    return device if runtime == "eager" else f"{device}@{runtime}"


def nnls(a: np.ndarray, b: np.ndarray, *, max_iter: int | None = None) -> np.ndarray:
    """``argmin ||a x - b||`` subject to ``x >= 0`` (Lawson & Hanson 1974, the active-set method).

    >>> nnls(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([2.0, -1.0])).tolist()
    [2.0, 0.0]
    """
    m, n = a.shape
    tol = 10 * max(m, n) * np.finfo(float).eps * max(1.0, float(np.abs(a).sum(axis=0).max(initial=0.0)))
    x, passive = np.zeros(n), np.zeros(n, dtype=bool)
    w = a.T @ (b - a @ x)
    for _ in range(max_iter or 3 * n + 10):
        if passive.all() or not (w[~passive] > tol).any():
            break
        passive[int(np.argmax(np.where(passive, -np.inf, w)))] = True
        for _inner in range(3 * n + 10):
            z = np.zeros(n)
            z[passive] = np.linalg.lstsq(a[:, passive], b, rcond=None)[0]
            if (z[passive] > tol).all():
                break
            neg = passive & (z <= tol)
            alpha = float(np.min(x[neg] / np.maximum(x[neg] - z[neg], 1e-300)))
            x = x + alpha * (z - x)
            passive &= x > tol
            x[~passive] = 0.0
        x = z
        w = a.T @ (b - a @ x)
    return np.maximum(x, 0.0)


@dataclass(frozen=True, kw_only=True)
class LatencyPrediction(Config):
    """A predicted (or, without measurements on the device, modeled) latency of one call.

    ``method`` says how: ``"fit"``, ``"transfer from <device>"``, ``"calibrated roofline"`` or ``"roofline"``;
    ``statistic`` which measured statistic a prediction stands for (the predictor's ``target``); ``runtime``
    the runtime it was asked for (a ``modeled`` answer is the roofline, which knows no runtime).
    """

    latency_ms: float
    samples_per_s: float
    source: Literal["predicted", "modeled"]
    device: str
    batch_size: int
    method: str
    statistic: str = "p50_ms"
    runtime: str = "eager"


@dataclass(frozen=True, kw_only=True)
class DeviceModel(Config):
    """The fitted weights of one device on one runtime (ms per unit of each feature term) and what they rest on.
    ``runtime`` is ``"eager"`` in predictors saved before it was recorded (they were all fitted on eager)."""

    device: str
    runtime: str = "eager"
    method: Literal["fit", "transfer", "calibrated roofline"]
    catalog_device: str | None
    weights: dict[str, float]
    prior_device: str | None = None  # catalog entry whose roofline feeds ``roofline_ms`` (see _adapt_device)
    records: int
    specs: int
    threads: tuple[int, ...] = ()
    sources: tuple[str, ...] = ("measured",)
    base: str | None = None
    scales: dict[str, float] = field(default_factory=dict)
    train_mape: float = 0.0
    train_within_10pct: float = 0.0
    # dense precisions its weights can price (those its records measured; every one for a roofline);
    # () in predictors saved before this was recorded: every precision of the saved term list
    dense_precisions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        unknown = sorted(set(self.weights) - set(TERMS))
        check(not unknown, f"DeviceModel({self.device})", "weights", unknown, f"terms among {TERMS}")
        check(all(v >= 0 for v in self.weights.values()), f"DeviceModel({self.device})", "weights",
              {k: v for k, v in self.weights.items() if v < 0}, "non-negative (ms per unit of work)")


def _measured_dense(records: Sequence[ProfileRecord]) -> tuple[str, ...]:
    """The dense precisions measured in ``records``, in :data:`DENSE_PRECISIONS` order."""
    seen = {r.choice.dense_precision for r in records}
    return tuple(p for p in DENSE_PRECISIONS if p in seen)


def _matrix(rows: list[dict[str, float]]) -> np.ndarray:
    return np.array([[r[t] for t in TERMS] for r in rows], dtype=float).reshape(len(rows), len(TERMS))


def _relative_nnls(x: np.ndarray, y: np.ndarray, ridge: float, huber: float | None = None,
                   iterations: int = 4) -> np.ndarray:
    """Non-negative ``w`` minimizing ``sum(rho((x w - y) / y)) + ridge * |w|^2`` on unit-norm columns.

    ``rho`` is the square, or with ``huber`` the Huber loss at that relative error (iteratively
    reweighted): a point measured while something else ran on the machine then pulls the fit
    linearly, not quadratically.
    """
    a = x / y[:, None]
    scale = np.linalg.norm(a, axis=0)
    used = scale > 0
    w = np.zeros(x.shape[1])
    if not used.any():
        return w
    a_s = a[:, used] / scale[used]
    k = int(used.sum())
    sw = np.ones(len(y))  # sqrt of the IRLS weights
    for _ in range(iterations if huber else 1):
        a_aug = np.vstack([a_s * sw[:, None], math.sqrt(ridge) * np.eye(k)])
        b_aug = np.concatenate([sw, np.zeros(k)])
        w[used] = nnls(a_aug, b_aug) / scale[used]
        if huber:
            r = np.abs(x @ w - y) / y
            sw = np.sqrt(np.minimum(1.0, huber / np.maximum(r, 1e-12)))
    return w


def _scores(pred: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    ape = np.abs(pred - y) / y
    return float(ape.mean()), float((ape <= 0.10).mean())


class LatencyPredictor:
    """Learned p50 latency per device (module docstring); ``fit`` on :class:`ProfileRecord` s, then ``predict``.

    ``target`` is the measured statistic it learns (``"p50_ms"``, or ``"min_ms"`` where the machine is
    shared and medians are noisy); ``huber`` the relative error beyond which a point's pull grows linearly
    (None: plain least squares); ``ridge`` the shrinkage of the weights; ``transfer_prior`` how strongly
    transferred block scales are held to one common scale. ``catalog`` (default: the packaged one)
    supplies the roofline prior and the modeled fallback.

    >>> from crossrec.models import ModelSpec, TableSpec
    >>> spec = ModelSpec(num_dense=2, tables=(TableSpec(name="a", num_embeddings=50),), embedding_dim=4,
    ...                  bottom_mlp=(4,), top_mlp=(8,))
    >>> recs = [synthetic_record(spec, CompressionChoice(), b, "toy-cpu", 0.05 + 0.001 * b) for b in (1, 8, 64)]
    >>> pred = LatencyPredictor(min_fit_records=3, min_fit_specs=1).fit(recs)
    >>> p = pred.predict(spec, CompressionChoice(), "toy-cpu", 32)
    >>> p.source, p.method, round(p.latency_ms, 3)
    ('predicted', 'fit', 0.082)
    """

    def __init__(self, *, target: Literal["p50_ms", "min_ms"] = "p50_ms", min_fit_records: int = 30,
                 min_fit_specs: int = 5, ridge: float = 1e-4, huber: float | None = 0.1, transfer_prior: float = 0.05,
                 catalog: dict[str, DeviceSpec] | None = None):
        check(target in TARGETS, "LatencyPredictor", "target", target, f"one of {TARGETS}")
        check(min_fit_records >= 1, "LatencyPredictor", "min_fit_records", min_fit_records, ">= 1")
        check(min_fit_specs >= 1, "LatencyPredictor", "min_fit_specs", min_fit_specs, ">= 1")
        check(ridge >= 0, "LatencyPredictor", "ridge", ridge, ">= 0")
        check(huber is None or huber > 0, "LatencyPredictor", "huber", huber, "> 0 (a relative error) or None")
        check(transfer_prior >= 0, "LatencyPredictor", "transfer_prior", transfer_prior, ">= 0")
        self.target, self.min_fit_records, self.min_fit_specs = target, min_fit_records, min_fit_specs
        self.ridge, self.huber, self.transfer_prior = ridge, huber, transfer_prior
        self._catalog = catalog
        self.models: dict[str, DeviceModel] = {}
        self.terms: tuple[str, ...] = TERMS  # the feature terms its weights may use (older saved files: fewer)

    @property
    def catalog(self) -> dict[str, DeviceSpec]:
        if self._catalog is None:
            self._catalog = load_catalog()
        return self._catalog

    def _device_spec(self, catalog_device: str | None) -> DeviceSpec | None:
        return self.catalog.get(catalog_device) if catalog_device else None

    def _rows(self, records: Sequence[ProfileRecord], catalog_device: str | None) -> list[dict[str, float]]:
        dev = self._device_spec(catalog_device)
        return [features(r.spec, r.choice, r.batch_size, device=dev) for r in records]

    # -- fitting ---------------------------------------------------------------------------------------------

    def fit(self, records: Sequence[ProfileRecord]) -> LatencyPredictor:
        """Fit every device present in ``records`` (replacing earlier fits); returns ``self``.

        Every (device, runtime) is fitted apart (:func:`model_key`). Those with enough records are fitted on
        their own; the others are adapted by transfer (or a calibrated roofline if nothing is fitted). Records
        of one device label and runtime must share one thread count (give other thread settings their own
        ``device_label`` when collecting).
        """
        check(len(records) > 0, "LatencyPredictor.fit", "records", len(records), "at least one ProfileRecord")
        groups = self._group(records)
        self.models, self.terms = {}, TERMS
        few = {}
        for key, recs in groups.items():
            if len(recs) >= self.min_fit_records and len({spec_key(r.spec) for r in recs}) >= self.min_fit_specs:
                self.models[key] = self._fit_device(recs)
            else:
                few[key] = recs
        for key, recs in few.items():
            self.models[key] = self._adapt_device(key, recs)
        return self

    def adapt(self, records: Sequence[ProfileRecord]) -> LatencyPredictor:
        """Add (or replace) devices from a handful of their measurements by transfer, keeping every fitted
        device as it is; returns ``self``. This is how a new device is brought in cheaply."""
        check(len(records) > 0, "LatencyPredictor.adapt", "records", len(records), "at least one ProfileRecord")
        for key, recs in self._group(records).items():
            self.models[key] = self._adapt_device(key, recs)
        return self

    @staticmethod
    def _group(records: Sequence[ProfileRecord]) -> dict[str, list[ProfileRecord]]:
        """Records per :func:`model_key` (device label and runtime): what one fit may use."""
        groups: dict[str, list[ProfileRecord]] = defaultdict(list)
        for r in records:
            groups[model_key(r.device, r.runtime)].append(r)
        for key, recs in groups.items():
            threads = sorted({r.threads for r in recs})
            check(len(threads) == 1, "LatencyPredictor", f"records[{key}].threads", threads,
                  "one thread count per device label: collect other settings under another device_label")
            catalogs = sorted({str(r.catalog_device) for r in recs})
            check(len(catalogs) == 1, "LatencyPredictor", f"records[{key}].catalog_device", catalogs,
                  "one catalog entry per device label")
        return dict(groups)

    def _meta(self, recs: Sequence[ProfileRecord]) -> dict:
        return {"device": recs[0].device, "runtime": recs[0].runtime, "catalog_device": recs[0].catalog_device,
                "records": len(recs), "specs": len({spec_key(r.spec) for r in recs}),
                "threads": tuple(sorted({r.threads for r in recs})), "sources": tuple(sorted({r.source for r in recs}))}

    def _fit_device(self, recs: Sequence[ProfileRecord]) -> DeviceModel:
        x = _matrix(self._rows(recs, recs[0].catalog_device))
        y = np.array([getattr(r, self.target) for r in recs])
        w = _relative_nnls(x, y, self.ridge, self.huber)
        mape, within = _scores(x @ w, y)
        return DeviceModel(method="fit", weights={t: float(v) for t, v in zip(TERMS, w) if v > 0},
                           prior_device=recs[0].catalog_device, train_mape=mape, train_within_10pct=within,
                           dense_precisions=_measured_dense(recs), **self._meta(recs))

    def _adapt_device(self, key: str, recs: Sequence[ProfileRecord]) -> DeviceModel:
        y = np.array([getattr(r, self.target) for r in recs])
        own = recs[0].catalog_device
        x = _matrix(self._rows(recs, own))
        bases = {d: m for d, m in self.models.items() if m.method == "fit" and d != key}
        best = None
        for name, base in sorted(bases.items()):
            # A device without a catalog entry keeps the base's roofline term (else its weight would be lost).
            prior = own if self._device_spec(own) is not None else base.prior_device
            xb = x if prior == own else _matrix(self._rows(recs, prior))
            scales = self._block_scales(xb, y, base.weights)
            w = {t: v * scales[b] for b, terms in BLOCKS.items() for t in terms if (v := base.weights.get(t, 0.0))}
            err = float(np.sum(((xb @ np.array([w.get(t, 0.0) for t in TERMS]) - y) / y) ** 2))
            if best is None or err < best[0]:
                best = (err, name, scales, w, prior, xb)
        if best is not None:
            _, name, scales, w, prior, x = best
            # scaled base weights: they price what the base measured, whatever these few records hold
            method, extra = "transfer", {"base": name, "scales": scales, "prior_device": prior,
                                         "dense_precisions": self._priced(bases[name])}
        else:
            if self._device_spec(recs[0].catalog_device) is None:
                raise ConfigError(
                    f"cannot learn device {key!r} from {len(recs)} records: too few to fit on their own (need "
                    f"{self.min_fit_records} over {self.min_fit_specs} architectures), no fitted device to transfer "
                    "from, and no catalog entry for a roofline (set catalog_device when collecting)")
            keep = [TERMS.index("calls"), TERMS.index("roofline_ms")]
            sub = np.zeros_like(x)
            sub[:, keep] = x[:, keep]
            wv = _relative_nnls(sub, y, self.ridge)
            w = {t: float(v) for t, v in zip(TERMS, wv) if v > 0}
            method, extra = "calibrated roofline", {"prior_device": own, "dense_precisions": DENSE_PRECISIONS}
        pred = x @ np.array([w.get(t, 0.0) for t in TERMS])
        mape, within = _scores(pred, y)
        return DeviceModel(method=method, weights=w, train_mape=mape, train_within_10pct=within,
                           **extra, **self._meta(recs))

    def _block_scales(self, x: np.ndarray, y: np.ndarray, weights: dict[str, float]) -> dict[str, float]:
        """One scale per block of a base device's terms, shrunk towards one common scale."""
        wv = np.array([weights.get(t, 0.0) for t in TERMS])
        contrib = np.stack([x[:, [TERMS.index(t) for t in terms]] @ wv[[TERMS.index(t) for t in terms]]
                            for terms in BLOCKS.values()], axis=1) / y[:, None]  # (n, blocks), relative
        total = contrib.sum(axis=1)
        common = float(total.sum() / max(float(total @ total), 1e-300))
        scales = dict.fromkeys(BLOCKS, common)
        active = [i for i in range(len(BLOCKS)) if contrib[:, i].any()]
        if len(y) >= 2 * len(active) and active:
            lam = math.sqrt(self.transfer_prior) / common
            a = np.vstack([contrib[:, active], lam * np.eye(len(active))])
            b = np.concatenate([np.ones(len(y)), np.full(len(active), math.sqrt(self.transfer_prior))])
            for i, s in zip(active, nnls(a, b)):
                scales[list(BLOCKS)[i]] = float(s)
        return scales

    # -- prediction ------------------------------------------------------------------------------------------

    def predict(self, spec: ModelSpec, compression: CompressionChoice, device: str, batch_size: int, *,
                runtime: str = "eager") -> LatencyPrediction:
        """Latency of one call on ``device`` (a device label the predictor learned, or a catalog name) with
        ``runtime`` (what its records were timed on): the predictor's ``target`` statistic, the median by default.

        Without measurements of ``device`` on ``runtime`` the roofline :func:`~crossrec.hardware.estimate`
        answers (``source="modeled"``; method ``"roofline"``, or ``"roofline (no <runtime> measurements)"`` when
        the device was measured on other runtimes only), and so does the device's catalog entry for a dense
        precision its fit never measured (module docstring); an unknown name raises ConfigError listing what
        is known.
        """
        check(batch_size >= 1, "predict", "batch_size", batch_size, ">= 1")
        model = self.models.get(model_key(device, runtime))
        if model is None:
            return self._unmeasured(spec, compression, device, batch_size, runtime)
        if compression.dense_precision not in self._priced(model):
            return self._unpriced(spec, compression, device, model, batch_size)
        f = features(spec, compression, batch_size, device=self._device_spec(model.prior_device))
        latency = max(sum(model.weights.get(t, 0.0) * f[t] for t in TERMS), 1e-6)  # fixed order: same sum on reload
        method = f"transfer from {model.base}" if model.method == "transfer" else model.method
        return LatencyPrediction(latency_ms=latency, samples_per_s=batch_size / latency * 1e3, source="predicted",
                                 device=device, batch_size=batch_size, method=method, statistic=self.target,
                                 runtime=runtime)

    def _unmeasured(self, spec: ModelSpec, compression: CompressionChoice, device: str, batch_size: int,
                    runtime: str) -> LatencyPrediction:
        """The roofline of a (device, runtime) without records: the device's catalog entry, or the one its
        models on other runtimes name (a label like ``my-box`` is no catalog name itself)."""
        others = [m for m in self.models.values() if m.device == device]
        name = device if device in self.catalog else next(
            (n for m in others for n in (m.catalog_device, m.prior_device) if n in self.catalog), None)
        if name is None:
            measured = f" (measured on {sorted(m.runtime for m in others)} only)" if others else ""
            raise ConfigError(f"no {runtime} measurements and no catalog entry for device {device!r}{measured}; "
                              f"learned devices: {sorted(self.models) or 'none'} (label@runtime where not eager); "
                              f"catalog: {', '.join(sorted(self.catalog))}; measure it with crossrec profile "
                              f"--runtime {runtime}")
        method = f"roofline (no {runtime} measurements)" if others else "roofline"
        return self._roofline(spec, compression, device, self.catalog[name], batch_size, method, runtime)

    def _priced(self, model: DeviceModel) -> tuple[str, ...]:
        """The dense precisions ``model``'s weights price (see :class:`DeviceModel`)."""
        if model.dense_precisions:
            return model.dense_precisions
        return tuple(p for p in DENSE_PRECISIONS if dense_term("linear", p) in self.terms)

    def _unpriced(self, spec: ModelSpec, compression: CompressionChoice, device: str, model: DeviceModel,
                  batch_size: int) -> LatencyPrediction:
        p = compression.dense_precision
        name = model.catalog_device or model.prior_device
        dev = self._device_spec(name)
        if dev is None:
            raise ConfigError(f"the predictor's model of {device!r} was fitted without {p!r} dense layers (it prices "
                              f"{', '.join(self._priced(model))}) and {device!r} has no catalog entry for a roofline; "
                              f"collect records with {p} choices (crossrec profile --choices) and refit")
        return self._roofline(spec, compression, device, dev, batch_size, f"roofline (no {p} measurements)",
                              model.runtime)

    def _roofline(self, spec: ModelSpec, compression: CompressionChoice, device: str, dev: DeviceSpec,
                  batch_size: int, method: str, runtime: str) -> LatencyPrediction:
        e = estimate(spec, dev, batch_size, embedding_precision=compression.precisions_for(spec),
                     dense_precision=compression.dense_precision)
        return LatencyPrediction(latency_ms=e.latency_ms, samples_per_s=e.samples_per_s, source="modeled",
                                 device=device, batch_size=batch_size, method=method, statistic=self.target,
                                 runtime=runtime)

    # -- persistence -----------------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        return {"format": FORMAT, "version": VERSION, "terms": list(self.terms), "cache_bytes": CACHE_BYTES,
                "settings": {"target": self.target, "min_fit_records": self.min_fit_records,
                             "min_fit_specs": self.min_fit_specs, "ridge": self.ridge, "huber": self.huber,
                             "transfer_prior": self.transfer_prior},
                "devices": {d: m.to_dict() for d, m in sorted(self.models.items())}}

    @classmethod
    def from_dict(cls, data: dict, *, catalog: dict[str, DeviceSpec] | None = None) -> LatencyPredictor:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ConfigError(f"not a saved LatencyPredictor (expected format {FORMAT!r}); write one with save()")
        saved = list(data.get("terms", []))
        # An older term list (a subset: terms were added since, e.g. int8-static's) still loads: its weights mean
        # what they meant, and the precisions it lacks are modeled (predict). Removed or renamed terms do not.
        if data.get("version") != VERSION or not saved or not set(saved) <= set(TERMS) or \
                data.get("cache_bytes") != CACHE_BYTES:
            unknown = sorted(set(saved) - set(TERMS))
            raise ConfigError("this predictor was saved by a crossrec with other latency features (version "
                              f"{data.get('version')}" + (f", unknown terms {unknown}" if unknown else "")
                              + "); refit it from its ProfileRecords")
        pred = cls(**data.get("settings", {}), catalog=catalog)
        pred.terms = tuple(t for t in TERMS if t in set(saved))
        pred.models = {d: DeviceModel.from_dict(m) for d, m in data.get("devices", {}).items()}
        return pred

    def save(self, path: str | Path) -> Path:
        """Write the predictor as JSON (weights per device and what they rest on); returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path, *, catalog: dict[str, DeviceSpec] | None = None) -> LatencyPredictor:
        """Read a predictor written by :meth:`save` (JSON only, never pickle)."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"predictor file {path} does not exist; fit one and save() it")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path} is not JSON ({exc}); write it with LatencyPredictor.save()") from None
        return cls.from_dict(data, catalog=catalog)


def synthetic_record(spec: ModelSpec, choice: CompressionChoice, batch_size: int, device: str, p50_ms: float, *,
                     threads: int = 1, catalog_device: str | None = None, runtime: str = "eager") -> ProfileRecord:
    """A made-up :class:`ProfileRecord` (``source="synthetic"``): for tests and what-if studies, never
    presented as a measurement."""
    from crossrec.hardware.collect import record_key

    return ProfileRecord(key=record_key(spec, choice, batch_size, device, threads, runtime), spec=spec, choice=choice,
                         batch_size=batch_size, device=device, catalog_device=catalog_device, host="synthetic",
                         threads=threads, torch_version="", p50_ms=p50_ms, p99_ms=p50_ms, mean_ms=p50_ms,
                         min_ms=p50_ms, samples_per_s=batch_size / p50_ms * 1e3, repeats=1, warmup=0,
                         source="synthetic", runtime=runtime)


def split_by_spec(records: Sequence[ProfileRecord], test_fraction: float = 0.25,
                  seed: int = 0) -> tuple[list[ProfileRecord], list[ProfileRecord]]:
    """(train, held-out): whole architectures go to one side, so held-out specs were never seen.

    >>> split_by_spec([], 0.25)
    ([], [])
    """
    check(0 < test_fraction < 1, "split_by_spec", "test_fraction", test_fraction, "in (0, 1)")
    keys = sorted({spec_key(r.spec) for r in records})
    order = np.random.default_rng(seed).permutation(len(keys))
    n_test = max(1, round(len(keys) * test_fraction)) if keys else 0
    test = {keys[i] for i in order[:n_test]}
    return [r for r in records if spec_key(r.spec) not in test], [r for r in records if spec_key(r.spec) in test]


def evaluate_predictor(pred: LatencyPredictor, held_out: Sequence[ProfileRecord]) -> dict:
    """Accuracy on ``held_out`` measurements: share within ±10 % of the measured statistic the predictor
    learned (its ``target``, p50 by default), MAPE, and both per batch size. Each record is predicted for
    the runtime it was timed on. Pass records of architectures the predictor never saw (:func:`split_by_spec`).

    >>> from crossrec.models import ModelSpec, TableSpec
    >>> spec = ModelSpec(num_dense=2, tables=(TableSpec(name="a", num_embeddings=50),), embedding_dim=4,
    ...                  bottom_mlp=(4,), top_mlp=(8,))
    >>> recs = [synthetic_record(spec, CompressionChoice(), b, "toy", 0.05 + 0.001 * b) for b in (1, 8, 64)]
    >>> ev = evaluate_predictor(LatencyPredictor(min_fit_records=3, min_fit_specs=1).fit(recs), recs)
    >>> ev["within_10pct"], ev["n"], sorted(ev["per_batch_size"])
    (1.0, 3, ['1', '64', '8'])
    """
    check(len(held_out) > 0, "evaluate_predictor", "held_out", len(held_out), "at least one record")
    rows = []
    for r in held_out:
        p = pred.predict(r.spec, r.choice, r.device, r.batch_size, runtime=r.runtime)
        y = getattr(r, pred.target)
        rows.append((r.batch_size, abs(p.latency_ms - y) / y, p.source))

    def summary(apes: list[float]) -> dict:
        a = np.array(apes)
        return {"n": len(a), "within_10pct": float((a <= 0.10).mean()), "mape": float(a.mean()),
                "median_ape": float(np.median(a)), "p90_ape": float(np.quantile(a, 0.9))}

    per_b: dict[int, list[float]] = defaultdict(list)
    for b, ape, _ in rows:
        per_b[b].append(ape)
    sources: dict[str, int] = defaultdict(int)
    for *_, s in rows:
        sources[s] += 1
    return {**summary([ape for _, ape, _ in rows]), "sources": dict(sources),
            "per_batch_size": {str(b): summary(v) for b, v in sorted(per_b.items())}}
