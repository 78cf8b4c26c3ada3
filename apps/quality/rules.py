"""Worker rules: whether a worker's gold accuracy is confidently poor or their answers
implausibly fast (`worker_rules_verdict`). Acting on it (the suspension, the leases
returned, the items their labels settled decided again) is apps.pipeline.crowd's."""

from __future__ import annotations

import numpy as np
from django.db.models import Count, Q

from apps.assignments.models import Label
from apps.jobs.models import Job
from apps.quality import algorithms
from apps.quality.matrices import INACTIVE
from apps.quality.models import QualityDecision
from apps.workforce.models import Worker


def worker_rules_verdict(*, worker: Worker, job: Job) -> tuple[str, dict] | None:
    """The job's rules on one active worker: (reason, details) when they call for a
    suspension (confidently poor gold accuracy, implausibly fast answers), else None.
    apps.pipeline.crowd.worker_rules_check acts on it."""
    policy = job.spec.policy
    if worker.status in INACTIVE:
        return None
    gold = Label.objects.filter(job=job, worker=worker, is_gold=True).aggregate(
        n=Count("id"), correct=Count("id", filter=Q(is_correct=True))
    )
    if gold["n"] >= policy.gold_min_answers:
        low, high = algorithms.wilson_interval(np.array([gold["correct"]]), np.array([gold["n"]]))
        if float(high[0]) < policy.gold_min_accuracy:
            return (
                QualityDecision.Reason.GOLD_ACCURACY,
                {
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
            return (
                QualityDecision.Reason.TOO_FAST,
                {
                    "median_duration_ms": float(np.median(durations)),
                    "threshold_ms": floor,
                    "window": window,
                },
            )
    return None
