"""The dashboards' pure figures against hand-computed values (no database)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from apps.reports.metrics import (
    WorkerFigures,
    backlog_forecast,
    cost_estimate,
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
