"""Confidence that means what it says: calibrating class posteriors and measuring calibration.

Dawid-Skene posteriors multiply one factor per answer as if answers were independent given
the truth; real answers are not (hard items fool everyone), so a posterior of 0.999 is
right far less often than 999 times in 1,000. The map here keeps every item's label (it is
monotone per item) and changes only how sure the result claims to be:

    p'(c) = (1 - floor) * p(c)^(1/T) / sum_j p(j)^(1/T) + floor / K

`T` > 1 softens overconfident posteriors, `floor` caps the confidence at 1 - floor (K-1)/K:
even unanimous items are wrong now and then. Both are fitted on the job's gold items by
maximum a posteriori with a Gaussian prior around a crowd-wide default (fitted
leave-one-dataset-out on the shared crowd data sets, `bench/aggregation.py`), so a job with
a handful of gold items gets the default and one with hundreds gets its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_EPS = 1e-12


@dataclass(frozen=True)
class Calibration:
    """A fitted calibration map (see the module docstring) and the gold it was fitted on."""

    temperature: float = 1.0
    floor: float = 0.0
    n_gold: int = 0

    def apply(self, posteriors: np.ndarray) -> np.ndarray:
        """Calibrated (n, K) posteriors; the argmax of every row is unchanged."""
        return calibrate(posteriors, self.temperature, self.floor)


def calibrate(posteriors: np.ndarray, temperature: float, floor: float) -> np.ndarray:
    """`posteriors` (n, K) softened by `temperature` and mixed with `floor` of uniform."""
    p = np.asarray(posteriors, dtype=np.float64)
    if p.size == 0:
        return p.copy()
    k = p.shape[1]
    if temperature != 1.0:
        logp = np.log(np.clip(p, _EPS, None)) / temperature
        logp -= logp.max(axis=1, keepdims=True)
        p = np.exp(logp)
        p /= p.sum(axis=1, keepdims=True)
    if floor > 0.0:
        p = (1.0 - floor) * p + floor / k
    return p


# Grids of the MAP fit: log-spaced temperatures from 0.5 to 20, floors from 0 to 0.5.
_LOG_T = np.linspace(np.log(0.5), np.log(20.0), 49)
_FLOORS = np.concatenate([[0.0], np.geomspace(1e-3, 0.5, 40)])


def fit_calibration(
    posteriors: np.ndarray,
    truth: np.ndarray,
    *,
    temperature: float,
    floor: float,
    strength: float,
) -> Calibration:
    """MAP (temperature, floor) on gold items: `posteriors` (m, K) computed without the gold,
    `truth` (m,) their classes. The prior is Gaussian around (`temperature`, `floor`): on
    log T with standard deviation 1 / sqrt(strength) and on the floor with 0.1 / sqrt(strength);
    `strength` is worth about that many gold items of evidence. With no gold, the prior
    centre itself."""
    truth = np.asarray(truth, dtype=np.int64)
    m = int(truth.size)
    if m == 0:
        return Calibration(temperature, floor, 0)
    p = np.asarray(posteriors, dtype=np.float64)
    k = p.shape[1]
    logp = np.log(np.clip(p, _EPS, None))
    rows = np.arange(m)
    best = (-np.inf, temperature, floor)
    floors = _FLOORS[:, None]
    for log_t in _LOG_T:
        z = logp / np.exp(log_t)
        z -= z.max(axis=1, keepdims=True)
        soft = np.exp(z)
        q = soft[rows, truth] / soft.sum(axis=1)  # (m,) tempered prob of the truth
        # Every floor at once: (n_floors, m).
        ll = np.log((1.0 - floors) * q[None, :] + floors / k).sum(axis=1)
        penalty = strength * (
            0.5 * (log_t - np.log(temperature)) ** 2 + 0.5 * ((_FLOORS - floor) / 0.1) ** 2
        )
        score = ll - penalty
        i = int(np.argmax(score))
        if score[i] > best[0]:
            best = (float(score[i]), float(np.exp(log_t)), float(_FLOORS[i]))
    return Calibration(best[1], best[2], m)


def expected_calibration_error(
    confidence: np.ndarray, correct: np.ndarray, n_bins: int = 15
) -> float:
    """ECE with `n_bins` equal-mass bins: items sorted by confidence, cut into bins of (nearly)
    equal size, the size-weighted mean of |accuracy - mean confidence| per bin."""
    conf = np.asarray(confidence, dtype=np.float64)
    hit = np.asarray(correct, dtype=np.float64)
    n = conf.size
    if n == 0:
        return 0.0
    order = np.argsort(conf, kind="stable")
    edges = np.linspace(0, n, min(n_bins, n) + 1).round().astype(int)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        if hi > lo:
            idx = order[lo:hi]
            total += abs(hit[idx].mean() - conf[idx].mean()) * (hi - lo)
    return total / n


def reliability_bins(
    confidence: np.ndarray, correct: np.ndarray, n_bins: int = 15
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per equal-mass bin: mean confidence, accuracy and size (for a reliability diagram)."""
    conf = np.asarray(confidence, dtype=np.float64)
    hit = np.asarray(correct, dtype=np.float64)
    order = np.argsort(conf, kind="stable")
    edges = np.linspace(0, conf.size, min(n_bins, max(conf.size, 1)) + 1).round().astype(int)
    means, accs, sizes = [], [], []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        if hi > lo:
            idx = order[lo:hi]
            means.append(conf[idx].mean())
            accs.append(hit[idx].mean())
            sizes.append(hi - lo)
    return np.array(means), np.array(accs), np.array(sizes)
