"""The assignment engine's rules, exercised through its services."""

from __future__ import annotations

import io
import random
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command
from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.assignments.leasing import Idle, IdleReason, Task
from apps.assignments.models import Assignment, Label
from apps.assignments.records import assignment_release, assignment_skip, item_send_to_expert
from apps.assignments.selectors import invariant_violations
from apps.assignments.sweeps import job_leases_release, lease_sweep
from apps.common.errors import ApplicationError, ErrorCode
from apps.jobs.models import Item, Job
from apps.jobs.policy import Policy
from apps.pipeline.crowd import worker_ban, worker_suspend, worker_unban
from apps.pipeline.decide import decide_by_votes
from apps.pipeline.next import assignment_next
from apps.pipeline.submit import assignment_submit
from apps.workforce.models import LedgerEntry, Worker
from apps.workforce.services import ledger_bonus
from tests.workforce.factories import JobFactory, make_items, make_pool, make_worker

pytestmark = pytest.mark.django_db


def _setup(n_items=3, *, workers=1, policy=None, tier="crowd", **item_kwargs):
    job = JobFactory(
        policy={
            "min_labels": 3,
            "max_labels": 5,
            "gold_rate": 0.0,
            "aggregation": "mv",
            **(policy or {}),
        }
    )
    items = make_items(job, n_items, **item_kwargs)
    crowd = [make_worker(tier=tier) for _ in range(workers)]
    make_pool(jobs=[job], workers=crowd)
    return job, items, crowd


def _next(worker, **kwargs) -> Task:
    task = assignment_next(worker=worker, **kwargs)
    assert isinstance(task, Task), task
    return task


def test_next_leases_highest_priority_first_then_fifo():
    job, items, (worker,) = _setup(4, priorities=[0.0, 5.0, 5.0, 1.0])

    order = [_next(worker).item for _ in range(4)]

    assert order == [items[1].pk, items[2].pk, items[3].pk, items[0].pk]


def test_next_returns_the_task_and_counts_the_lease():
    job, (item,), (worker,) = _setup(1)
    now = timezone.now()

    task = assignment_next(worker=worker, now=now)

    assert task == Task(
        id=task.id,
        job=job.pk,
        item=item.pk,
        external_id="it-0",
        payload={"text": "item 0"},
        classes=["cat", "dog", "bird"],
        instructions="Pick the animal.",
        prelabel=None,
        expires_at=now + timedelta(seconds=600),
        label_schema={"kind": "single_choice", "classes": ["cat", "dog", "bird"]},
    )
    item.refresh_from_db()
    assert (item.n_leases, item.n_labels) == (1, 0)
    assert Assignment.objects.get(pk=task.id).state == "leased"


def test_prelabel_is_shown_when_the_policy_asks_for_it():
    job, (item,), (worker,) = _setup(1, policy={"show_prelabel": True})
    Item.objects.filter(pk=item.pk).update(prediction=[0.1, 0.7, 0.2])

    assert _next(worker).prelabel == "dog"


def test_submit_moves_the_slot_to_a_label_and_credits_the_ledger():
    job, (item,), (worker,) = _setup(1)
    task = _next(worker)

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
    job, _, (expert,) = _setup(1, tier="expert")
    task = _next(expert)

    assignment_submit(worker=expert, assignment_id=task.id, label="dog")

    assert LedgerEntry.objects.get().amount == Decimal("0.5000")


def test_repeated_submit_is_a_noop_returning_the_first_answer():
    job, _, (worker,) = _setup(1)
    task = _next(worker)
    first = assignment_submit(worker=worker, assignment_id=task.id, label="cat")

    again = assignment_submit(worker=worker, assignment_id=task.id, label="dog")

    assert (again.created, again.label.pk, again.label.value) == (False, first.label.pk, "cat")
    assert (Label.objects.count(), LedgerEntry.objects.count()) == (1, 1)
    assert Item.objects.get().n_labels == 1


def test_a_worker_never_gets_the_same_item_twice():
    job, _, (worker,) = _setup(1)
    task = _next(worker)
    assignment_submit(worker=worker, assignment_id=task.id, label="cat")

    assert assignment_next(worker=worker) == Idle(IdleReason.EXHAUSTED)


def test_the_database_refuses_a_second_assignment_of_an_item_to_a_worker():
    job, (item,), (worker,) = _setup(1)
    task = _next(worker)
    now = timezone.now()

    with pytest.raises(IntegrityError), transaction.atomic():
        Assignment.objects.create(
            item=item, job=job, worker=worker, leased_at=now, expires_at=now + timedelta(seconds=5)
        )
    assert Assignment.objects.filter(pk=task.id).count() == 1


def test_the_database_refuses_a_lease_over_the_label_budget():
    job, (item,), _ = _setup(1)

    with pytest.raises(IntegrityError), transaction.atomic():
        Item.objects.filter(pk=item.pk).update(n_leases=2, n_labels=2)


def test_items_never_get_more_leases_than_they_need():
    job, (item,), workers = _setup(1, workers=3, labels_needed=2)
    now = timezone.now()
    _next(workers[0], now=now)
    _next(workers[1], now=now)

    idle = assignment_next(worker=workers[2], now=now)

    assert idle == Idle(IdleReason.ALL_LEASED, retry_after=60)
    assert Item.objects.get().n_leases == 2


def test_all_leased_retry_after_is_the_time_to_the_first_expiry():
    job, _, workers = _setup(1, workers=2, labels_needed=1, policy={"lease_seconds": 30})
    now = timezone.now()
    _next(workers[0], now=now)

    idle = assignment_next(worker=workers[1], now=now + timedelta(seconds=20))

    assert idle == Idle(IdleReason.ALL_LEASED, retry_after=11)


def test_an_expired_lease_is_reissued_lazily_when_work_is_asked_for():
    job, (item,), (first, second) = _setup(
        1, workers=2, labels_needed=1, policy={"lease_seconds": 60}
    )
    now = timezone.now()
    lapsed = _next(first, now=now)

    task = assignment_next(worker=second, now=now + timedelta(seconds=61))

    assert isinstance(task, Task)
    assert task.item == item.pk
    assert Assignment.objects.get(pk=lapsed.id).state == "expired"
    assert Item.objects.get().n_leases == 1


def test_submit_after_expiry_is_409_and_stores_nothing():
    job, (item,), (worker,) = _setup(1, policy={"lease_seconds": 60})
    now = timezone.now()
    task = _next(worker, now=now)

    with pytest.raises(ApplicationError) as error:
        assignment_submit(
            worker=worker, assignment_id=task.id, label="cat", now=now + timedelta(seconds=60)
        )

    assert (error.value.status_code, error.value.code) == (409, ErrorCode.LEASE_EXPIRED)
    assert (Label.objects.count(), LedgerEntry.objects.count()) == (0, 0)
    assert Assignment.objects.get().state == "leased"


def test_lease_sweep_expires_lapsed_leases_and_returns_their_slots():
    job, items, (worker,) = _setup(2, policy={"lease_seconds": 60})
    now = timezone.now()
    first = _next(worker, now=now)
    second = _next(worker, now=now + timedelta(seconds=30))

    swept = lease_sweep(now=now + timedelta(seconds=61))

    assert swept == 1
    assert Assignment.objects.get(pk=first.id).state == "expired"
    assert Assignment.objects.get(pk=second.id).state == "leased"
    assert [i.n_leases for i in Item.objects.order_by("id")] == [0, 1]
    assert lease_sweep(now=now + timedelta(seconds=61)) == 0


def test_lease_sweep_releases_leases_on_jobs_that_stopped_running():
    job, _, (worker,) = _setup(1)
    task = _next(worker)
    Job.objects.filter(pk=job.pk).update(status="paused")

    assert lease_sweep() == 1
    assert Assignment.objects.get(pk=task.id).state == "released"
    assert Item.objects.get().n_leases == 0
    assert invariant_violations() == []


def test_job_leases_release_returns_every_slot_of_the_job():
    job, _, workers = _setup(2, workers=2)
    for worker in workers:
        _next(worker)
    Job.objects.filter(pk=job.pk).update(status="cancelled")

    assert job_leases_release(job_id=job.pk) == 2
    assert set(Item.objects.values_list("n_leases", flat=True)) == {0}


@pytest.mark.parametrize(
    ("end", "state"),
    [(assignment_release, "released"), (assignment_skip, "skipped")],
    ids=["release", "skip"],
)
def test_release_and_skip_return_the_slot_to_others_but_not_to_the_worker(end, state):
    job, (item,), (worker, other) = _setup(1, workers=2, labels_needed=1)
    task = _next(worker)

    ended = end(worker=worker, assignment_id=task.id)

    assert ended.state == state
    assert Item.objects.get().n_leases == 0
    assert assignment_next(worker=worker) == Idle(IdleReason.EXHAUSTED)
    assert _next(other).item == item.pk
    # Idempotent: ending it again changes nothing.
    assert end(worker=worker, assignment_id=task.id).state == state
    assert Item.objects.get().n_leases == 1


def test_release_of_a_submitted_assignment_is_409():
    job, _, (worker,) = _setup(1)
    task = _next(worker)
    assignment_submit(worker=worker, assignment_id=task.id, label="cat")

    with pytest.raises(ApplicationError) as error:
        assignment_release(worker=worker, assignment_id=task.id)

    assert (error.value.status_code, error.value.code) == (409, ErrorCode.INVALID_STATE)


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
    job, _, (worker, other) = _setup(1, workers=2)
    task = _next(worker)
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


def test_per_worker_cap():
    job, _, (worker,) = _setup(5, policy={"max_items_per_worker": 2})
    first = _next(worker)
    _next(worker)

    assert assignment_next(worker=worker) == Idle(IdleReason.CAP_REACHED)
    # A released task no longer counts against the cap.
    assignment_release(worker=worker, assignment_id=first.id)
    assert isinstance(assignment_next(worker=worker), Task)


def test_idle_when_no_running_job_is_open_to_the_worker():
    job, _, (member,) = _setup(1)
    outsider = make_worker()

    assert assignment_next(worker=outsider) == Idle(IdleReason.NO_OPEN_JOB, retry_after=60)
    Job.objects.filter(pk=job.pk).update(status="paused")
    assert assignment_next(worker=member) == Idle(IdleReason.NO_OPEN_JOB, retry_after=60)


def test_idle_for_a_job_filter_outside_the_pools():
    job, _, (worker,) = _setup(1)
    other_job = JobFactory()
    make_items(other_job, 1)

    assert assignment_next(worker=worker, job_id=other_job.pk) == Idle(
        IdleReason.NO_OPEN_JOB, retry_after=60
    )
    assert _next(worker, job_id=job.pk).job == job.pk


@pytest.mark.parametrize(
    ("action", "reason"),
    [(worker_ban, IdleReason.WORKER_BANNED), (worker_suspend, IdleReason.WORKER_SUSPENDED)],
    ids=["banned", "suspended"],
)
def test_banned_and_suspended_workers_get_nothing_and_lose_their_leases(action, reason):
    job, _, (worker,) = _setup(2)
    task = _next(worker)

    worker = action(worker=worker, reason="spam")

    assert assignment_next(worker=worker) == Idle(reason)
    assert Assignment.objects.get(pk=task.id).state == "released"
    assert Item.objects.filter(n_leases__gt=0).count() == 0
    assert isinstance(assignment_next(worker=worker_unban(worker=worker)), Task)


def test_majority_settles_the_item_with_agreement():
    job, (item,), workers = _setup(1, workers=3)
    for worker, value in zip(workers, ["cat", "dog", "cat"], strict=True):
        assignment_submit(worker=worker, assignment_id=_next(worker).id, label=value)

    item.refresh_from_db()
    assert (item.state, item.label, item.source, item.n_labels) == ("settled", "cat", "crowd", 3)
    assert item.agreement == pytest.approx(2 / 3)
    assert item.posterior == pytest.approx([2 / 3, 1 / 3, 0.0])
    assert item.settled_at is not None


def test_a_tie_asks_for_one_more_label_then_settles():
    job, (item,), workers = _setup(1, workers=3, policy={"min_labels": 2, "max_labels": 3})
    for worker, value in zip(workers[:2], ["cat", "dog"], strict=True):
        assignment_submit(worker=worker, assignment_id=_next(worker).id, label=value)
    item.refresh_from_db()
    assert (item.state, item.labels_needed) == ("open", 3)

    assignment_submit(worker=workers[2], assignment_id=_next(workers[2]).id, label="dog")

    item.refresh_from_db()
    assert (item.state, item.label, item.labels_needed) == ("settled", "dog", 3)


def test_a_tie_at_max_labels_goes_to_review():
    job, (item,), workers = _setup(1, workers=2, policy={"min_labels": 2, "max_labels": 2})
    for worker, value in zip(workers, ["cat", "dog"], strict=True):
        assignment_submit(worker=worker, assignment_id=_next(worker).id, label=value)

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
    job, items, workers = _setup(1, workers=3, gold=["cat"], policy={"gold_rate": 0.0})
    for worker in workers[:2]:
        assignment_submit(worker=worker, assignment_id=_next(worker).id, label="bird")
    job.refresh_from_db()
    assert job.status == "running"

    with django_capture_on_commit_callbacks(execute=True):
        assignment_submit(worker=workers[2], assignment_id=_next(workers[2]).id, label="bird")

    job.refresh_from_db()
    assert job.status == "completed"
    assert job.completed_at is not None


@pytest.mark.parametrize(
    ("new_factor", "rate"),
    [
        pytest.param(1.0, 0.2, id="the-jobs-rate"),
        # A worker with no gold answers yet gets more gold (adaptive rate, apps.quality).
        pytest.param(2.0, 0.4, id="new-worker-double"),
    ],
)
def test_gold_is_mixed_in_at_the_rate_and_never_twice_per_worker(new_factor, rate):
    job = JobFactory(
        policy={
            "min_labels": 1,
            "max_labels": 1,
            "gold_rate": 0.2,
            "gold_new_factor": new_factor,
            "aggregation": "mv",
        }
    )
    make_items(job, 400, gold=["cat"] * 150)
    worker = make_worker()
    make_pool(jobs=[job], workers=[worker])
    rng = random.Random(7)

    tasks = [assignment_next(worker=worker, rng=rng) for _ in range(300)]

    gold = Assignment.objects.filter(worker=worker, is_gold=True)
    assert all(isinstance(task, Task) for task in tasks)
    # 300 draws at p: +-3 sd (p=0.2: 60 +- 21; p=0.4: 120 +- 25).
    mean, sd = 300 * rate, (300 * rate * (1 - rate)) ** 0.5
    assert mean - 3 * sd <= gold.count() <= mean + 3 * sd
    assert gold.values("item_id").distinct().count() == gold.count()


def test_gold_labels_are_scored_and_not_decided():
    job = JobFactory(
        policy={"min_labels": 1, "max_labels": 1, "gold_rate": 1.0, "aggregation": "mv"}
    )
    make_items(job, 1, gold=["cat"])
    worker = make_worker()
    make_pool(jobs=[job], workers=[worker])

    task = _next(worker)
    label = assignment_submit(worker=worker, assignment_id=task.id, label="dog").label

    assert (label.is_gold, label.is_correct) == (True, False)
    gold = Item.objects.get(gold_label="cat")
    assert (gold.state, gold.n_labels, gold.n_leases) == ("open", 1, 0)


def test_no_gold_once_real_work_is_exhausted():
    job = JobFactory(
        policy={"min_labels": 1, "max_labels": 1, "gold_rate": 1.0, "aggregation": "mv"}
    )
    make_items(job, 0, gold=["cat"])
    worker = make_worker()
    make_pool(jobs=[job], workers=[worker])

    assert assignment_next(worker=worker) == Idle(IdleReason.EXHAUSTED)


def test_experts_get_items_the_crowd_could_not_settle_and_settle_them():
    job, items, (crowd,) = _setup(2)
    expert = make_worker(tier="expert")
    make_pool(jobs=[job], workers=[expert])
    item_send_to_expert(item_id=items[1].pk)

    assert isinstance(assignment_next(worker=crowd), Task)
    assert assignment_next(worker=crowd) == Idle(IdleReason.EXHAUSTED)
    task = _next(expert)
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
    job, _, (worker,) = _setup(1)
    assignment_submit(worker=worker, assignment_id=_next(worker).id, label="cat")  # work to pay

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


def test_checkinvariants_is_clean_after_work_and_reports_corruption(capsys):
    job, items, workers = _setup(4, workers=3)
    for worker in workers:
        for _ in range(2):
            task = _next(worker)
            assignment_submit(worker=worker, assignment_id=task.id, label="cat")
    _next(workers[0])
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
    job, _, (worker,) = _setup(1)
    task = _next(worker)
    Job.objects.filter(pk=job.pk).update(status="paused")

    assert invariant_violations() == [f"assignment {task.id}: live lease on paused job {job.pk}"]


def test_worker_tier_of_the_label_is_kept():
    job, _, (worker,) = _setup(1)
    task = _next(worker)
    Worker.objects.filter(pk=worker.pk).update(tier="expert")
    worker.refresh_from_db()

    assignment_submit(worker=worker, assignment_id=task.id, label="cat")

    assert Label.objects.get().tier == "expert"
    assert invariant_violations() == []


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


def test_a_worker_suspended_since_their_credentials_were_read_is_told_so():
    """The lease reads the worker's status from the database; a stale worker object (the
    request's credentials, or a suspension by the worker's own last label) gets the real
    reason, not "all leased" forever."""

    job = JobFactory()
    make_items(job, 2)
    worker = make_worker()
    make_pool(jobs=[job], workers=[worker])
    Worker.objects.filter(pk=worker.pk).update(status=Worker.Status.SUSPENDED)

    idle = assignment_next(worker=worker)  # worker.status still says active

    assert idle == Idle(IdleReason.WORKER_SUSPENDED)
