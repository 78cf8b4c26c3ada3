"""Leasing: which item a worker gets, how many leases an item holds, when a worker is idle."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from django.utils import timezone

from apps.assignments.leasing import Idle, IdleReason, Task
from apps.assignments.models import Assignment
from apps.assignments.records import assignment_release
from apps.jobs.models import Item, Job
from apps.pipeline.next import assignment_next
from apps.pipeline.submit import assignment_submit
from tests.assignments.helpers import all_gold_job, lease, setup_job
from tests.workforce.factories import JobFactory, make_items, make_pool, make_worker

pytestmark = pytest.mark.django_db


def test_next_leases_highest_priority_first_then_fifo():
    job, items, (worker,) = setup_job(4, priorities=[0.0, 5.0, 5.0, 1.0])

    order = [lease(worker).item for _ in range(4)]

    assert order == [items[1].pk, items[2].pk, items[3].pk, items[0].pk]


def test_next_returns_the_task_and_counts_the_lease():
    job, (item,), (worker,) = setup_job(1)
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
    job, (item,), (worker,) = setup_job(1, policy={"show_prelabel": True})
    Item.objects.filter(pk=item.pk).update(prediction=[0.1, 0.7, 0.2])

    assert lease(worker).prelabel == "dog"


def test_a_worker_never_gets_the_same_item_twice():
    job, _, (worker,) = setup_job(1)
    task = lease(worker)
    assignment_submit(worker=worker, assignment_id=task.id, label="cat")

    assert assignment_next(worker=worker) == Idle(IdleReason.EXHAUSTED)


def test_items_never_get_more_leases_than_they_need():
    job, (item,), workers = setup_job(1, workers=3, labels_needed=2)
    now = timezone.now()
    lease(workers[0], now=now)
    lease(workers[1], now=now)

    idle = assignment_next(worker=workers[2], now=now)

    assert idle == Idle(IdleReason.ALL_LEASED, retry_after=60)
    assert Item.objects.get().n_leases == 2


def test_all_leased_retry_after_is_the_time_to_the_first_expiry():
    job, _, workers = setup_job(1, workers=2, labels_needed=1, policy={"lease_seconds": 30})
    now = timezone.now()
    lease(workers[0], now=now)

    idle = assignment_next(worker=workers[1], now=now + timedelta(seconds=20))

    assert idle == Idle(IdleReason.ALL_LEASED, retry_after=11)


def test_an_expired_lease_is_reissued_lazily_when_work_is_asked_for():
    job, (item,), (first, second) = setup_job(
        1, workers=2, labels_needed=1, policy={"lease_seconds": 60}
    )
    now = timezone.now()
    lapsed = lease(first, now=now)

    task = assignment_next(worker=second, now=now + timedelta(seconds=61))

    assert isinstance(task, Task)
    assert task.item == item.pk
    assert Assignment.objects.get(pk=lapsed.id).state == "expired"
    assert Item.objects.get().n_leases == 1


def test_per_worker_cap():
    job, _, (worker,) = setup_job(5, policy={"max_items_per_worker": 2})
    first = lease(worker)
    lease(worker)

    assert assignment_next(worker=worker) == Idle(IdleReason.CAP_REACHED)
    # A released task no longer counts against the cap.
    assignment_release(worker=worker, assignment_id=first.id)
    assert isinstance(assignment_next(worker=worker), Task)


def test_idle_when_no_running_job_is_open_to_the_worker():
    job, _, (member,) = setup_job(1)
    outsider = make_worker()

    assert assignment_next(worker=outsider) == Idle(IdleReason.NO_OPEN_JOB, retry_after=60)
    Job.objects.filter(pk=job.pk).update(status="paused")
    assert assignment_next(worker=member) == Idle(IdleReason.NO_OPEN_JOB, retry_after=60)


def test_idle_for_a_job_filter_outside_the_pools():
    job, _, (worker,) = setup_job(1)
    other_job = JobFactory()
    make_items(other_job, 1)

    assert assignment_next(worker=worker, job_id=other_job.pk) == Idle(
        IdleReason.NO_OPEN_JOB, retry_after=60
    )
    assert lease(worker, job_id=job.pk).job == job.pk


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


def test_no_gold_once_real_work_is_exhausted():
    job, worker = all_gold_job(0)

    assert assignment_next(worker=worker) == Idle(IdleReason.EXHAUSTED)
