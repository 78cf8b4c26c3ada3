"""Submitting a label: the slot becomes a label, the decision settles the item or asks for more."""

from __future__ import annotations

import io
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.utils import timezone

from apps.assignments.leasing import Idle, IdleReason, Task
from apps.assignments.models import Assignment, Label
from apps.assignments.records import assignment_release, item_send_to_expert
from apps.assignments.selectors import invariant_violations
from apps.assignments.sweeps import lease_sweep
from apps.common.errors import ApplicationError, ErrorCode
from apps.jobs.models import Item, Job
from apps.jobs.policy import Policy
from apps.pipeline.decide import decide_by_votes
from apps.pipeline.next import assignment_next
from apps.pipeline.submit import assignment_submit
from apps.workforce.models import LedgerEntry, Worker
from apps.workforce.services import ledger_bonus
from tests.assignments.helpers import all_gold_job, lease, setup_job
from tests.workforce.factories import JobFactory, make_pool, make_worker

pytestmark = pytest.mark.django_db


def test_submit_moves_the_slot_to_a_label_and_credits_the_ledger():
    job, (item,), (worker,) = setup_job(1)
    task = lease(worker)

    result = assignment_submit(worker=worker, assignment_id=task.id, label="cat", duration_ms=1200)

    assert result.created is True
    assert (result.label.value, result.label.duration_ms, result.label.tier) == (
        "cat",
        1200,
        "crowd",
    )
    item.refresh_from_db()
    assert (item.n_leases, item.n_labels, item.vote_counts, item.state) == (
        0,
        1,
        {"cat": 1},
        "open",
    )
    entry = LedgerEntry.objects.get()
    assert (entry.worker_id, entry.job_id, entry.label_id, entry.kind, entry.amount) == (
        worker.pk,
        job.pk,
        result.label.pk,
        "label",
        Decimal("0.0500"),
    )
    assert entry.idempotency_key == f"label:{result.label.pk}"


def test_expert_labels_are_credited_at_the_expert_price():
    job, _, (expert,) = setup_job(1, tier="expert")
    task = lease(expert)

    assignment_submit(worker=expert, assignment_id=task.id, label="dog")

    assert LedgerEntry.objects.get().amount == Decimal("0.5000")


def test_repeated_submit_is_a_noop_returning_the_first_answer():
    job, _, (worker,) = setup_job(1)
    task = lease(worker)
    first = assignment_submit(worker=worker, assignment_id=task.id, label="cat")

    again = assignment_submit(worker=worker, assignment_id=task.id, label="dog")

    assert (again.created, again.label.pk, again.label.value) == (False, first.label.pk, "cat")
    assert (Label.objects.count(), LedgerEntry.objects.count()) == (1, 1)
    assert Item.objects.get().n_labels == 1


def test_submit_after_expiry_is_409_and_stores_nothing():
    job, (item,), (worker,) = setup_job(1, policy={"lease_seconds": 60})
    now = timezone.now()
    task = lease(worker, now=now)

    with pytest.raises(ApplicationError) as error:
        assignment_submit(
            worker=worker, assignment_id=task.id, label="cat", now=now + timedelta(seconds=60)
        )

    assert (error.value.status_code, error.value.code) == (409, ErrorCode.LEASE_EXPIRED)
    assert (Label.objects.count(), LedgerEntry.objects.count()) == (0, 0)
    assert Assignment.objects.get().state == "leased"


@pytest.mark.parametrize(
    ("case", "status_code", "code"),
    [
        ("foreign", 409, ErrorCode.LEASE_NOT_YOURS),
        ("bad_label", 400, ErrorCode.INVALID),
        ("released", 409, ErrorCode.INVALID_STATE),
        ("swept", 409, ErrorCode.LEASE_EXPIRED),
        ("paused_job", 409, ErrorCode.INVALID_STATE),
        ("unknown", 404, ErrorCode.NOT_FOUND),
    ],
    ids=lambda value: str(value),
)
def test_bad_submits_are_4xx_and_store_nothing(case, status_code, code):
    job, _, (worker, other) = setup_job(1, workers=2)
    task = lease(worker)
    submitter, assignment_id, label = worker, task.id, "cat"
    if case == "foreign":
        submitter = other
    elif case == "bad_label":
        label = "horse"
    elif case == "released":
        assignment_release(worker=worker, assignment_id=task.id)
    elif case == "swept":
        lease_sweep(now=timezone.now() + timedelta(days=1))
    elif case == "paused_job":
        Job.objects.filter(pk=job.pk).update(status="paused")
    elif case == "unknown":
        assignment_id = task.id + 1000

    with pytest.raises(ApplicationError) as error:
        assignment_submit(worker=submitter, assignment_id=assignment_id, label=label)

    assert (error.value.status_code, error.value.code) == (status_code, code)
    assert (Label.objects.count(), LedgerEntry.objects.count()) == (0, 0)
    assert Item.objects.get().n_labels == 0


def test_majority_settles_the_item_with_agreement():
    job, (item,), workers = setup_job(1, workers=3)
    for worker, value in zip(workers, ["cat", "dog", "cat"], strict=True):
        assignment_submit(worker=worker, assignment_id=lease(worker).id, label=value)

    item.refresh_from_db()
    assert (item.state, item.label, item.source, item.n_labels) == ("settled", "cat", "crowd", 3)
    assert item.agreement == pytest.approx(2 / 3)
    assert item.posterior == pytest.approx([2 / 3, 1 / 3, 0.0])
    assert item.settled_at is not None


def test_a_tie_asks_for_one_more_label_then_settles():
    job, (item,), workers = setup_job(1, workers=3, policy={"min_labels": 2, "max_labels": 3})
    for worker, value in zip(workers[:2], ["cat", "dog"], strict=True):
        assignment_submit(worker=worker, assignment_id=lease(worker).id, label=value)
    item.refresh_from_db()
    assert (item.state, item.labels_needed) == ("open", 3)

    assignment_submit(worker=workers[2], assignment_id=lease(workers[2]).id, label="dog")

    item.refresh_from_db()
    assert (item.state, item.label, item.labels_needed) == ("settled", "dog", 3)


def test_a_tie_at_max_labels_goes_to_review():
    job, (item,), workers = setup_job(1, workers=2, policy={"min_labels": 2, "max_labels": 2})
    for worker, value in zip(workers, ["cat", "dog"], strict=True):
        assignment_submit(worker=worker, assignment_id=lease(worker).id, label=value)

    item.refresh_from_db()
    assert (item.state, item.label, item.labels_needed, item.agreement) == ("review", None, 2, 0.5)


@pytest.mark.parametrize(
    ("votes", "n", "needed", "state", "label", "new_needed"),
    [
        ({"cat": 1}, 1, 3, "open", None, 3),
        ({"cat": 2, "dog": 1}, 3, 3, "settled", "cat", 3),
        ({"cat": 1, "dog": 1}, 2, 2, "open", None, 3),
        ({"cat": 2, "dog": 2}, 4, 4, "review", None, 4),
        ({"cat": 1}, 1, 1, "open", None, 2),
    ],
    ids=["waiting", "majority", "tie", "tie_at_max", "under_min"],
)
def test_decide_by_votes(votes, n, needed, state, label, new_needed):
    decision = decide_by_votes(
        vote_counts=votes,
        n_labels=n,
        labels_needed=needed,
        classes=["cat", "dog"],
        policy=Policy(min_labels=2, max_labels=4),
    )

    assert (decision.state, decision.label, decision.labels_needed) == (state, label, new_needed)


def test_the_job_completes_when_every_non_gold_item_is_settled(django_capture_on_commit_callbacks):
    job, items, workers = setup_job(1, workers=3, gold=["cat"], policy={"gold_rate": 0.0})
    for worker in workers[:2]:
        assignment_submit(worker=worker, assignment_id=lease(worker).id, label="bird")
    job.refresh_from_db()
    assert job.status == "running"

    with django_capture_on_commit_callbacks(execute=True):
        assignment_submit(worker=workers[2], assignment_id=lease(workers[2]).id, label="bird")

    job.refresh_from_db()
    assert job.status == "completed"
    assert job.completed_at is not None


def test_gold_labels_are_scored_and_not_decided():
    job, worker = all_gold_job(1)

    task = lease(worker)
    label = assignment_submit(worker=worker, assignment_id=task.id, label="dog").label

    assert (label.is_gold, label.is_correct) == (True, False)
    gold = Item.objects.get(gold_label="cat")
    assert (gold.state, gold.n_labels, gold.n_leases) == ("open", 1, 0)


def test_experts_get_items_the_crowd_could_not_settle_and_settle_them():
    job, items, (crowd,) = setup_job(2)
    expert = make_worker(tier="expert")
    make_pool(jobs=[job], workers=[expert])
    item_send_to_expert(item_id=items[1].pk)

    assert isinstance(assignment_next(worker=crowd), Task)
    assert assignment_next(worker=crowd) == Idle(IdleReason.EXHAUSTED)
    task = lease(expert)
    assert task.item == items[1].pk
    assignment_submit(worker=expert, assignment_id=task.id, label="bird")

    settled = Item.objects.get(pk=items[1].pk)
    assert (settled.state, settled.label, settled.source, settled.confidence) == (
        "settled",
        "bird",
        "expert",
        1.0,
    )


def test_bonus_is_credited_once_per_idempotency_key():
    job, _, (worker,) = setup_job(1)
    assignment_submit(worker=worker, assignment_id=lease(worker).id, label="cat")  # work to pay

    first, created = ledger_bonus(
        worker=worker, job=job, amount=Decimal("2.5"), idempotency_key="w1"
    )
    again, created_again = ledger_bonus(
        worker=worker, job=job, amount=Decimal("2.5"), idempotency_key="w1"
    )

    assert (created, created_again, again.pk) == (True, False, first.pk)
    assert LedgerEntry.objects.filter(kind="bonus").count() == 1
    with pytest.raises(ApplicationError) as error:
        ledger_bonus(worker=worker, job=job, amount=Decimal("3"), idempotency_key="w1")
    assert error.value.status_code == 409


@pytest.mark.django_db(transaction=True)
def test_simulate_drives_a_job_to_completion_through_the_services():
    job = JobFactory(policy={"min_labels": 3, "max_labels": 5, "gold_rate": 0.1})
    Item.objects.bulk_create(
        [Item(job=job, external_id=f"t{i}", payload={"truth": "dog"}) for i in range(30)]
        + [Item(job=job, external_id=f"g{i}", payload={}, gold_label="cat") for i in range(5)]
    )
    out = io.StringIO()

    call_command(
        "simulate", str(job.pk), "--workers", "8", "--seconds", "60", "--seed", "3", stdout=out
    )

    job.refresh_from_db()
    states = set(Item.objects.filter(gold_label__isnull=True).values_list("state", flat=True))
    # Every item got its labels; ties the crowd could not break wait for QC review.
    assert states <= {"settled", "review"}
    assert job.status == ("running" if "review" in states else "completed")
    assert f"done: job {job.pk} is {job.status}" in out.getvalue()
    assert Worker.objects.filter(user__username__startswith="sim-").count() == 8
    assert invariant_violations() == []
