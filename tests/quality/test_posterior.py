"""The per-label posterior in the system: newcomers, disagreement, history as a prior."""

from __future__ import annotations

import math

import numpy as np
import pytest

from apps.quality.matrices import classes_key
from apps.quality.models import WorkerJobQuality
from apps.quality.posterior import item_posterior, item_posterior_from_labels
from tests.quality.factories import CLASSES, crowd_job, crowd_label
from tests.workforce.factories import make_worker

pytestmark = pytest.mark.django_db


def test_agreeing_newcomers_settle_once_the_posterior_is_confident():
    job, (item,), crowd = crowd_job(1)

    crowd_label(crowd[0], "dog")
    crowd_label(crowd[1], "dog")

    item.refresh_from_db()
    # Two newcomers at 0.7 accuracy with 3 classes: P(dog) = 0.7^2 / (0.7^2 + 2 * 0.15^2).
    expected = 0.49 / (0.49 + 2 * 0.0225)
    assert item.state == "settled"
    assert item.label == "dog"
    assert item.confidence == pytest.approx(expected, abs=1e-6)
    assert item.source == "crowd"
    assert item.result_meta["method"] == "posterior"
    assert [w["worker"] for w in item.result_meta["workers"]] == [crowd[0].pk, crowd[1].pk]


def test_disagreement_asks_for_one_more_label_then_goes_to_review_at_max():
    job, (item,), crowd = crowd_job(1, workers=4)

    crowd_label(crowd[0], "dog")
    crowd_label(crowd[1], "cat")
    item.refresh_from_db()
    assert (item.state, item.labels_needed) == ("open", 3)

    crowd_label(crowd[2], "bird")
    item.refresh_from_db()
    assert (item.state, item.labels_needed) == ("open", 4)

    crowd_label(crowd[3], "cat")
    item.refresh_from_db()
    assert item.state == "review"
    assert item.n_labels == 4


def test_a_known_good_worker_is_trusted_from_history():
    old_job, _, _ = crowd_job(0)
    worker = make_worker()
    WorkerJobQuality.objects.create(
        worker=worker,
        job=old_job,
        classes_key=classes_key(CLASSES),
        confusion=[[0.99, 0.005, 0.005], [0.005, 0.99, 0.005], [0.005, 0.005, 0.99]],
        skill=0.99,
    )
    new_job, _, _ = crowd_job(0)
    stranger = make_worker()

    trusted, _ = item_posterior_from_labels(job=new_job, answers=[(worker.pk, "bird", "crowd")])
    unknown, _ = item_posterior_from_labels(job=new_job, answers=[(stranger.pk, "bird", "crowd")])

    assert trusted[2] == pytest.approx(0.99 / (0.99 + 0.01), abs=1e-9)
    assert unknown[2] == pytest.approx(0.7, abs=1e-9)


@pytest.mark.parametrize(
    ("crowd_weight", "expected_dog"),
    [(1.0, 0.9**2 / (0.9**2 + 0.1**2)), (0.5, 0.9**1.5 / (0.9**1.5 + 0.1**1.5))],
    ids=["independent", "crowd-tempered"],
)
def test_crowd_weight_tempers_crowd_labels_and_not_the_experts(crowd_weight, expected_dog):
    # Given a crowd worker and an expert, both 0.9 one-coin over two classes, both "dog"
    matrix = np.array([[0.9, 0.1], [0.1, 0.9]])

    # When the crowd's labels count at `crowd_weight` (a routed job's calibration)
    post, contributors = item_posterior(
        classes=["dog", "cat"],
        answers=[(1, "dog", "crowd"), (2, "dog", "expert")],
        matrices={1: matrix, 2: matrix},
        prior=[0.5, 0.5],
        crowd_weight=crowd_weight,
    )

    # Then the crowd label moves the log-odds by w x log 9, the expert's by log 9
    assert post[0] == pytest.approx(expected_dog)
    assert [c["weight"] for c in contributors] == [
        pytest.approx(round(crowd_weight * math.log(9), 4)),
        pytest.approx(round(math.log(9), 4)),
    ]
