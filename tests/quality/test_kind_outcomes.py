"""One item's outcome per answer kind (apps.quality.kinds.kind_item_outcome), as a pure
function: the stored answers in, the result, its confidence and whether it settles out."""

from __future__ import annotations

import math

from apps.jobs.policy import Policy
from apps.quality.algorithms.kinds.numeric import SHARED_RATIO
from apps.quality.kinds import kind_item_outcome

NUMERIC = {"kind": "numeric", "minimum": 0, "maximum": 100, "tolerance": 5}


def _numeric(values: list[float], tolerance: float = 5):
    schema = {**NUMERIC, "tolerance": tolerance}
    answers = [(w, str(v), "crowd") for w, v in enumerate(values, start=1)]
    return kind_item_outcome(label_schema=schema, policy=Policy(), answers=answers)


def test_a_number_stops_on_the_consensus_and_reports_the_shared_error_too():
    # 54, 55, 56: one answer each, so no worker's bias can be told from their noise; the
    # consensus is Student's t on three answers: 2.92 x 1 / sqrt(3) = +-1.69 at the 90%
    # level, within the tolerance of 5. The reported interval adds the assumed shared error
    # (0.3 x the answers' variance), which more answers cannot shrink.
    out = _numeric([54, 55, 56])

    assert out.confident
    assert float(out.label) == 55.0
    assert math.isclose(out.extra["consensus_half_width"], 2.92 / math.sqrt(3), abs_tol=0.01)
    assert SHARED_RATIO == 0.3
    expected = 2.92 * math.sqrt(1 / 3 + 0.3)
    assert math.isclose(out.extra["half_width"], expected, abs_tol=0.01)
    # The confidence is the share of the tolerance the whole interval leaves unused.
    assert out.confidence == round(max(0.0, 1.0 - out.extra["half_width"] / 5), 6)


def test_three_numbers_spread_like_a_tolerance_do_not_settle_an_item():
    # 50, 55, 60: the consensus is +-8.4 (t on three answers); before a worker's bias needed
    # two answers, each answer's error went into its bias and this settled at +-4.75.
    out = _numeric([50, 55, 60])

    assert not out.confident
    assert math.isclose(out.extra["consensus_half_width"], 2.92 * 5 / math.sqrt(3), abs_tol=0.05)


def test_a_number_whose_consensus_is_wider_than_the_tolerance_asks_for_more():
    out = _numeric([40, 55, 70])

    assert not out.confident
    assert out.extra["consensus_half_width"] > 5


def test_one_number_never_settles_an_item():
    out = _numeric([55], tolerance=1000)

    assert not out.confident
