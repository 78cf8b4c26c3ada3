"""Gold (control) items: which one a worker is shown, at what adaptive rate, how often each
was shown (retired when it leaks) and how often it was answered right."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
from django.db.models import Case, Count, Exists, F, OuterRef, Q, Value, When
from django.utils import timezone

from apps.assignments.models import Assignment, Label
from apps.jobs.models import Item, Job
from apps.quality import algorithms
from apps.quality.models import GoldExposure
from apps.workforce.models import Worker


def gold_pick(*, job: Job, worker: Worker, rng: random.Random) -> Item | None:
    """A gold item of the job for this worker, or None: not retired, never assigned to them.

    Class-balanced: among the gold classes the worker can still get, the class they have
    answered least often as gold in this job (ties broken by `rng`), then a uniformly random
    candidate of that class, so that workers do not all meet gold in one order. At most
    three queries; the item carries only id, external_id, payload, prediction, gold_label.
    """
    # NOT EXISTS in WHERE (not inside an aggregate) lets PostgreSQL plan an anti-join
    # against the worker's assignments instead of probing once per gold item. A missing
    # exposure row (LEFT JOIN) counts as not retired.
    candidates = Item.objects.filter(
        job_id=job.pk, gold_label__isnull=False, gold_exposure__retired_at__isnull=True
    ).filter(~Exists(Assignment.objects.filter(item_id=OuterRef("pk"), worker_id=worker.pk)))
    available = dict(candidates.values_list("gold_label").annotate(n=Count("id")).order_by())
    if not available:
        return None
    chosen = next(iter(available))
    if len(available) > 1:
        answered = dict(
            Label.objects.filter(job_id=job.pk, worker_id=worker.pk, is_gold=True)
            .values_list("item__gold_label")
            .annotate(n=Count("id"))
            .order_by()
        )
        fewest = min(answered.get(name, 0) for name in available)
        chosen = rng.choice(sorted(n for n in available if answered.get(n, 0) == fewest))
    offset = rng.randrange(available[chosen])
    # Empty only if candidates were retired or taken since the count: no gold this time.
    found = list(
        candidates.filter(gold_label=chosen)
        .order_by("id")
        .only("id", "external_id", "payload", "prediction", "gold_label")[offset : offset + 1]
    )
    return found[0] if found else None


def gold_rate_for(*, job: Job, worker_id: int, base_rate: float) -> float:
    """The worker's gold rate in this job (adaptive): more gold while they are new, less once
    their gold accuracy is proven, the job's base rate otherwise. At most one query."""
    if base_rate <= 0:
        return 0.0
    policy = job.spec.policy
    stats = Label.objects.filter(job_id=job.pk, worker_id=worker_id, is_gold=True).aggregate(
        n=Count("id"), correct=Count("id", filter=Q(is_correct=True))
    )
    n = int(stats["n"])
    if n < policy.gold_min_answers:
        return min(1.0, base_rate * policy.gold_new_factor)
    if n >= policy.gold_proven_answers:
        low, _ = algorithms.wilson_interval(np.array([stats["correct"]]), np.array([n]))
        if float(low[0]) >= policy.gold_proven_accuracy:
            return min(1.0, base_rate * policy.gold_proven_factor)
    return min(1.0, base_rate)


def gold_rate_ceiling(*, job: Job, base_rate: float) -> float:
    """The highest rate gold_rate_for can return for this job, without a query: a random
    draw at or above it means no gold whoever the worker is."""
    if base_rate <= 0:
        return 0.0
    policy = job.spec.policy
    factor = max(1.0, policy.gold_new_factor, policy.gold_proven_factor)
    return min(1.0, base_rate * factor)


def _gold_exposure_update(*, item_id: int, job_id: int, **changes: Any) -> None:
    """Apply the changes to the item's exposure row, creating the row first if needed.

    Safe under concurrency without a savepoint: the insert ignores a conflict on the
    one-to-one (a concurrent first exposure won), and the update is a single atomic statement.
    """
    if GoldExposure.objects.filter(item_id=item_id).update(**changes):
        return
    GoldExposure.objects.bulk_create(
        [GoldExposure(item_id=item_id, job_id=job_id)], ignore_conflicts=True
    )
    GoldExposure.objects.filter(item_id=item_id).update(**changes)


def gold_record_shown(*, item_id: int, job_id: int, max_exposures: int) -> None:
    """Count one showing of a gold item (a lease); retire it at `max_exposures` showings,
    since a gold item seen too often leaks. One query once the item was shown before."""
    # Both expressions read the row's old values, so `shown + 1 >= max` is `shown >= max - 1`.
    _gold_exposure_update(
        item_id=item_id,
        job_id=job_id,
        shown=F("shown") + 1,
        retired_at=Case(
            When(
                retired_at__isnull=True,
                shown__gte=max(int(max_exposures), 1) - 1,
                then=Value(timezone.now()),
            ),
            default=F("retired_at"),
        ),
    )


def gold_record_answer(*, item_id: int, job_id: int, correct: bool) -> None:
    """Count one answer to a gold item and whether it was correct."""
    _gold_exposure_update(
        item_id=item_id,
        job_id=job_id,
        answered=F("answered") + 1,
        correct=F("correct") + (1 if correct else 0),
    )
