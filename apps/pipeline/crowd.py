"""A worker's standing, with what it implies for their work: a banned or suspended worker's
live leases give their slots back at once, in the same transaction, and the items their
labels helped settle are decided again without them (apps.pipeline.reconsider): in the job
whose quality rules suspended them at once, in every running or paused job after an ops ban
or suspension (a task)."""

from __future__ import annotations

from django.db import transaction

from apps.assignments.models import Label
from apps.assignments.sweeps import worker_leases_release
from apps.common.tasks import enqueue_on_commit
from apps.jobs.models import Job
from apps.pipeline.reconsider import items_reconsider_without
from apps.quality.matrices import INACTIVE
from apps.quality.models import QualityDecision
from apps.quality.rules import worker_rules_verdict
from apps.workforce import services as workforce
from apps.workforce.models import Worker


def worker_ban(*, worker: Worker, reason: str = "") -> Worker:
    """Ban the worker: no more tasks or submits, live leases returned at once, and the items
    their labels helped settle in running or paused jobs decided again without them (after
    commit, a task: `worker_items_reconsider`)."""
    with transaction.atomic():
        worker = workforce.worker_ban(worker=worker, reason=reason)
        worker_leases_release(worker_id=worker.pk)
        enqueue_on_commit("quality.worker_items_reconsider", worker.pk)
    return worker


def worker_suspend(*, worker: Worker, reason: str = "") -> Worker:
    """Suspend the worker (a temporary stop): as a ban, their leases returned and their
    items in running or paused jobs decided again (while suspended their labels count at the policy's
    suspended_label_weight, 0 by default)."""
    with transaction.atomic():
        worker = workforce.worker_suspend(worker=worker, reason=reason)
        worker_leases_release(worker_id=worker.pk)
        enqueue_on_commit("quality.worker_items_reconsider", worker.pk)
    return worker


def worker_items_reconsider(*, worker_id: int) -> int:
    """Decide again, job by job, the items a banned or suspended worker labeled in running
    or paused jobs (apps.pipeline.reconsider), recording the items sent back to the queue;
    nothing if the worker is active again by now. A completed (or cancelled) job's delivered
    results are left as they are. Returns how many items went back to the queue."""
    worker = Worker.objects.get(pk=worker_id)
    if worker.status not in INACTIVE:
        return 0
    job_ids = (
        Label.objects.filter(
            worker_id=worker_id,
            is_gold=False,
            job__status__in=[Job.Status.RUNNING, Job.Status.PAUSED],
        )
        .values_list("job_id", flat=True)
        .distinct()
    )
    total = 0
    for job in Job.objects.filter(pk__in=list(job_ids)).order_by("pk"):
        with transaction.atomic():
            reopened = items_reconsider_without(worker_id=worker_id, job=job)
            if reopened:
                QualityDecision.objects.create(
                    worker=worker,
                    job=job,
                    action=QualityDecision.Action.REOPEN,
                    reason=QualityDecision.Reason.OPS,
                    details={
                        "items": reopened[:500],
                        "count": len(reopened),
                        "status": worker.status,
                    },
                )
        total += len(reopened)
    return total


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
        worker = workforce.worker_suspend(worker=worker, reason=f"quality: {reason}")
        worker_leases_release(worker_id=worker.pk)
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
