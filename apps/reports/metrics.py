"""Pure figures for the dashboards: suspicious-worker flags, backlog ETA, interval bounds.

No database here: selectors gather counts, these functions judge them; tests check them
against hand-computed values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal

# A worker is flagged when the evidence is clear, not on a bad streak: gold accuracy whose
# 95% Wilson interval lies wholly below GOLD_FLAG_BELOW, answers faster than a person reads,
# or nearly always the same class.
GOLD_FLAG_BELOW = 0.6
GOLD_FLAG_MIN_ANSWERS = 5
FAST_FLAG_MS = 800
FAST_FLAG_MIN_LABELS = 10
ONE_CLASS_SHARE = 0.9
ONE_CLASS_MIN_LABELS = 20


def wilson_bounds(correct: int, total: int, z: float = 1.959964) -> tuple[float, float] | None:
    """The Wilson score interval of correct/total (95% by default); None without answers."""
    if total <= 0:
        return None
    p = correct / total
    denom = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denom
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class WorkerFigures:
    labels: int
    gold_answers: int
    gold_correct: int
    typical_ms: float | None  # the worker's usual time per answer (a mean or a median)
    top_class_share: float | None


def worker_flags(figures: WorkerFigures) -> list[str]:
    """Why a worker looks suspicious, in words; empty when nothing stands out."""
    flags = []
    if figures.gold_answers >= GOLD_FLAG_MIN_ANSWERS:
        bounds = wilson_bounds(figures.gold_correct, figures.gold_answers)
        if bounds is not None and bounds[1] < GOLD_FLAG_BELOW:
            flags.append(
                f"gold accuracy {figures.gold_correct}/{figures.gold_answers}, surely below "
                f"{GOLD_FLAG_BELOW:.0%}"
            )
    if (
        figures.labels >= FAST_FLAG_MIN_LABELS
        and figures.typical_ms is not None
        and figures.typical_ms < FAST_FLAG_MS
    ):
        flags.append(f"answers in {figures.typical_ms / 1000:.1f} s")
    if (
        figures.labels >= ONE_CLASS_MIN_LABELS
        and figures.top_class_share is not None
        and figures.top_class_share >= ONE_CLASS_SHARE
    ):
        flags.append(f"{figures.top_class_share:.0%} of answers are one class")
    return flags


@dataclass(frozen=True)
class Forecast:
    labels_left: int
    labels_per_hour: float
    hours_left: float | None  # None when nothing is being labeled
    cost_left: Decimal


def backlog_forecast(
    *, labels_left: int, labels_recent: int, recent_hours: float, label_price: Decimal
) -> Forecast:
    """When the backlog clears at the recent pace, and what its labels will cost."""
    rate = labels_recent / recent_hours if recent_hours > 0 else 0.0
    hours = None if rate <= 0 else labels_left / rate
    if labels_left == 0:
        hours = 0.0
    return Forecast(
        labels_left=labels_left,
        labels_per_hour=rate,
        hours_left=hours,
        cost_left=(label_price * labels_left).quantize(Decimal("0.01")),
    )


@dataclass(frozen=True)
class CostEstimate:
    labels_low: int
    labels_high: int
    low: Decimal
    high: Decimal


def cost_estimate(
    *, n_items: int, min_labels: int, max_labels: int, gold_rate: float, crowd_price: Decimal
) -> CostEstimate | None:
    """What a job will cost before launch, from its policy and prices: every item takes
    between min_labels and max_labels crowd labels, and gold answers (a gold_rate share of
    all answers, paid like the others) come on top. None when every answer would be gold."""
    if gold_rate >= 1.0:
        return None
    overhead = 1.0 / (1.0 - gold_rate)
    low = math.ceil(n_items * min_labels * overhead - 1e-9)
    high = math.ceil(n_items * max(min_labels, max_labels) * overhead - 1e-9)
    cent = Decimal("0.01")
    return CostEstimate(
        labels_low=low,
        labels_high=high,
        low=(crowd_price * low).quantize(cent),
        high=(crowd_price * high).quantize(cent),
    )
