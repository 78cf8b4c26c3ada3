"""Pure figures for the dashboards: suspicious-worker flags, backlog ETA, interval bounds,
the redundancy curve and the marginal cost of the last accuracy point.

No database here: selectors gather counts, these functions judge them; tests check them
against hand-computed values.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
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


@dataclass(frozen=True)
class CurvePoint:
    k: int  # crowd labels per item
    items: int  # gold items with at least k answers
    accuracy: float  # mean accuracy of the majority of their first k answers
    before: float | None = None  # the same items' accuracy with their first k-1 answers


def redundancy_curve(answers: Iterable[tuple[str, Sequence[str]]], max_k: int) -> list[CurvePoint]:
    """The accuracy a job would have with k crowd labels per item, for k = 1..max_k,
    estimated on its gold items: for each item with at least k answers, the majority of its
    first k answers (in the order they came) against the known answer. A tie is a fair
    draw among the tied classes (1/t when the truth is one of t tied classes, else 0).
    `before` is the accuracy of the same items with one answer fewer, so that a step of the
    curve compares like with like (items with many answers are not a random sample)."""
    sums = [0.0] * (max_k + 1)
    befores = [0.0] * (max_k + 1)
    counts = [0] * (max_k + 1)
    for truth, values in answers:
        votes: dict[str, int] = {}
        previous = 0.0
        for k, value in enumerate(values[:max_k], start=1):
            votes[value] = votes.get(value, 0) + 1
            top = max(votes.values())
            tied = [v for v, n in votes.items() if n == top]
            right = (1.0 / len(tied)) if truth in tied else 0.0
            sums[k] += right
            befores[k] += previous
            counts[k] += 1
            previous = right
    return [
        CurvePoint(
            k=k,
            items=counts[k],
            accuracy=sums[k] / counts[k],
            before=befores[k] / counts[k] if k > 1 else None,
        )
        for k in range(1, max_k + 1)
        if counts[k]
    ]


@dataclass(frozen=True)
class MarginalCost:
    """What the last accuracy point costs: going from k-1 to k crowd labels per item (the
    job's own labels per item, rounded) moved accuracy from `accuracy_before` to `accuracy`;
    bought at that rate, one point costs `per_item_per_point` per item and `per_point` over
    the job's `items` items. None prices when the last label bought no accuracy."""

    k: int
    labels_per_item: float
    accuracy_before: float
    accuracy: float
    gain_points: float
    gold_items: int
    per_item_per_point: Decimal | None
    per_point: Decimal | None
    items: int


def marginal_accuracy_cost(
    *,
    curve: Sequence[CurvePoint],
    labels_per_item: float,
    label_price: Decimal,
    items: int,
) -> MarginalCost | None:
    """The marginal cost of the job's last accuracy point, from its redundancy curve: the
    step from k-1 to k labels per item on the items with k answers, k = the job's labels per
    item rounded (at least 2, at most the deepest k the curve has). None without a step."""
    by_k = {p.k: p for p in curve}
    if not by_k or labels_per_item <= 0:
        return None
    k = min(max(2, round(labels_per_item)), max(by_k))
    after = by_k.get(k)
    if after is None or after.before is None:
        return None
    gain = (after.accuracy - after.before) * 100
    per_item = per_job = None
    if gain > 1e-9:
        per_item = (label_price / Decimal(str(round(gain, 6)))).quantize(Decimal("0.0001"))
        per_job = (per_item * items).quantize(Decimal("0.01"))
    return MarginalCost(
        k=k,
        labels_per_item=round(labels_per_item, 2),
        accuracy_before=round(after.before, 4),
        accuracy=round(after.accuracy, 4),
        gain_points=round(gain, 2),
        gold_items=after.items,
        per_item_per_point=per_item,
        per_point=per_job,
        items=items,
    )
