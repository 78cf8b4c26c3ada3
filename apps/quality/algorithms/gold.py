"""Per-worker accuracy on gold (control) items with uncertainty bounds, vectorised over workers."""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import numpy as np


@dataclass(frozen=True)
class GoldScores:
    """Per-worker gold results; arrays of shape (n_workers,), NaN where a worker has no gold."""

    n_answers: np.ndarray
    n_correct: np.ndarray
    accuracy: np.ndarray
    wilson_low: np.ndarray
    wilson_high: np.ndarray
    # Mean of the Beta(prior_a + correct, prior_b + wrong) posterior: a shrunk accuracy that
    # is safe to rank workers with few control answers by.
    posterior_mean: np.ndarray
    confidence: float


def wilson_interval(
    n_correct: np.ndarray, n_total: np.ndarray, confidence: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval for binomial proportions (NaN where n_total == 0)."""
    k = np.asarray(n_correct, dtype=np.float64)
    n = np.asarray(n_total, dtype=np.float64)
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = k / n
        denom = 1 + z * z / n
        centre = (p + z * z / (2 * n)) / denom
        half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    low = np.where(n > 0, np.clip(centre - half, 0.0, 1.0), np.nan)
    high = np.where(n > 0, np.clip(centre + half, 0.0, 1.0), np.nan)
    return low, high


def gold_scores(
    workers: np.ndarray,
    labels: np.ndarray,
    gold_labels: np.ndarray,
    *,
    n_workers: int | None = None,
    confidence: float = 0.95,
    prior: tuple[float, float] = (1.0, 1.0),
) -> GoldScores:
    """Score each worker's answers on gold items: `labels[i]` vs `gold_labels[i]` by `workers[i]`."""
    workers = np.asarray(workers, dtype=np.int64)
    correct = np.asarray(labels) == np.asarray(gold_labels)
    n_workers = int(workers.max() + 1) if n_workers is None and workers.size else (n_workers or 0)
    n = np.bincount(workers, minlength=n_workers).astype(np.float64)
    hits = np.bincount(workers, weights=correct.astype(np.float64), minlength=n_workers)
    with np.errstate(divide="ignore", invalid="ignore"):
        acc = np.where(n > 0, hits / n, np.nan)
    low, high = wilson_interval(hits, n, confidence)
    a, b = prior
    return GoldScores(
        n_answers=n,
        n_correct=hits,
        accuracy=acc,
        wilson_low=low,
        wilson_high=high,
        posterior_mean=(hits + a) / (n + a + b),
        confidence=confidence,
    )
