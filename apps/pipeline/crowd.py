"""A worker's standing, with what it implies for their work: a banned or suspended worker's
live leases give their slots back at once, in the same transaction; a worker the job's
quality rules suspend also has the items their labels settled decided again without them
(apps.pipeline.reconsider)."""

from __future__ import annotations

from django.db import transaction

from apps.assignments.sweeps import worker_leases_release
from apps.jobs.models import Job
from apps.pipeline.reconsider import items_reconsider_without
from apps.quality.models import QualityDecision
from apps.quality.rules import worker_rules_verdict
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


def worker_rules_check(*, worker_id: int, job_id: int) -> QualityDecision | None:
    """Apply the job's rules to one worker (apps.quality.rules.worker_rules_verdict): on a
    verdict, suspend them, record why, and reconsider the items their labels settled."""
    job = Job.objects.get(pk=job_id)
    worker = Worker.objects.get(pk=worker_id)
    verdict = worker_rules_verdict(worker=worker, job=job)
    if verdict is None:
        return None
    reason, details = verdict
    return worker_quality_suspend(worker=worker, job=job, reason=reason, details=details)


def worker_quality_suspend(
    *, worker: Worker, job: Job, reason: str, details: dict
) -> QualityDecision:
    """Suspend a worker for a quality reason, record why, and decide again what their
    labels helped settle (items no longer settled go back to the queue, recorded too)."""
    with transaction.atomic():
        worker = worker_suspend(worker=worker, reason=f"quality: {reason}")
        decision = QualityDecision.objects.create(
            worker=worker,
            job=job,
            action=QualityDecision.Action.SUSPEND,
            reason=reason,
            details=details,
        )
        reopened = items_reconsider_without(worker_id=worker.pk, job=job)
        if reopened:
            QualityDecision.objects.create(
                worker=worker,
                job=job,
                action=QualityDecision.Action.REOPEN,
                reason=reason,
                details={"items": reopened[:500], "count": len(reopened)},
            )
    return decision
