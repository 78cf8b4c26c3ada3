"""The dashboards' pure figures against hand-computed values (no database)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from apps.reports.metrics import (
    CurvePoint,
    WorkerFigures,
    backlog_forecast,
    cost_estimate,
    marginal_accuracy_cost,
    redundancy_curve,
    wilson_bounds,
    worker_flags,
)


@pytest.mark.parametrize(
    ("correct", "total", "low", "high"),
    [
        # p = 0.5, n = 10: centre 0.5, half-width 1.96*sqrt(.025+.0096)/1.384 = 0.2366
        (5, 10, 0.2366, 0.7634),
        # p = 0, n = 5: (0, z^2/(n+z^2)) = (0, 3.8415/8.8415)
        (0, 5, 0.0, 0.4345),
        (20, 20, 0.8389, 1.0),
    ],
    ids=["half", "none-right", "all-right"],
)
def test_wilson_bounds_match_hand_computed_values(correct, total, low, high):
    got = wilson_bounds(correct, total)

    assert got == (pytest.approx(low, abs=1e-4), pytest.approx(high, abs=1e-4))


def test_wilson_bounds_without_answers_are_none():
    assert wilson_bounds(0, 0) is None


@pytest.mark.parametrize(
    ("figures", "flags"),
    [
        (WorkerFigures(30, 5, 0, 5000.0, 0.4), ["gold accuracy 0/5, surely below 60%"]),
        # 2/5: the interval (0.118, 0.769) still reaches 60%: not enough evidence.
        (WorkerFigures(30, 5, 2, 5000.0, 0.4), []),
        (WorkerFigures(4, 4, 0, 5000.0, 1.0), []),  # too few answers to judge anything
        (WorkerFigures(12, 0, 0, 600.0, 0.5), ["answers in 0.6 s"]),
        (WorkerFigures(25, 0, 0, 4000.0, 0.92), ["92% of answers are one class"]),
        (WorkerFigures(40, 10, 9, 4000.0, 0.4), []),
    ],
    ids=["spammer", "unlucky", "new", "too-fast", "one-class", "good"],
)
def test_worker_flags(figures, flags):
    assert worker_flags(figures) == flags


def test_backlog_forecast_from_the_recent_pace():
    forecast = backlog_forecast(
        labels_left=90, labels_recent=180, recent_hours=3, label_price=Decimal("0.05")
    )

    assert (forecast.labels_per_hour, forecast.hours_left) == (60.0, 1.5)
    assert forecast.cost_left == Decimal("4.50")


def test_backlog_forecast_without_recent_labels_has_no_eta():
    idle = backlog_forecast(labels_left=5, labels_recent=0, recent_hours=3, label_price=Decimal(1))
    done = backlog_forecast(labels_left=0, labels_recent=0, recent_hours=3, label_price=Decimal(1))

    assert idle.hours_left is None
    assert done.hours_left == 0.0


def test_cost_estimate_before_launch():
    # 100 items x 3..5 labels, 10% of answers gold: 300/0.9 = 333.3 -> 334, 500/0.9 -> 556.
    estimate = cost_estimate(
        n_items=100, min_labels=3, max_labels=5, gold_rate=0.1, crowd_price=Decimal("0.05")
    )

    assert (estimate.labels_low, estimate.labels_high) == (334, 556)
    assert (estimate.low, estimate.high) == (Decimal("16.70"), Decimal("27.80"))
    assert (
        cost_estimate(n_items=1, min_labels=1, max_labels=1, gold_rate=1.0, crowd_price=Decimal(1))
        is None
    )


def test_the_redundancy_curve_on_gold_items():
    # Truth "a". First 1, 2, 3 answers -> majority right (1), tie (1/2) or wrong (0):
    #   g1 a b a: 1, 1/2, 1   g2 b a a: 0, 1/2, 1   g3 a a b: 1, 1, 1   g4 b b a: 0, 0, 0
    answers = [
        ("a", ["a", "b", "a"]),
        ("a", ["b", "a", "a"]),
        ("a", ["a", "a", "b"]),
        ("a", ["b", "b", "a"]),
        ("a", ["a"]),  # counts at k = 1 only
    ]

    curve = redundancy_curve(answers, max_k=5)

    # Each step also on the same items with one answer fewer: g1..g4 at 1 answer: 2/4.
    assert curve == [
        CurvePoint(k=1, items=5, accuracy=3 / 5),
        CurvePoint(k=2, items=4, accuracy=2 / 4, before=2 / 4),
        CurvePoint(k=3, items=4, accuracy=3 / 4, before=2 / 4),
    ]


def test_the_marginal_cost_of_the_last_accuracy_point():
    curve = [
        CurvePoint(k=1, items=40, accuracy=0.70),
        CurvePoint(k=2, items=40, accuracy=0.80, before=0.70),
        CurvePoint(k=3, items=30, accuracy=0.85, before=0.80),
    ]

    # 3.2 labels per item -> the step from 2 to 3 labels: +5 points for one 0.05 label per
    # item, 0.01 per item per point, 10.00 over 1,000 items.
    at_three = marginal_accuracy_cost(
        curve=curve, labels_per_item=3.2, label_price=Decimal("0.05"), items=1000
    )
    # 7 labels per item: no point beyond k = 3, so the last step the curve has.
    deep = marginal_accuracy_cost(
        curve=curve, labels_per_item=7, label_price=Decimal("0.05"), items=1000
    )
    flat = marginal_accuracy_cost(
        curve=[CurvePoint(1, 9, 0.8), CurvePoint(2, 9, 0.8, before=0.8)],
        labels_per_item=2,
        label_price=Decimal("0.05"),
        items=10,
    )

    assert (at_three.k, at_three.gain_points) == (3, 5.0)
    assert (at_three.accuracy_before, at_three.accuracy) == (0.8, 0.85)
    assert at_three.per_item_per_point == Decimal("0.0100")
    assert at_three.per_point == Decimal("10.00")
    assert deep == at_three.__class__(**{**at_three.__dict__, "labels_per_item": 7})
    assert (flat.gain_points, flat.per_item_per_point, flat.per_point) == (0.0, None, None)
    assert (
        marginal_accuracy_cost(curve=curve[:1], labels_per_item=3, label_price=Decimal(1), items=1)
        is None
    )
