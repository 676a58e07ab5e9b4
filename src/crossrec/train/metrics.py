"""CTR metrics: exact AUC, log loss, normalized entropy, calibration.

All take numpy arrays of labels in {0, 1} and predicted probabilities (or logits for AUC,
which only needs the order).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from crossrec.errors import DataError

_EPS = 1e-7


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Exact ROC AUC (Mann–Whitney U with tied scores sharing the average rank).

    >>> auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
    0.75
    >>> auc(np.array([0, 1]), np.array([0.5, 0.5]))
    0.5
    """
    y = np.asarray(labels, dtype=np.float64).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    _check(y, s)
    n_pos = float(y.sum())
    n_neg = float(y.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    s_sorted = s[order]
    # Average ranks over runs of equal scores, 1-based.
    boundaries = np.flatnonzero(np.diff(s_sorted)) + 1
    starts = np.concatenate(([0], boundaries))
    ends = np.concatenate((boundaries, [s.size]))
    avg = (starts + ends + 1) / 2.0  # mean of ranks start+1 .. end
    ranks = np.empty(s.size, dtype=np.float64)
    ranks[order] = np.repeat(avg, ends - starts)
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def log_loss(labels: np.ndarray, probs: np.ndarray) -> float:
    """Mean binary cross-entropy, probabilities clipped to [1e-7, 1 - 1e-7].

    >>> round(log_loss(np.array([1, 0]), np.array([0.5, 0.5])), 4)
    0.6931
    """
    y = np.asarray(labels, dtype=np.float64).ravel()
    p = np.clip(np.asarray(probs, dtype=np.float64).ravel(), _EPS, 1 - _EPS)
    _check(y, p)
    return float(-(y * np.log(p) + (1 - y) * np.log1p(-p)).mean())


def normalized_entropy(labels: np.ndarray, probs: np.ndarray) -> float:
    """Log loss divided by the entropy of the base CTR (He et al. 2014); < 1 beats predicting the CTR.

    >>> normalized_entropy(np.array([1, 0, 0, 0]), np.full(4, 0.25))
    1.0
    """
    y = np.asarray(labels, dtype=np.float64).ravel()
    ctr = float(np.clip(y.mean(), _EPS, 1 - _EPS))
    base = -(ctr * np.log(ctr) + (1 - ctr) * np.log(1 - ctr))
    return float(round(log_loss(y, probs) / base, 12))


def calibration(labels: np.ndarray, probs: np.ndarray) -> float:
    """Mean prediction divided by the observed CTR (1.0 = calibrated).

    >>> calibration(np.array([1, 0]), np.array([0.6, 0.4]))
    1.0
    """
    y = np.asarray(labels, dtype=np.float64).ravel()
    return float(np.mean(probs) / y.mean()) if y.mean() > 0 else float("nan")


@dataclass(frozen=True)
class Metrics:
    """The standard CTR scorecard for one evaluation."""

    auc: float
    log_loss: float
    normalized_entropy: float
    calibration: float
    ctr: float
    samples: int

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def compute(labels: np.ndarray, probs: np.ndarray) -> Metrics:
    """All metrics at once.

    >>> compute(np.array([0, 1, 1, 0]), np.array([0.2, 0.7, 0.6, 0.4])).auc
    1.0
    """
    y = np.asarray(labels, dtype=np.float64).ravel()
    return Metrics(auc=auc(y, probs), log_loss=log_loss(y, probs), normalized_entropy=normalized_entropy(y, probs),
                   calibration=calibration(y, probs), ctr=float(y.mean()) if y.size else float("nan"),
                   samples=int(y.size))


def _check(y: np.ndarray, s: np.ndarray) -> None:
    if y.shape != s.shape:
        raise DataError(f"labels ({y.size}) and predictions ({s.size}) differ in length")
    if y.size and not np.isin(y, (0.0, 1.0)).all():
        raise DataError("labels must be 0 or 1")
    if not np.isfinite(s).all():
        raise DataError("predictions contain NaN or inf: the model diverged; lower the learning rate")
