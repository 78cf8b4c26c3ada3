"""Bans and suspensions: the worker stops getting work and loses their leases."""

from __future__ import annotations

import pytest

from apps.assignments.leasing import Idle, IdleReason, Task
from apps.assignments.models import Assignment
from apps.jobs.models import Item
from apps.pipeline.crowd import worker_ban, worker_suspend, worker_unban
from apps.pipeline.next import assignment_next
from apps.workforce.models import Worker
from tests.assignments.helpers import lease, setup_job
from tests.workforce.factories import JobFactory, make_items, make_pool, make_worker

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("action", "reason"),
    [(worker_ban, IdleReason.WORKER_BANNED), (worker_suspend, IdleReason.WORKER_SUSPENDED)],
    ids=["banned", "suspended"],
)
def test_banned_and_suspended_workers_get_nothing_and_lose_their_leases(action, reason):
    job, _, (worker,) = setup_job(2)
    task = lease(worker)

    worker = action(worker=worker, reason="spam")

    assert assignment_next(worker=worker) == Idle(reason)
    assert Assignment.objects.get(pk=task.id).state == "released"
    assert Item.objects.filter(n_leases__gt=0).count() == 0
    assert isinstance(assignment_next(worker=worker_unban(worker=worker)), Task)


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
