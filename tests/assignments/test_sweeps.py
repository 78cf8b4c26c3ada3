"""Sweeps: lapsed leases and leases of stopped jobs come back."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.assignments.models import Assignment
from apps.assignments.selectors import invariant_violations
from apps.assignments.sweeps import job_leases_release, lease_sweep
from apps.jobs.models import Item, Job
from tests.assignments.helpers import lease, setup_job

pytestmark = pytest.mark.django_db


def test_lease_sweep_expires_lapsed_leases_and_returns_their_slots():
    job, items, (worker,) = setup_job(2, policy={"lease_seconds": 60})
    now = timezone.now()
    first = lease(worker, now=now)
    second = lease(worker, now=now + timedelta(seconds=30))

    swept = lease_sweep(now=now + timedelta(seconds=61))

    assert swept == 1
    assert Assignment.objects.get(pk=first.id).state == "expired"
    assert Assignment.objects.get(pk=second.id).state == "leased"
    assert [i.n_leases for i in Item.objects.order_by("id")] == [0, 1]
    assert lease_sweep(now=now + timedelta(seconds=61)) == 0


def test_lease_sweep_releases_leases_on_jobs_that_stopped_running():
    job, _, (worker,) = setup_job(1)
    task = lease(worker)
    Job.objects.filter(pk=job.pk).update(status="paused")

    assert lease_sweep() == 1
    assert Assignment.objects.get(pk=task.id).state == "released"
    assert Item.objects.get().n_leases == 0
    assert invariant_violations() == []


def test_job_leases_release_returns_every_slot_of_the_job():
    job, _, workers = setup_job(2, workers=2)
    for worker in workers:
        lease(worker)
    Job.objects.filter(pk=job.pk).update(status="cancelled")

    assert job_leases_release(job_id=job.pk) == 2
    assert set(Item.objects.values_list("n_leases", flat=True)) == {0}
