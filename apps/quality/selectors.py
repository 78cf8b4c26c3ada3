"""Quality reads: a worker's quality record and a job's agreement figures."""

from __future__ import annotations

from typing import Any

import numpy as np
from django.db.models import Avg, Count, Q

from apps.assignments.models import Label
from apps.jobs.models import Job
from apps.quality import algorithms
from apps.quality.models import AggregationRun, QualityDecision, WorkerJobQuality
from apps.quality.services import job_label_arrays
from apps.workforce.models import Worker


def _estimate(est: algorithms.Estimate, classes: list[str]) -> dict[str, Any]:
    def num(x: float) -> float | None:
        return None if x is None or not np.isfinite(x) else round(float(x), 6)

    out: dict[str, Any] = {
        "value": num(est.value),
        "low": num(est.low),
        "high": num(est.high),
        "n_boot": est.n_boot,
    }
    if est.per_class is not None:
        out["per_class"] = {
            name: {
                "value": num(est.per_class[i]),
                "low": num(est.per_class_low[i]),
                "high": num(est.per_class_high[i]),
            }
            for i, name in enumerate(classes)
        }
    return out


def job_agreement(*, job: Job, n_boot: int = 500) -> dict[str, Any]:
    """Fleiss' kappa and Krippendorff's alpha with bootstrap intervals, overall and per class."""
    classes = job.classes
    arrays = job_label_arrays(job=job, drop_inactive=False)
    k = len(classes)
    if arrays.tasks.size == 0 or k < 2:
        return {
            "job": job.pk,
            "n_items": 0,
            "n_labels": 0,
            "fleiss_kappa": None,
            "krippendorff_alpha": None,
        }
    counts = algorithms.count_matrix(arrays.tasks, arrays.labels, k, n_tasks=len(arrays.item_ids))
    multi = counts[counts.sum(axis=1) >= 2]
    per_item = algorithms.item_agreement(counts)
    result: dict[str, Any] = {
        "job": job.pk,
        "n_items": int(len(arrays.item_ids)),
        "n_labels": int(arrays.tasks.size),
        "mean_item_agreement": round(float(np.nanmean(per_item)), 6),
        "krippendorff_alpha": None,
        "fleiss_kappa": None,
    }
    if len(multi) >= 2:
        result["krippendorff_alpha"] = _estimate(
            algorithms.krippendorff_alpha_ci(counts, n_boot=n_boot), classes
        )
        result["fleiss_kappa"] = _estimate(
            algorithms.fleiss_kappa_ci(multi, n_boot=n_boot), classes
        )
    return result


def worker_quality(*, worker: Worker) -> dict[str, Any]:
    """Gold accuracy with a Wilson interval, per-job confusion matrices, agreement with the
    consensus (Cohen's kappa), speed, and the quality decisions taken about the worker."""
    labels = Label.objects.filter(worker=worker)
    totals = labels.aggregate(
        n=Count("id"),
        gold=Count("id", filter=Q(is_gold=True)),
        gold_correct=Count("id", filter=Q(is_gold=True, is_correct=True)),
        mean_ms=Avg("duration_ms"),
    )
    durations = list(
        labels.filter(duration_ms__isnull=False).values_list("duration_ms", flat=True)[:5000]
    )
    low, high = algorithms.wilson_interval(
        np.array([totals["gold_correct"]]), np.array([totals["gold"]])
    )
    jobs = []
    for q in (
        WorkerJobQuality.objects.filter(worker=worker)
        .select_related("job")
        .order_by("-updated_at")[:50]
    ):
        jobs.append(
            {
                "job": q.job_id,
                "job_name": q.job.name,
                "classes": q.job.classes,
                "confusion": q.confusion,
                "skill": q.skill,
                "n_labels": q.n_labels,
                "consensus_kappa": _consensus_kappa(worker=worker, job=q.job),
                "updated_at": q.updated_at,
            }
        )
    return {
        "worker": worker.pk,
        "username": worker.user.username,
        "tier": worker.tier,
        "status": worker.status,
        "labels": totals["n"],
        "gold": {
            "answers": totals["gold"],
            "correct": totals["gold_correct"],
            "accuracy": (totals["gold_correct"] / totals["gold"]) if totals["gold"] else None,
            "wilson_low": None if not totals["gold"] else round(float(low[0]), 4),
            "wilson_high": None if not totals["gold"] else round(float(high[0]), 4),
        },
        "speed": {
            "mean_ms": totals["mean_ms"],
            "median_ms": float(np.median(durations)) if durations else None,
        },
        "jobs": jobs,
        "decisions": list(
            QualityDecision.objects.filter(worker=worker).values(
                "job_id", "action", "reason", "details", "created_at"
            )[:50]
        ),
    }


def _consensus_kappa(*, worker: Worker, job: Job) -> float | None:
    """Cohen's kappa between the worker's answers and the items' current labels."""
    index = {name: i for i, name in enumerate(job.classes)}
    pairs = [
        (index[v], index[c])
        for v, c in Label.objects.filter(
            worker=worker, job=job, item__label__isnull=False
        ).values_list("value", "item__label")
        if v in index and c in index
    ]
    if len(pairs) < 2:
        return None
    a, b = np.array(pairs).T
    kappa = algorithms.cohen_kappa(a, b, len(job.classes))
    return None if not np.isfinite(kappa) else round(float(kappa), 4)


def latest_run(*, job: Job) -> AggregationRun | None:
    return AggregationRun.objects.filter(job=job).order_by("-id").first()
