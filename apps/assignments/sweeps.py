"""Lease sweeps: lapsed leases, the leases of stopped jobs and of workers who may no longer
work give their slots back."""

from __future__ import annotations

from datetime import datetime

from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from apps.assignments.models import Assignment
from apps.common.retry import retry_on_deadlock
from apps.jobs.models import Item, Job


@retry_on_deadlock
def _leases_end(*, assignment_filter: Q, to_state: str, now: datetime, limit: int) -> int:
    """End the live leases matching the filter and return their slots; returns how many.

    Locks assignments first, then items in id order: the same order as submit and release,
    so sweeps and annotators never deadlock. Leases being submitted right now are skipped.
    """
    with transaction.atomic():
        rows = list(
            Assignment.objects.filter(assignment_filter, state=Assignment.State.LEASED)
            .select_for_update(skip_locked=True, of=("self",))
            .order_by("id")
            .values_list("id", "item_id")[:limit]
        )
        if not rows:
            return 0
        per_item: dict[int, int] = {}
        for _, item_id in rows:
            per_item[item_id] = per_item.get(item_id, 0) + 1
        Assignment.objects.filter(pk__in=[pk for pk, _ in rows]).update(
            state=to_state, finished_at=now
        )
        list(
            Item.objects.filter(pk__in=list(per_item))
            .select_for_update()
            .order_by("id")
            .values_list("id", flat=True)
        )
        by_count: dict[int, list[int]] = {}
        for item_id, count in per_item.items():
            by_count.setdefault(count, []).append(item_id)
        for count, item_ids in by_count.items():
            Item.objects.filter(pk__in=item_ids).update(n_leases=F("n_leases") - count)
    return len(rows)


def lease_sweep(
    *, job_id: int | None = None, now: datetime | None = None, limit: int = 5000
) -> int:
    """Expire lapsed leases and release leases on jobs that stopped running; returns how many.

    Safe to run concurrently and repeatedly (Celery beat runs it every minute; the engine
    also runs it for one job when a worker finds nothing free).
    """
    now = now or timezone.now()
    scope = Q(job_id=job_id) if job_id is not None else Q()
    ended = _leases_end(
        assignment_filter=scope & Q(expires_at__lte=now),
        to_state=Assignment.State.EXPIRED,
        now=now,
        limit=limit,
    )
    if job_id is None:
        ended += _leases_end(
            assignment_filter=~Q(job__status=Job.Status.RUNNING),
            to_state=Assignment.State.RELEASED,
            now=now,
            limit=limit,
        )
    return ended


def job_leases_release(*, job_id: int, now: datetime | None = None) -> int:
    """Release every live lease of a job: call when it is paused, cancelled or completed."""
    now = now or timezone.now()
    total = 0
    while ended := _leases_end(
        assignment_filter=Q(job_id=job_id), to_state=Assignment.State.RELEASED, now=now, limit=5000
    ):
        total += ended
    return total


def worker_leases_release(*, worker_id: int, now: datetime | None = None) -> int:
    """Release every live lease of a worker: call when the worker is suspended or banned."""
    now = now or timezone.now()
    return _leases_end(
        assignment_filter=Q(worker_id=worker_id),
        to_state=Assignment.State.RELEASED,
        now=now,
        limit=100000,
    )
