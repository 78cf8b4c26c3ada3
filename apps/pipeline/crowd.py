"""A worker's standing, with what it implies for their work: a banned or suspended worker's
live leases give their slots back at once, in the same transaction."""

from __future__ import annotations

from django.db import transaction

from apps.assignments.sweeps import worker_leases_release
from apps.workforce import services as workforce
from apps.workforce.models import Worker


def worker_ban(*, worker: Worker, reason: str = "") -> Worker:
    """Ban the worker: no more tasks or submits, live leases returned at once."""
    with transaction.atomic():
        worker = workforce.worker_ban(worker=worker, reason=reason)
        worker_leases_release(worker_id=worker.pk)
    return worker


def worker_suspend(*, worker: Worker, reason: str = "") -> Worker:
    """Suspend the worker (a temporary stop): no more tasks, live leases returned at once."""
    with transaction.atomic():
        worker = workforce.worker_suspend(worker=worker, reason=reason)
        worker_leases_release(worker_id=worker.pk)
    return worker


def worker_unban(*, worker: Worker) -> Worker:
    """Make a banned or suspended worker active again."""
    return workforce.worker_unban(worker=worker)
