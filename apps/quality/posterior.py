"""One item's posterior from its answers: the arithmetic (item_posterior, pure) and the
reads it needs when a caller has not made them (item_answers, item_posterior_from_labels).

apps.pipeline.decide calls item_posterior on every label; apps.quality.rules recomputes
items without a suspended worker's labels through item_posterior_from_labels.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from apps.assignments.models import Label
from apps.jobs.models import Job
from apps.quality.matrices import INACTIVE, job_class_prior, worker_confusions
from apps.workforce.models import Worker


def item_posterior(
    *,
    classes: list[str],
    answers: list[tuple[int, str, str]],
    matrices: dict[int, np.ndarray],
    prior: np.ndarray | list[float],
    statuses: dict[int, str] | None = None,
    inactive_weight: float = 0.0,
    crowd_weight: float = 1.0,
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Posterior of one item from its (worker_id, value, tier) answers, each worker's
    confusion matrix and a class prior (the routing model's calibrated vote, when it votes).

    Labels of suspended or banned workers count with `inactive_weight` (the policy's
    suspended_label_weight, 0 by default: dropped). Returns the posterior and the
    contributing workers with their weights (the log-odds a label of theirs moves toward the
    class they chose). `crowd_weight` tempers every non-expert label (a routed job counts the
    crowd at its aggregation's calibration, apps.routing.policy.crowd_weight; 1 elsewhere).
    Pure: no database, no cache.
    """
    index = {name: i for i, name in enumerate(classes)}
    statuses = statuses or {}
    # Plain floats: a handful of answers over a few classes, where numpy's per-call
    # overhead would cost more than the arithmetic (this runs on every submit).
    k = len(classes)
    log_post = [math.log(max(float(p), 1e-12)) for p in prior]
    contributors = []
    for worker_id, value, tier in answers:
        if value not in index:
            continue
        weight = inactive_weight if statuses.get(worker_id) in INACTIVE else 1.0
        if tier != Worker.Tier.EXPERT:
            weight *= crowd_weight
        rows = matrices[worker_id].tolist()
        j = index[value]
        if weight:
            for c in range(k):
                log_post[c] += weight * math.log(max(rows[c][j], 1e-12))
        accuracy = min(max(sum(rows[c][c] for c in range(k)) / k, 1e-6), 1 - 1e-6)
        contributors.append(
            {
                "worker": worker_id,
                "label": value,
                "weight": round(weight * math.log(accuracy / (1 - accuracy)) if weight else 0.0, 4),
            }
        )
    top = max(log_post)
    exps = [math.exp(x - top) for x in log_post]
    total = sum(exps)
    return np.array([e / total for e in exps]), contributors


def item_posterior_from_labels(
    *,
    job: Job,
    answers: list[tuple[int, str, str]],
    statuses: dict[int, str] | None = None,
    stored: dict[int, list] | None = None,
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """item_posterior with the job's matrices and class prior read here (`stored`: the
    matrices the caller already read). The routing model does not vote here."""
    tiers = {w: t for w, _, t in answers}
    return item_posterior(
        classes=job.classes,
        answers=answers,
        matrices=worker_confusions(job=job, worker_ids=list(tiers), tiers=tiers, stored=stored),
        prior=job_class_prior(job=job),
        statuses=statuses,
        inactive_weight=job.spec.policy.suspended_label_weight,
    )


def item_answers(*, item_id: int) -> tuple[list[tuple[int, str, str]], dict[int, str]]:
    """The item's (worker, value, tier) answers and the current status of those workers."""
    rows = list(
        Label.objects.filter(item_id=item_id)
        .order_by("id")
        .values_list("worker_id", "value", "tier", "worker__status")
    )
    return [(w, v, t) for w, v, t, _ in rows], {w: s for w, _, _, s in rows}
