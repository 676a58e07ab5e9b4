"""Metrics agree with brute-force definitions."""

import itertools

import numpy as np
import pytest

from crossrec.errors import DataError
from crossrec.train import auc, calibration, compute, log_loss, normalized_entropy


def _brute_auc(y, s):
    pos, neg = s[y == 1], s[y == 0]
    wins = sum((p > n) + 0.5 * (p == n) for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", range(5))
def test_auc_matches_pairwise_definition_with_ties(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 200)
    s = rng.integers(0, 10, 200).astype(float)  # many ties
    assert auc(y, s) == pytest.approx(_brute_auc(y, s), abs=1e-12)


def test_auc_edge_cases():
    assert auc(np.array([1, 1]), np.array([0.1, 0.2])) != auc(np.array([1, 1]), np.array([0.1, 0.2]))  # nan
    assert auc(np.array([0, 1]), np.array([0.9, 0.1])) == 0.0


def test_log_loss_ne_calibration():
    y = np.array([1, 0, 0, 1])
    p = np.array([0.9, 0.2, 0.1, 0.6])
    assert log_loss(y, p) == pytest.approx(-np.mean(np.log([0.9, 0.8, 0.9, 0.6])))
    assert normalized_entropy(y, np.full(4, 0.5)) == pytest.approx(1.0)
    assert calibration(y, p) == pytest.approx(np.mean(p) / 0.5)
    m = compute(y, p)
    assert m.samples == 4 and m.auc == 1.0


def test_bad_inputs_are_rejected():
    with pytest.raises(DataError, match="differ in length"):
        auc(np.array([0, 1]), np.array([0.1]))
    with pytest.raises(DataError, match="0 or 1"):
        log_loss(np.array([0, 2]), np.array([0.1, 0.2]))
    with pytest.raises(DataError, match="NaN"):
        auc(np.array([0, 1]), np.array([np.nan, 0.2]))
