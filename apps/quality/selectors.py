"""Quality reads: a worker's quality record, a job's agreement figures, its gold lifecycle."""

from __future__ import annotations

from typing import Any

import numpy as np
from django.db.models import Avg, Count, F, Q, QuerySet, Sum
from django.db.models.functions import Coalesce

from apps.assignments.models import Label
from apps.jobs.kinds import answer_value
from apps.jobs.models import Item, Job
from apps.quality import algorithms
from apps.quality.aggregation import job_label_arrays
from apps.quality.kinds import JobKind, job_kind
from apps.quality.models import AggregationRun, QualityDecision, WorkerJobQuality
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
    """Fleiss' kappa and Krippendorff's alpha with bootstrap intervals, overall and per class;
    for another kind than single_choice, Krippendorff's alpha with the kind's distance (MASI
    for tag sets, ordinal, interval for numbers) or the mean IoU for boxes."""
    jk = job_kind(job.label_schema)
    if jk is not None:
        return _kind_agreement(job=job, jk=jk)
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


def _kind_agreement(*, job: Job, jk: JobKind) -> dict[str, Any]:
    rows = list(
        Label.objects.filter(job=job, is_gold=False).order_by("id").values_list("item_id", "value")
    )
    result: dict[str, Any] = {
        "job": job.pk,
        "kind": jk.name,
        "distance": jk.adapter.distance,
        "n_items": len({item for item, _ in rows}),
        "n_labels": len(rows),
        "krippendorff_alpha": None,
        "fleiss_kappa": None,
    }
    if not rows:
        return result
    _, tasks = np.unique([item for item, _ in rows], return_inverse=True)
    value = jk.adapter.job_agreement(
        kind=jk.kind, tasks=tasks, answers=[answer_value(v) for _, v in rows]
    )
    key = "mean_iou" if jk.adapter.distance == "mean_iou" else "krippendorff_alpha"
    result[key] = round(value, 6) if np.isfinite(value) else None
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


def job_gold_items(
    *, job: Job, gold_label: str | None = None, retired: bool | None = None
) -> QuerySet[Item, dict[str, Any]]:
    """The job's gold items with how often each was shown, answered and answered correctly,
    and when it was retired (None: in use), in id order; optionally one class, or only
    retired (True) or live (False) items. A gold item never shown has zero counts."""
    qs = Item.objects.filter(job=job, gold_label__isnull=False)
    if gold_label is not None:
        qs = qs.filter(gold_label=gold_label)
    if retired is not None:
        qs = qs.filter(gold_exposure__retired_at__isnull=not retired)
    return qs.order_by("id").values(
        "id",
        "external_id",
        "gold_label",
        shown=Coalesce(F("gold_exposure__shown"), 0),
        answered=Coalesce(F("gold_exposure__answered"), 0),
        correct=Coalesce(F("gold_exposure__correct"), 0),
        retired_at=F("gold_exposure__retired_at"),
    )


def _gold_totals(row: dict[str, Any]) -> dict[str, Any]:
    answered = row["answered"]
    return {
        "items": row["items"],
        "live": row["items"] - row["retired"],
        "retired": row["retired"],
        "shown": row["shown"],
        "answered": answered,
        "correct": row["correct"],
        "accuracy": round(row["correct"] / answered, 6) if answered else None,
    }


def job_gold_summary(*, job: Job) -> dict[str, Any]:
    """Per gold class and over all: gold items, how many are live or retired, showings,
    answers, correct answers and accuracy; plus the job's retirement threshold. One query.

    Classes come in the job's class order, then any gold label outside the schema.
    """
    rows = (
        Item.objects.filter(job=job, gold_label__isnull=False)
        .values("gold_label")
        .annotate(
            items=Count("id"),
            retired=Count("id", filter=Q(gold_exposure__retired_at__isnull=False)),
            shown=Coalesce(Sum("gold_exposure__shown"), 0),
            answered=Coalesce(Sum("gold_exposure__answered"), 0),
            correct=Coalesce(Sum("gold_exposure__correct"), 0),
        )
        .order_by()
    )
    by_class = {row["gold_label"]: row for row in rows}
    order = {name: i for i, name in enumerate(job.classes)}
    names = sorted(by_class, key=lambda name: (order.get(name, len(order)), name))
    keys = ("items", "retired", "shown", "answered", "correct")
    total = {key: sum(row[key] for row in by_class.values()) for key in keys}
    return {
        "job": job.pk,
        "max_exposures": job.spec.policy.gold_max_exposures,
        "classes": [{"gold_label": name, **_gold_totals(by_class[name])} for name in names],
        "totals": _gold_totals(total),
    }
