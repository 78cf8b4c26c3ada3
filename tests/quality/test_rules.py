"""Worker rules: gold accuracy suspends, and a suspension reopens what the worker settled."""

from __future__ import annotations

import pytest

from apps.assignments.leasing import Task
from apps.jobs.models import Item
from apps.pipeline.crowd import worker_quality_suspend
from apps.pipeline.next import assignment_next
from apps.pipeline.submit import assignment_submit
from apps.quality.models import QualityDecision
from tests.quality.factories import crowd_job, crowd_label

pytestmark = pytest.mark.django_db


def test_poor_gold_accuracy_suspends_the_worker_and_records_why(django_capture_on_commit_callbacks):
    gold = ["cat", "dog", "bird", "cat", "dog", "bird"]
    job, items, (bad, good) = crowd_job(
        2,
        workers=2,
        gold=gold,
        policy={"gold_rate": 1.0, "gold_min_answers": 5, "gold_min_accuracy": 0.6},
    )
    wrong = {"cat": "dog", "dog": "bird", "bird": "cat"}
    for _ in range(6):
        task = assignment_next(worker=bad)
        if not isinstance(task, Task):
            break
        item = Item.objects.get(pk=task.item)
        with django_capture_on_commit_callbacks(execute=True):
            assignment_submit(worker=bad, assignment_id=task.id, label=wrong[item.gold_label])

    bad.refresh_from_db()
    assert bad.status == "suspended"
    decision = QualityDecision.objects.get(worker=bad, action="suspend")
    assert decision.reason == "gold_accuracy"
    assert decision.details["gold_answers"] == 5
    assert decision.details["gold_correct"] == 0


def test_suspension_drops_the_workers_labels_and_reopens_what_they_settled():
    # min 2 labels: a spammer and one honest worker settle "dog" on the item.
    job, (first,), crowd = crowd_job(1, workers=3)
    spammer, honest, third = crowd
    crowd_label(spammer, "dog", job_id=job.pk)
    crowd_label(honest, "dog", job_id=job.pk)
    first.refresh_from_db()
    assert (first.state, first.label) == ("settled", "dog")

    decision = worker_quality_suspend(
        worker=spammer, job=job, reason=QualityDecision.Reason.GOLD_ACCURACY, details={"x": 1}
    )

    spammer.refresh_from_db()
    assert spammer.status == "suspended"
    first.refresh_from_db()
    # One newcomer's label alone (0.7) is below the target (0.9): back to the queue.
    assert (first.state, first.label, first.source) == ("open", None, None)
    assert first.labels_needed == first.n_labels + first.n_leases + 1 == 3
    weights = {w["worker"]: w["weight"] for w in first.result_meta["workers"]}
    assert weights[spammer.pk] == 0.0
    assert weights[honest.pk] > 0
    reopen = QualityDecision.objects.get(worker=spammer, action="reopen")
    assert first.pk in reopen.details["items"]
    assert decision.reason == "gold_accuracy"
    # The reopened item is offered again, to someone who has not labeled it.
    task = assignment_next(worker=third, job_id=job.pk)
    assert isinstance(task, Task)
    assert task.item == first.pk
    # The suspended worker gets nothing.
    assert assignment_next(worker=spammer, job_id=job.pk).reason == "worker_suspended"
