"""Throughput, cost and error-rate figures per job, pool and worker (aggregate queries only)."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db.models import Avg, Count, F, Q, QuerySet, Sum
from django.db.models.functions import TruncDay, TruncHour
from django.utils import timezone

from apps.assignments.models import Label
from apps.jobs.models import Item, Job
from apps.jobs.selectors import job_item_counts
from apps.reports.metrics import (
    CostEstimate,
    WorkerFigures,
    backlog_forecast,
    cost_estimate,
    wilson_bounds,
    worker_flags,
)
from apps.reviews.models import Reason, Review, ReviewDecision
from apps.workforce.models import LedgerEntry, Pool

WORKER_SUMMARY_LIMIT = 50
# The backlog forecast assumes the pace of the last few hours goes on.
FORECAST_HOURS = 3


def _hourly(labels: QuerySet[Label], since: datetime) -> list[dict[str, Any]]:
    """Labels per hour since `since`, every hour present (zeros included)."""
    rows = dict(
        labels.filter(created_at__gte=since)
        .annotate(hour=TruncHour("created_at"))
        .values_list("hour")
        .annotate(n=Count("id"))
        .order_by()
    )
    start = since.replace(minute=0, second=0, microsecond=0)
    hours = []
    hour = start
    now = timezone.now()
    while hour <= now:
        hours.append({"hour": hour.isoformat(), "labels": rows.get(hour, 0)})
        hour += timedelta(hours=1)
    return hours


def _gold_figures(labels: QuerySet[Label]) -> dict[str, Any]:
    gold = labels.filter(is_gold=True).aggregate(
        n=Count("id"), correct=Count("id", filter=Q(is_correct=True))
    )
    n = gold["n"]
    return {
        "gold_answers": n,
        "gold_accuracy": (gold["correct"] / n) if n else None,
        "gold_error_rate": (1 - gold["correct"] / n) if n else None,
    }


def _cost(ledger: QuerySet[LedgerEntry]) -> dict[str, Any]:
    """Money as Decimal, summed by the database: never floats (0.1 + 0.2 is not 0.3)."""
    sums = dict(ledger.values_list("kind").annotate(total=Sum("amount")).order_by())
    labels = sums.get("label") or Decimal("0")
    bonus = sums.get("bonus") or Decimal("0")
    return {"labels": labels, "bonuses": bonus, "total": labels + bonus}


def worker_summaries(
    *, labels: QuerySet[Label], ledger: QuerySet[LedgerEntry], limit: int = WORKER_SUMMARY_LIMIT
) -> list[dict[str, Any]]:
    """Per worker: labels, gold accuracy with its Wilson interval, mean duration, earnings
    (Decimal), status and suspicious-worker flags (the busiest first)."""
    rows = list(
        labels.values(
            "worker_id",
            username=F("worker__user__username"),
            worker_tier=F("worker__tier"),
            worker_status=F("worker__status"),
        )
        .annotate(
            labels=Count("id"),
            gold=Count("id", filter=Q(is_gold=True)),
            gold_correct=Count("id", filter=Q(is_gold=True, is_correct=True)),
            mean_duration_ms=Avg("duration_ms"),
        )
        .order_by("-labels", "worker_id")[:limit]
    )
    ids = [r["worker_id"] for r in rows]
    earned = dict(
        ledger.filter(worker_id__in=ids)
        .values_list("worker_id")
        .annotate(total=Sum("amount"))
        .order_by()
    )
    top_class: dict[int, int] = {}
    for worker_id, _, n in (
        labels.filter(worker_id__in=ids)
        .values_list("worker_id", "value")
        .annotate(n=Count("id"))
        .order_by()
    ):
        top_class[worker_id] = max(top_class.get(worker_id, 0), n)
    for row in rows:
        row["gold_accuracy"] = row["gold_correct"] / row["gold"] if row["gold"] else None
        bounds = wilson_bounds(row["gold_correct"], row["gold"])
        row["gold_low"], row["gold_high"] = bounds if bounds else (None, None)
        row["earnings"] = earned.get(row["worker_id"]) or Decimal("0")
        row["flags"] = worker_flags(
            WorkerFigures(
                labels=row["labels"],
                gold_answers=row["gold"],
                gold_correct=row["gold_correct"],
                typical_ms=row["mean_duration_ms"],
                top_class_share=top_class.get(row["worker_id"], 0) / row["labels"]
                if row["labels"]
                else None,
            )
        )
    return rows


def job_metrics(
    *, job: Job, worker_vendor_ids: Collection[int] = (), hours: int = 24
) -> dict[str, Any]:
    """Throughput, cost, error rates and a worker summary for one job.

    The worker summary (usernames, gold accuracy, earnings) lists only the workers of
    `worker_vendor_ids`, the vendors through which the reader is staff on this job
    (`apps.jobs.selectors.job_vendor_ids_for_user`); with none, a client reading, the
    `workers` key is left out: clients never see worker identities or pay. `worker_count`
    (how many workers labeled the job) is there for everyone.
    """
    now = timezone.now()
    labels = Label.objects.filter(job=job)
    ledger = LedgerEntry.objects.filter(job=job)
    counts = job_item_counts(job=job)
    n_items = sum(counts.values())
    settled = Item.objects.filter(job=job, state=Item.State.SETTLED)
    by_source = dict(settled.values_list("source").annotate(n=Count("id")).order_by())
    totals = labels.aggregate(
        total=Count("id"),
        last_hour=Count("id", filter=Q(created_at__gte=now - timedelta(hours=1))),
        expert=Count("id", filter=Q(tier="expert")),
        workers=Count("worker_id", distinct=True),
    )
    cost = _cost(ledger)
    n_settled = counts.get("settled", 0)
    left = (
        Item.objects.filter(
            job=job, state__in=[Item.State.OPEN, Item.State.EXPERT], gold_label__isnull=True
        ).aggregate(n=Sum(F("labels_needed") - F("n_labels")))["n"]
        or 0
    )
    recent = labels.filter(created_at__gte=now - timedelta(hours=FORECAST_HOURS)).count()
    forecast = backlog_forecast(
        labels_left=max(0, left),
        labels_recent=recent,
        recent_hours=FORECAST_HOURS,
        label_price=_crowd_price(job),
    )
    metrics = {
        "job": job.pk,
        "status": job.status,
        "items": {"total": n_items, **counts, "settled_by_source": by_source},
        "progress": (n_settled / n_items) if n_items else None,
        "throughput": {
            "labels_total": totals["total"],
            "labels_last_hour": totals["last_hour"],
            "items_settled_last_hour": settled.filter(
                settled_at__gte=now - timedelta(hours=1)
            ).count(),
            "hourly": _hourly(labels, now - timedelta(hours=hours - 1)),
            "time_zone": settings.TIME_ZONE,
        },
        "series": job_series(job=job, since=now - timedelta(hours=hours - 1)),
        "backlog": {
            "labels_left": forecast.labels_left,
            "labels_per_hour": round(forecast.labels_per_hour, 1),
            "hours_left": None if forecast.hours_left is None else round(forecast.hours_left, 2),
            "minutes_left": None
            if forecast.hours_left is None
            else max(1, round(forecast.hours_left * 60)),
            "cost_left": forecast.cost_left,
        },
        "cost": {
            **cost,
            "per_settled_item": (cost["total"] / n_settled).quantize(Decimal("0.0001"))
            if n_settled
            else None,
            "forecast_total": cost["total"] + forecast.cost_left,
            "expert_labels": totals["expert"],
        },
        "error_rates": {
            **_gold_figures(labels),
            "review_share": (counts.get("review", 0) / n_items) if n_items else None,
        },
        "worker_count": totals["workers"],
        "cost_of_quality": job_cost_breakdown(job=job),
    }
    if worker_vendor_ids:
        metrics["workers"] = worker_summaries(
            labels=labels.filter(worker__organization_id__in=worker_vendor_ids),
            ledger=ledger,
        )
    return metrics


def _crowd_price(job: Job) -> Decimal:
    return Decimal(str(job.spec.pricing.crowd_label))


def job_cost_estimate(*, job: Job) -> CostEstimate | None:
    """The job's cost before launch from its policy, prices and item count (non-gold)."""
    policy = job.spec.policy
    return cost_estimate(
        n_items=Item.objects.filter(job=job, gold_label__isnull=True).count(),
        min_labels=policy.min_labels,
        max_labels=policy.max_labels,
        gold_rate=policy.gold_rate,
        crowd_price=_crowd_price(job),
    )


def job_series(*, job: Job, since: datetime) -> list[dict[str, Any]]:
    """Per hour since `since` (every hour present): labels, gold answers and gold errors
    (with the rate), reviews opened for disagreement or low confidence, QC decisions and
    QC overrides (decisions that changed the item's result). A handful of grouped queries."""
    start = since.replace(minute=0, second=0, microsecond=0)

    def per_hour(rows: QuerySet, field: str = "created_at", **counts: Any) -> dict:
        return {
            row["hour"]: row
            for row in rows.filter(**{f"{field}__gte": start})
            .annotate(hour=TruncHour(field))
            .values("hour")
            .annotate(**counts)
            .order_by()
        }

    labels = per_hour(
        Label.objects.filter(job=job),
        n=Count("id"),
        gold=Count("id", filter=Q(is_gold=True)),
        gold_wrong=Count("id", filter=Q(is_gold=True, is_correct=False)),
    )
    reviews = per_hour(
        Review.objects.filter(job=job, reason__in=[Reason.DISAGREEMENT, Reason.LOW_POSTERIOR]),
        n=Count("id"),
    )
    decisions = per_hour(
        ReviewDecision.objects.filter(job=job),
        n=Count("id"),
        overrides=Count(
            "id", filter=Q(previous_label__isnull=False) & ~Q(label=F("previous_label"))
        ),
    )
    hours = []
    hour = start
    now = timezone.now()
    empty: dict[str, int] = {}
    while hour <= now:
        lab = labels.get(hour, empty)
        gold = lab.get("gold", 0)
        dec = decisions.get(hour, empty)
        hours.append(
            {
                "hour": hour.isoformat(),
                "labels": lab.get("n", 0),
                "gold_answers": gold,
                "gold_errors": lab.get("gold_wrong", 0),
                "gold_error_rate": lab.get("gold_wrong", 0) / gold if gold else None,
                "reviews_opened": reviews.get(hour, empty).get("n", 0),
                "qc_decisions": dec.get("n", 0),
                "qc_overrides": dec.get("overrides", 0),
            }
        )
        hour += timedelta(hours=1)
    return hours


def pool_metrics(*, pool: Pool) -> dict[str, Any]:
    labels = Label.objects.filter(worker__pools=pool)
    ledger = LedgerEntry.objects.filter(worker__pools=pool)
    now = timezone.now()
    return {
        "pool": pool.pk,
        "name": pool.name,
        "members": pool.members.count(),
        "labels_total": labels.count(),
        "labels_last_hour": labels.filter(created_at__gte=now - timedelta(hours=1)).count(),
        "cost": _cost(ledger),
        "error_rates": _gold_figures(labels),
    }


def overview_metrics(*, jobs: QuerySet[Job]) -> list[dict[str, Any]]:
    """One row per job for the dashboard (a fixed number of queries, whatever the job count)."""
    jobs = list(jobs.select_related("organization")[:200])
    ids = [job.pk for job in jobs]
    item_counts: dict[int, dict[str, int]] = {}
    for job_id, state, n in (
        Item.objects.filter(job_id__in=ids)
        .values_list("job_id", "state")
        .annotate(n=Count("id"))
        .order_by()
    ):
        item_counts.setdefault(job_id, {})[state] = n
    label_stats = {
        row["job_id"]: row
        for row in Label.objects.filter(job_id__in=ids)
        .values("job_id")
        .annotate(
            n=Count("id"),
            gold=Count("id", filter=Q(is_gold=True)),
            gold_correct=Count("id", filter=Q(is_gold=True, is_correct=True)),
        )
        .order_by()
    }
    cost = dict(
        LedgerEntry.objects.filter(job_id__in=ids)
        .values_list("job_id")
        .annotate(t=Sum("amount"))
        .order_by()
    )
    rows = []
    for job in jobs:
        counts = item_counts.get(job.pk, {})
        total = sum(counts.values())
        stats = label_stats.get(job.pk, {"n": 0, "gold": 0, "gold_correct": 0})
        rows.append(
            {
                "job": job,
                "items": total,
                "settled": counts.get("settled", 0),
                "review": counts.get("review", 0),
                "progress": counts.get("settled", 0) / total if total else 0.0,
                "labels": stats["n"],
                "gold_error_rate": 1 - stats["gold_correct"] / stats["gold"]
                if stats["gold"]
                else None,
                "cost": cost.get(job.pk) or Decimal("0"),
            }
        )
    return rows


def worker_list_metrics(
    *, vendor_ids: Collection[int], limit: int = WORKER_SUMMARY_LIMIT
) -> list[dict[str, Any]]:
    """The busiest workers of these vendors, over every job."""
    return worker_summaries(
        labels=Label.objects.filter(worker__organization_id__in=vendor_ids),
        ledger=LedgerEntry.objects.all(),
        limit=limit,
    )


def worker_own_stats(*, worker_id: int, now: datetime | None = None) -> dict[str, Any]:
    """A worker's own figures for their page: labels today and in all, earnings today and in
    all (Decimal). "Today" starts at midnight in the site's time zone.

    No gold accuracy: watching it move after each submit would tell which items were gold
    (QC's verdicts reach the worker through their feedback instead)."""
    now = now or timezone.now()
    midnight = timezone.localtime(now).replace(hour=0, minute=0, second=0, microsecond=0)
    labels = Label.objects.filter(worker_id=worker_id).aggregate(
        total=Count("id"),
        today=Count("id", filter=Q(created_at__gte=midnight)),
    )
    money = LedgerEntry.objects.filter(worker_id=worker_id).aggregate(
        total=Sum("amount"), today=Sum("amount", filter=Q(created_at__gte=midnight))
    )
    return {
        "labels_today": labels["today"],
        "labels_total": labels["total"],
        "earned_today": money["today"] or Decimal("0"),
        "earned_total": money["total"] or Decimal("0"),
    }


def worker_history(*, worker_id: int, days: int = 14) -> list[dict[str, Any]]:
    """The worker's labels, gold answers and gold errors per day, the last `days` days."""
    today = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)
    start = today - timedelta(days=days - 1)
    rows = {
        row["day"]: row
        for row in Label.objects.filter(worker_id=worker_id, created_at__gte=start)
        .annotate(day=TruncDay("created_at"))
        .values("day")
        .annotate(
            n=Count("id"),
            gold=Count("id", filter=Q(is_gold=True)),
            gold_wrong=Count("id", filter=Q(is_gold=True, is_correct=False)),
            mean_ms=Avg("duration_ms"),
        )
        .order_by()
    }
    out = []
    for i in range(days):
        day = start + timedelta(days=i)
        row = rows.get(day, {})
        out.append(
            {
                "day": day.date().isoformat(),
                "labels": row.get("n", 0),
                "gold_answers": row.get("gold", 0),
                "gold_errors": row.get("gold_wrong", 0),
                "mean_ms": round(row["mean_ms"]) if row.get("mean_ms") else None,
            }
        )
    return out


def pool_member_rows(*, pool: Pool) -> list[dict[str, Any]]:
    """Every member of the pool with their figures over all jobs (members without labels
    too), for the pool page."""
    members = list(pool.members.select_related("user").order_by("id"))
    ids = [w.pk for w in members]
    rows = {
        r["worker_id"]: r
        for r in worker_summaries(
            labels=Label.objects.filter(worker_id__in=ids),
            ledger=LedgerEntry.objects.filter(worker_id__in=ids),
            limit=len(ids) or 1,
        )
    }
    out = []
    for worker in members:
        row = rows.get(worker.pk) or {
            "worker_id": worker.pk,
            "labels": 0,
            "gold": 0,
            "gold_correct": 0,
            "gold_accuracy": None,
            "gold_low": None,
            "gold_high": None,
            "mean_duration_ms": None,
            "earnings": Decimal("0"),
            "flags": [],
        }
        out.append(
            {
                **row,
                "username": worker.user.username,
                "worker_tier": worker.tier,
                "worker_status": worker.status,
            }
        )
    return out


def worker_summary(*, worker_id: int) -> dict[str, Any] | None:
    """One worker's row of worker_summaries over every job; None before their first label."""
    rows = worker_summaries(
        labels=Label.objects.filter(worker_id=worker_id),
        ledger=LedgerEntry.objects.filter(worker_id=worker_id),
        limit=1,
    )
    return rows[0] if rows else None


def job_cost_breakdown(*, job: Job) -> dict[str, Any]:
    """The cost of quality: what the job paid, split into base labels (the first min_labels
    crowd labels of each item), extra redundancy (crowd labels beyond them), gold overhead
    (answers on gold items), expert labels, bonuses and rework (labels on items whose result
    QC overturned); QC decisions are counted (QC is not paid per decision). With the cost
    per accepted (settled, non-gold) item. Money is Decimal; a few aggregate queries."""
    ledger = LedgerEntry.objects.filter(job=job)
    paid = ledger.filter(kind=LedgerEntry.Kind.LABEL).aggregate(
        gold=Sum("amount", filter=Q(label__is_gold=True)),
        expert=Sum("amount", filter=Q(label__is_gold=False, label__tier="expert")),
        crowd=Sum("amount", filter=Q(label__is_gold=False) & ~Q(label__tier="expert")),
        crowd_n=Count("id", filter=Q(label__is_gold=False) & ~Q(label__tier="expert")),
    )
    zero = Decimal("0")
    crowd, crowd_n = paid["crowd"] or zero, paid["crowd_n"]
    min_labels = job.spec.policy.min_labels
    items = Item.objects.filter(job=job, gold_label__isnull=True)
    extra_n = (
        Label.objects.filter(job=job, is_gold=False)
        .exclude(tier="expert")
        .values("item_id")
        .annotate(n=Count("id"))
        .filter(n__gt=min_labels)
        .aggregate(extra=Sum(F("n") - min_labels))["extra"]
        or 0
    )
    extra = (crowd * extra_n / crowd_n).quantize(Decimal("0.0001")) if crowd_n else zero
    overturned = ReviewDecision.objects.filter(job=job, is_current=True).exclude(
        original_label=F("label")
    )
    rework = (
        ledger.filter(
            kind=LedgerEntry.Kind.LABEL, label__item_id__in=overturned.values("item_id")
        ).aggregate(t=Sum("amount"))["t"]
        or zero
    )
    bonuses = ledger.filter(kind=LedgerEntry.Kind.BONUS).aggregate(t=Sum("amount"))["t"] or zero
    total = crowd + (paid["gold"] or zero) + (paid["expert"] or zero) + bonuses
    accepted = items.filter(state=Item.State.SETTLED).count()
    return {
        "base_labels": crowd - extra,
        "extra_redundancy": extra,
        "gold_overhead": paid["gold"] or zero,
        "expert_labels": paid["expert"] or zero,
        "bonuses": bonuses,
        "rework": rework,
        "qc_decisions": ReviewDecision.objects.filter(job=job).count(),
        "total": total,
        "accepted_items": accepted,
        "per_accepted_item": (total / accepted).quantize(Decimal("0.0001")) if accepted else None,
    }
