"""Records: what the database refuses, release and skip, the invariants, what a label keeps."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command
from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.assignments.leasing import Idle, IdleReason
from apps.assignments.models import Assignment, Label
from apps.assignments.records import assignment_release, assignment_skip
from apps.assignments.selectors import invariant_violations
from apps.common.errors import ApplicationError, ErrorCode
from apps.jobs.models import Item, Job
from apps.pipeline.next import assignment_next
from apps.pipeline.submit import assignment_submit
from apps.workforce.models import LedgerEntry, Worker
from tests.assignments.helpers import lease, setup_job

pytestmark = pytest.mark.django_db


def test_the_database_refuses_a_second_assignment_of_an_item_to_a_worker():
    job, (item,), (worker,) = setup_job(1)
    task = lease(worker)
    now = timezone.now()

    with pytest.raises(IntegrityError), transaction.atomic():
        Assignment.objects.create(
            item=item, job=job, worker=worker, leased_at=now, expires_at=now + timedelta(seconds=5)
        )
    assert Assignment.objects.filter(pk=task.id).count() == 1


def test_the_database_refuses_a_lease_over_the_label_budget():
    job, (item,), _ = setup_job(1)

    with pytest.raises(IntegrityError), transaction.atomic():
        Item.objects.filter(pk=item.pk).update(n_leases=2, n_labels=2)


@pytest.mark.parametrize(
    ("end", "state"),
    [(assignment_release, "released"), (assignment_skip, "skipped")],
    ids=["release", "skip"],
)
def test_release_and_skip_return_the_slot_to_others_but_not_to_the_worker(end, state):
    job, (item,), (worker, other) = setup_job(1, workers=2, labels_needed=1)
    task = lease(worker)

    ended = end(worker=worker, assignment_id=task.id)

    assert ended.state == state
    assert Item.objects.get().n_leases == 0
    assert assignment_next(worker=worker) == Idle(IdleReason.EXHAUSTED)
    assert lease(other).item == item.pk
    # Idempotent: ending it again changes nothing.
    assert end(worker=worker, assignment_id=task.id).state == state
    assert Item.objects.get().n_leases == 1


def test_release_of_a_submitted_assignment_is_409():
    job, _, (worker,) = setup_job(1)
    task = lease(worker)
    assignment_submit(worker=worker, assignment_id=task.id, label="cat")

    with pytest.raises(ApplicationError) as error:
        assignment_release(worker=worker, assignment_id=task.id)

    assert (error.value.status_code, error.value.code) == (409, ErrorCode.INVALID_STATE)


def test_checkinvariants_is_clean_after_work_and_reports_corruption(capsys):
    job, items, workers = setup_job(4, workers=3)
    for worker in workers:
        for _ in range(2):
            task = lease(worker)
            assignment_submit(worker=worker, assignment_id=task.id, label="cat")
    lease(workers[0])
    call_command("checkinvariants")
    assert "ok: all invariants hold" in capsys.readouterr().out

    Item.objects.filter(pk=items[0].pk).update(n_labels=1, vote_counts={"cat": 1})
    LedgerEntry.objects.filter(pk=LedgerEntry.objects.first().pk).update(amount=Decimal("9"))

    with pytest.raises(CommandError, match="invariant violation"):
        call_command("checkinvariants")
    out = capsys.readouterr().out
    assert f"item {items[0].pk}: n_labels=1 but 3 labels" in out
    assert "crowd label credits" in out


def test_invariants_flag_a_live_lease_on_a_stopped_job():
    job, _, (worker,) = setup_job(1)
    task = lease(worker)
    Job.objects.filter(pk=job.pk).update(status="paused")

    assert invariant_violations() == [f"assignment {task.id}: live lease on paused job {job.pk}"]


def test_worker_tier_of_the_label_is_kept():
    job, _, (worker,) = setup_job(1)
    task = lease(worker)
    Worker.objects.filter(pk=worker.pk).update(tier="expert")
    worker.refresh_from_db()

    assignment_submit(worker=worker, assignment_id=task.id, label="cat")

    assert Label.objects.get().tier == "expert"
    assert invariant_violations() == []
