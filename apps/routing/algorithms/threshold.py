"""Auto-accept threshold choice: smallest confidence whose accuracy lower bound meets a target."""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal

import numpy as np

BoundKind = Literal["wilson", "clopper_pearson"]


@dataclass(frozen=True)
class ThresholdChoice:
    """Auto-accept items whose calibrated confidence is >= `threshold`.

    `threshold` is +inf (and `qualified` False) when no threshold meets the target;
    `accuracy` and `lower_bound` are then those of the cut with the highest lower bound
    (`best_cut`, over `best_n` held-out items): how far the best the data allows falls short.
    `coverage` is the share of the pool (or of the held-out set) that would be accepted.
    """

    threshold: float
    coverage: float
    accuracy: float
    lower_bound: float
    n_accepted: int
    qualified: bool
    best_cut: float = float("nan")
    best_n: int = 0


def wilson_lower_bound(successes: np.ndarray, n: np.ndarray, *, level: float = 0.95) -> np.ndarray:
    """One-sided Wilson score lower bound of a binomial proportion (vectorized)."""
    k = np.asarray(successes, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    z = NormalDist().inv_cdf(level)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = k / n
        center = p + z * z / (2 * n)
        spread = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        bound = (center - spread) / (1 + z * z / n)
    return np.where(n > 0, np.clip(bound, 0.0, 1.0), 0.0)


def clopper_pearson_lower_bound(
    successes: np.ndarray, n: np.ndarray, *, level: float = 0.95
) -> np.ndarray:
    """One-sided exact (Beta) lower bound; needs scipy, imported only when used."""
    # scipy is optional (the test extra): only this bound needs it.
    from scipy.stats import beta  # noqa: PLC0415

    k = np.asarray(successes, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        bound = beta.ppf(1 - level, k, n - k + 1)
    return np.where(k > 0, np.nan_to_num(bound), 0.0)


def choose_threshold(
    confidence: np.ndarray,
    correct: np.ndarray,
    *,
    target_accuracy: float,
    level: float = 0.95,
    bound: BoundKind = "wilson",
    min_accepted: int = 1,
    pool_confidence: np.ndarray | None = None,
) -> ThresholdChoice:
    """Smallest held-out confidence t such that the accuracy of items with conf >= t,
    as a one-sided lower confidence bound, meets `target_accuracy`.

    `correct` is 1/0 per held-out item (model label == settled label), or a soft value
    in [0, 1] (the settled posterior's mass on the model label) so that noisy settled
    labels are not counted as certain. Accuracy is not monotone in t, so every distinct
    held-out confidence is a candidate and the smallest qualifying one wins — the way
    SageMaker Ground Truth's automated labeling picks its threshold.
    """
    conf = np.asarray(confidence, dtype=np.float64)
    ok = np.asarray(correct, dtype=np.float64)
    order = np.argsort(-conf, kind="stable")
    conf_sorted, ok_sorted = conf[order], ok[order]
    n_acc = np.arange(1, len(conf) + 1)
    k_acc = np.cumsum(ok_sorted)
    # Only the last position of a run of tied confidences is a real cut: accepting by
    # `conf >= t` takes all ties together.
    last_of_tie = np.append(conf_sorted[1:] < conf_sorted[:-1], True)
    if bound == "wilson":
        lower = wilson_lower_bound(k_acc, n_acc, level=level)
    else:
        lower = clopper_pearson_lower_bound(k_acc, n_acc, level=level)
    candidate = last_of_tie & (n_acc >= min_accepted)
    qualifies = candidate & (lower >= target_accuracy)
    reference = conf if pool_confidence is None else np.asarray(pool_confidence, np.float64)
    if not qualifies.any():
        if len(conf) == 0:
            return ThresholdChoice(float("inf"), 0.0, float("nan"), 0.0, 0, False)
        # The best cut, not the single most confident item (whose bound, on one item, says
        # nothing of what a larger held-out set shows); ties to the larger cut.
        cuts = np.flatnonzero(last_of_tie)
        best = int(cuts[np.flatnonzero(lower[cuts] == lower[cuts].max())[-1]])
        return ThresholdChoice(
            threshold=float("inf"),
            coverage=0.0,
            accuracy=float(k_acc[best] / n_acc[best]),
            lower_bound=float(lower[best]),
            n_accepted=0,
            qualified=False,
            best_cut=float(conf_sorted[best]),
            best_n=int(n_acc[best]),
        )
    # Sorted by decreasing confidence, the last qualifying cut is the smallest threshold.
    i = int(np.flatnonzero(qualifies)[-1])
    t = float(conf_sorted[i])
    return ThresholdChoice(
        threshold=t,
        coverage=float((reference >= t).mean()) if len(reference) else 0.0,
        accuracy=float(k_acc[i] / n_acc[i]),
        lower_bound=float(lower[i]),
        n_accepted=int(n_acc[i]),
        qualified=True,
        best_cut=t,
        best_n=int(n_acc[i]),
    )
