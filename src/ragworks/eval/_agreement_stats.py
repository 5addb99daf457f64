"""Agreement of judge scores with people's labels: AUROC, Cohen's kappa, accuracy, bootstrap intervals.

A score `s` passes at threshold `t` when `s >= t`; a label is positive when it is True (or, for a
numeric label, at or above its cut-off).

Example:
    >>> auroc([False, False, True, True], [0.1, 0.4, 0.35, 0.8])
    0.75
    >>> best_threshold([False, False, True, True], [0.1, 0.2, 0.7, 0.9])
    (0.45, 1.0)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeAlias

import numpy as np
from scipy.stats import rankdata

from ragworks.eval._stats import BOOTSTRAP_SAMPLES

Values: TypeAlias = "Sequence[float] | Sequence[bool] | np.ndarray"
"""Scores or labels: a sequence or a 1-d array."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Interval:
    """A point estimate and its 95% percentile bootstrap interval."""

    value: float
    low: float
    high: float


def _auroc_rows(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    # Mann-Whitney U from average ranks, row by row (rows are bootstrap resamples); ties count one half.
    ranks = rankdata(scores, axis=-1)
    pos = labels.sum(axis=-1)
    neg = labels.shape[-1] - pos
    with np.errstate(invalid="ignore", divide="ignore"):
        u = (ranks * labels).sum(axis=-1) - pos * (pos + 1) / 2
        return np.where((pos > 0) & (neg > 0), u / (pos * neg), np.nan)


def auroc(labels: Values, scores: Values) -> float:
    """Area under the ROC curve of scores for the positive labels (NaN when one class is missing)."""
    y = np.asarray(labels, dtype=bool)
    return float(_auroc_rows(y[None, :], np.asarray(scores, dtype=float)[None, :])[0])


def _kappa_rows(labels: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    agree = (labels == predicted).mean(axis=-1)
    p_label, p_pred = labels.mean(axis=-1), predicted.mean(axis=-1)
    chance = p_label * p_pred + (1 - p_label) * (1 - p_pred)
    with np.errstate(invalid="ignore", divide="ignore"):
        # Chance agreement of 1 (one class everywhere): kappa is 1 if they agree, else 0.
        return np.where(chance < 1, (agree - chance) / (1 - chance), (agree == 1).astype(float))


def kappa(labels: Values, predicted: Values) -> float:
    """Cohen's kappa of two binary raters."""
    y, p = np.asarray(labels, dtype=bool), np.asarray(predicted, dtype=bool)
    return float(_kappa_rows(y[None, :], p[None, :])[0])


def candidate_thresholds(scores: Values) -> np.ndarray:
    """Midpoints between consecutive distinct scores, plus the lowest score (everything passes)."""
    distinct = np.unique(np.asarray(scores, dtype=float))
    return np.concatenate([distinct[:1], (distinct[1:] + distinct[:-1]) / 2])


def best_threshold(labels: Values, scores: Values) -> tuple[float, float]:
    """The threshold that maximises Cohen's kappa, and that kappa (the highest threshold on ties)."""
    y = np.asarray(labels, dtype=bool)
    s = np.asarray(scores, dtype=float)
    cuts = candidate_thresholds(s)
    kappas = _kappa_rows(np.broadcast_to(y, (cuts.size, y.size)), s[None, :] >= cuts[:, None])
    best = int(np.flatnonzero(kappas == np.nanmax(kappas))[-1])
    return round(float(cuts[best]), 4), float(kappas[best])


def bootstrap(
    labels: Values,
    scores: Values,
    threshold: float,
    *,
    samples: int = BOOTSTRAP_SAMPLES,
    seed: int = 0,
) -> dict[str, Interval]:
    """AUROC, kappa and accuracy at `threshold`, each with a 95% bootstrap interval over rows."""
    y = np.asarray(labels, dtype=bool)
    s = np.asarray(scores, dtype=float)
    idx = np.random.default_rng(seed).integers(0, y.size, size=(samples, y.size))
    ys, ss = y[idx], s[idx]
    predicted = ss >= threshold
    point = {
        "auroc": auroc(y, s),
        "kappa": kappa(y, s >= threshold),
        "accuracy": float(((s >= threshold) == y).mean()),
    }
    resampled = {
        "auroc": _auroc_rows(ys, ss),
        "kappa": _kappa_rows(ys, predicted),
        "accuracy": (predicted == ys).mean(axis=1),
    }
    out = {}
    for name, values in resampled.items():
        finite = values[np.isfinite(values)]
        low, high = np.percentile(finite, [2.5, 97.5]) if finite.size else (np.nan, np.nan)
        out[name] = Interval(value=point[name], low=float(low), high=float(high))
    return out
