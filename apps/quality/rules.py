"""Worker rules: suspend a worker on confidently poor gold accuracy or implausibly fast
answers, record why, return their leases and reconsider the items their labels settled."""

from __future__ import annotations

from typing import Any

import numpy as np
from django.db import transaction
from django.db.models import Count, Q
from django.utils import timezone

from apps.assignments.models import Label
from apps.assignments.sweeps import worker_leases_release
from apps.jobs.kinds import SINGLE_CHOICE, answer_value
from apps.jobs.models import Item, Job
from apps.quality import algorithms
from apps.quality.kinds import kind_item_outcome, kind_worker_accuracies
from apps.quality.matrices import INACTIVE
from apps.quality.models import QualityDecision
from apps.quality.posterior import item_answers, item_posterior_from_labels
from apps.workforce.models import Worker
from apps.workforce.services import worker_suspend


def worker_rules_check(*, worker_id: int, job_id: int) -> QualityDecision | None:
    """Apply the job's rules to one worker: suspend on confidently poor gold accuracy or
    implausibly fast answers, record why, and reopen the items they touched."""
    job = Job.objects.get(pk=job_id)
    policy = job.spec.policy
    worker = Worker.objects.get(pk=worker_id)
    if worker.status in INACTIVE:
        return None
    gold = Label.objects.filter(job=job, worker=worker, is_gold=True).aggregate(
        n=Count("id"), correct=Count("id", filter=Q(is_correct=True))
    )
    if gold["n"] >= policy.gold_min_answers:
        low, high = algorithms.wilson_interval(np.array([gold["correct"]]), np.array([gold["n"]]))
        if float(high[0]) < policy.gold_min_accuracy:
            return worker_quality_suspend(
                worker=worker,
                job=job,
                reason=QualityDecision.Reason.GOLD_ACCURACY,
                details={
                    "gold_answers": gold["n"],
                    "gold_correct": gold["correct"],
                    "wilson_high": round(float(high[0]), 4),
                    "threshold": policy.gold_min_accuracy,
                },
            )
    floor = policy.min_median_duration_ms
    if floor:
        window = policy.speed_window
        durations = list(
            Label.objects.filter(job=job, worker=worker, duration_ms__isnull=False)
            .order_by("-id")
            .values_list("duration_ms", flat=True)[:window]
        )
        if len(durations) >= window and float(np.median(durations)) < float(floor):
            return worker_quality_suspend(
                worker=worker,
                job=job,
                reason=QualityDecision.Reason.TOO_FAST,
                details={
                    "median_duration_ms": float(np.median(durations)),
                    "threshold_ms": floor,
                    "window": window,
                },
            )
    return None


def worker_quality_suspend(
    *, worker: Worker, job: Job, reason: str, details: dict
) -> QualityDecision:
    """Suspend a worker for a quality reason and reopen what their labels helped settle."""
    with transaction.atomic():
        worker_suspend(worker=worker, reason=f"quality: {reason}")
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


def items_reconsider_without(*, worker_id: int, job: Job) -> list[int]:
    """Recompute every crowd item the worker labeled with their labels dropped; items that
    are no longer confident go back to the queue for one more label. Returns reopened ids."""
    item_ids = list(
        Label.objects.filter(job=job, worker_id=worker_id, is_gold=False).values_list(
            "item_id", flat=True
        )
    )
    reopened = []
    target = job.spec.policy.target_confidence
    for item in (
        Item.objects.select_for_update()
        .filter(pk__in=item_ids, state__in=[Item.State.OPEN, Item.State.SETTLED])
        .filter(Q(source__isnull=True) | Q(source=Item.Source.CROWD))
    ):
        answers, statuses = item_answers(item_id=item.pk)
        if job.kind == SINGLE_CHOICE:
            posterior, contributors = item_posterior_from_labels(
                job=job, answers=answers, statuses=statuses
            )
            top = int(np.argmax(posterior))
            label, confidence = job.classes[top], float(posterior[top])
            confident = confidence >= target
            rounded: list[float] | None = [round(float(p), 6) for p in posterior]
        else:
            # Another kind: its outcome from the answers of workers still active.
            active = [a for a in answers if statuses.get(a[0]) == Worker.Status.ACTIVE]
            accuracies = kind_worker_accuracies(
                job=job, workers=[(w, t) for w, _, t in active], policy=job.spec.policy
            )
            outcome = (
                kind_item_outcome(
                    label_schema=job.label_schema,
                    policy=job.spec.policy,
                    answers=active,
                    accuracies=accuracies,
                )
                if active
                else None
            )
            label = outcome.label if outcome else None
            confidence = outcome.confidence if outcome else None
            confident = bool(outcome and outcome.confident)
            rounded = outcome.posterior if outcome else None
            contributors = [
                {
                    "worker": w,
                    "label": answer_value(v),
                    "weight": float(statuses.get(w) == Worker.Status.ACTIVE),
                }
                for w, v, _ in answers
            ]
        fields: dict[str, Any] = {
            "posterior": rounded,
            "result_meta": {**(item.result_meta or {}), "workers": contributors},
            "updated_at": timezone.now(),
        }
        if item.state == Item.State.SETTLED and not confident:
            fields.update(
                state=Item.State.OPEN,
                label=None,
                confidence=None,
                source=None,
                settled_at=None,
                labels_needed=item.n_labels + item.n_leases + 1,
            )
            reopened.append(item.pk)
        elif item.state == Item.State.OPEN and item.labels_needed <= item.n_labels + item.n_leases:
            fields["labels_needed"] = item.n_labels + item.n_leases + 1
            reopened.append(item.pk)
        elif item.state == Item.State.SETTLED:
            fields.update(label=label, confidence=confidence)
        Item.objects.filter(pk=item.pk).update(**fields)
    if reopened:
        Job.objects.filter(pk=job.pk, status=Job.Status.COMPLETED).update(
            status=Job.Status.RUNNING, completed_at=None
        )
    return reopened
