"""Throughput, cost and error-rate figures per job, pool and worker: the hourly rollups
(apps.reports.rollups) for the hours they hold, aggregate queries for the rest."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection
from dataclasses import asdict
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db.models import Count, F, Q, QuerySet, Sum
from django.db.models.functions import TruncDay, TruncHour
from django.utils import timezone

from apps.assignments.models import Label
from apps.jobs.models import Item, Job
from apps.reports.items import item_figures
from apps.reports.metrics import (
    CostEstimate,
    CurvePoint,
    WorkerFigures,
    backlog_forecast,
    cost_estimate,
    marginal_accuracy_cost,
    wilson_bounds,
    worker_flags,
)
from apps.reports.models import (
    JobCurve,
    JobHour,
    RollupState,
    WorkerDay,
    WorkerDayValue,
    WorkerHour,
    WorkerHourValue,
)
from apps.reports.rollups import (
    COUNTS,
    FIGURES,
    MONEY,
    day_of,
    label_figures,
    label_ranks,
    label_values,
    money,
)
from apps.reviews.models import Reason, Review, ReviewDecision
from apps.workforce.models import LedgerEntry, Pool, Worker

ZERO = Decimal("0")

WORKER_SUMMARY_LIMIT = 50
# The backlog forecast assumes the pace of the last few hours goes on.
FORECAST_HOURS = 3


class Window:
    """Where the rollups stop, read once per page: the labels made before `boundary` (the
    last run's start) come from the rollup rows, those from it on are counted directly (all
    of them before the first rollup run, when `boundary` is None)."""

    def __init__(self) -> None:
        self.boundary: datetime | None = (
            RollupState.objects.filter(pk=1).values_list("covered_until", flat=True).first()
        )
        self._live_jobs: list[int] | None = None

    def live_jobs(self) -> list[int]:
        """The jobs that may have labels since the boundary: those with labels shortly before
        it, and the running ones (one query, the first time it is asked)."""
        if self._live_jobs is None:
            # Jobs that had labels up to two hours before the boundary may still get some
            # (a lease submitted after a pause), running ones surely.
            self._live_jobs = list(
                JobHour.objects.filter(hour__gte=self.boundary - timedelta(hours=2))
                .order_by()
                .values_list("job_id", flat=True)
                .union(
                    Job.objects.filter(status=Job.Status.RUNNING)
                    .order_by()
                    .values_list("id", flat=True)
                )
            )
        return self._live_jobs


def _live_labels(scope: Q, window: Window, since: datetime | None = None) -> QuerySet[Label]:
    """The labels in `scope` that the rollups do not hold yet. Limited to the window's live
    jobs, so that the (job, created_at) index serves it even when the scope is a set of
    workers."""
    labels = Label.objects.filter(scope)
    if since is not None:
        labels = labels.filter(created_at__gte=since)
    if window.boundary is None:
        return labels
    return labels.filter(job_id__in=window.live_jobs(), created_at__gte=window.boundary)


def _summed(rows: QuerySet, keys: list[str]) -> list[dict]:
    sums = {name: Sum(name) for name in FIGURES}
    if not keys:  # (values() without fields would group by every column)
        return [rows.aggregate(**sums)]
    return list(rows.values(*keys).annotate(**sums).order_by())


def _rollup_rows(
    table, scope: Q, window: Window, keys: list[str], since: datetime | None
) -> list[dict]:
    """The rollup rows before the window's boundary, summed by `keys`. A worker's figures
    over all time read the whole days from WorkerDay and the hours of the boundary's day
    from WorkerHour."""
    if window.boundary is None:
        return []
    rows = table.objects.filter(scope, hour__lt=window.boundary)
    if since is not None:
        rows = rows.filter(hour__gte=since)
    if "day" in keys:
        rows = rows.annotate(day=TruncDay("hour"))
    if table is WorkerHour and since is None and "day" not in keys and "hour" not in keys:
        today = day_of(window.boundary)
        days = WorkerDay.objects.filter(scope, day__lt=today)
        return _summed(days, keys) + _summed(rows.filter(hour__gte=today), keys)
    return _summed(rows, keys)


def figures(
    *,
    scope: Q | None = None,
    keys: Collection[str] = (),
    per_worker: bool = False,
    since: datetime | None = None,
    window: Window | None = None,
) -> dict[tuple, dict[str, Any]]:
    """The rollup figures (labels, expert and regular crowd labels, gold answers and
    correct ones, durations, paid money) of the labels in `scope` (a filter on job_id,
    worker_id or worker__organization_id, which both the labels and the rollups have),
    grouped by `keys` ("hour", "day", "job_id", "worker_id"): the rollup rows before the
    boundary plus the labels after it, from the hour of `since` on if given. Keyed by the
    tuple of key values."""
    keys = list(keys)
    scope = Q() if scope is None else scope
    window = window or Window()
    if since is not None:
        since = since.replace(minute=0, second=0, microsecond=0)
    table = WorkerHour if per_worker or "worker_id" in keys else JobHour
    out: dict[tuple, dict[str, Any]] = {}
    for row in _rollup_rows(table, scope, window, keys, since) + label_figures(
        _live_labels(scope, window, since), keys
    ):
        key = tuple(row[k] for k in keys)
        into = out.setdefault(key, {name: 0 for name in COUNTS} | {m: ZERO for m in MONEY})
        for name in COUNTS:
            into[name] += row[name] or 0
        for name in MONEY:
            into[name] += money(row[name])
    return out


def _empty() -> dict[str, Any]:
    return {name: 0 for name in COUNTS} | {m: ZERO for m in MONEY}


def _total(scope: Q, window: Window, *, per_worker: bool = False) -> dict[str, Any]:
    return figures(scope=scope, window=window, per_worker=per_worker).get((), _empty())


def _paid(row: dict[str, Any]) -> Decimal:
    return row["paid_crowd"] + row["paid_gold"] + row["paid_expert"]


def _bonuses(**filters: Any) -> Decimal:
    return (
        LedgerEntry.objects.filter(kind=LedgerEntry.Kind.BONUS, **filters).aggregate(
            t=Sum("amount")
        )["t"]
        or ZERO
    )


def _gold_figures(row: dict[str, Any]) -> dict[str, Any]:
    n, correct = row["gold_answers"], row["gold_correct"]
    return {
        "gold_answers": n,
        "gold_accuracy": (correct / n) if n else None,
        "gold_error_rate": (1 - correct / n) if n else None,
    }


def _cost(row: dict[str, Any], bonus: Decimal) -> dict[str, Any]:
    """Money as Decimal, summed by the database: never floats (0.1 + 0.2 is not 0.3)."""
    labels = _paid(row)
    return {"labels": labels, "bonuses": bonus, "total": labels + bonus}


def _worker_ids_in(scope: Q, window: Window) -> set[int]:
    ids = set(_live_labels(scope, window).order_by().values_list("worker_id", flat=True).distinct())
    if window.boundary is not None:
        today = day_of(window.boundary)
        for rows in (
            WorkerDay.objects.filter(scope, day__lt=today),
            WorkerHour.objects.filter(scope, hour__gte=today, hour__lt=window.boundary),
        ):
            ids |= set(rows.order_by().values_list("worker_id", flat=True).distinct())
    return ids


def _value_counts(scope: Q, window: Window) -> dict[int, dict[str, int]]:
    """Per worker in `scope`, their labels per answered value."""
    out: dict[int, dict[str, int]] = defaultdict(dict)
    rows = label_values(_live_labels(scope, window), ["worker_id"])
    if window.boundary is not None:
        today = day_of(window.boundary)
        for kept in (
            WorkerDayValue.objects.filter(scope, day__lt=today),
            WorkerHourValue.objects.filter(scope, hour__gte=today, hour__lt=window.boundary),
        ):
            rows += list(kept.values("worker_id", "value").annotate(n=Sum("labels")).order_by())
    for row in rows:
        counts = out[row["worker_id"]]
        counts[row["value"]] = counts.get(row["value"], 0) + row["n"]
    return out


def worker_summaries(
    *,
    scope: Q,
    bonus_scope: Q | None = None,
    limit: int = WORKER_SUMMARY_LIMIT,
    window: Window | None = None,
) -> list[dict[str, Any]]:
    """Per worker in `scope` (a filter on job_id, worker_id, worker__organization_id): labels,
    gold accuracy with its Wilson interval, mean duration, earnings (Decimal: their label
    credits plus the bonuses in `bonus_scope`, by default the same scope), status and
    suspicious-worker flags (the busiest first, at most `limit`)."""
    window = window or Window()
    per_worker = figures(scope=scope, keys=["worker_id"], window=window)
    ranked = sorted(per_worker.items(), key=lambda kv: (-kv[1]["labels"], kv[0][0]))[:limit]
    ids = [key[0] for key, _ in ranked]
    people = {
        w["id"]: w
        for w in Worker.objects.filter(pk__in=ids).values(
            "id", "tier", "status", username=F("user__username")
        )
    }
    bonus = dict(
        LedgerEntry.objects.filter(
            bonus_scope if bonus_scope is not None else scope,
            kind=LedgerEntry.Kind.BONUS,
            worker_id__in=ids,
        )
        .values_list("worker_id")
        .annotate(total=Sum("amount"))
        .order_by()
    )
    values = _value_counts(scope & Q(worker_id__in=ids), window)
    rows = []
    for (worker_id,), fig in ranked:
        person = people.get(worker_id, {})
        n = fig["labels"]
        bounds = wilson_bounds(fig["gold_correct"], fig["gold_answers"])
        mean_ms = fig["duration_ms_sum"] / fig["duration_n"] if fig["duration_n"] else None
        top = max(values.get(worker_id, {}).values(), default=0)
        rows.append(
            {
                "worker_id": worker_id,
                "username": person.get("username"),
                "worker_tier": person.get("tier"),
                "worker_status": person.get("status"),
                "labels": n,
                "gold": fig["gold_answers"],
                "gold_correct": fig["gold_correct"],
                "mean_duration_ms": mean_ms,
                "gold_accuracy": fig["gold_correct"] / fig["gold_answers"]
                if fig["gold_answers"]
                else None,
                "gold_low": bounds[0] if bounds else None,
                "gold_high": bounds[1] if bounds else None,
                "earnings": _paid(fig) + (bonus.get(worker_id) or ZERO),
                "flags": worker_flags(
                    WorkerFigures(
                        labels=n,
                        gold_answers=fig["gold_answers"],
                        gold_correct=fig["gold_correct"],
                        typical_ms=mean_ms,
                        top_class_share=top / n if n else None,
                    )
                ),
            }
        )
    return rows


def _hour_series(scope: Q, since: datetime, window: Window) -> dict[datetime, dict[str, Any]]:
    rows = figures(scope=scope, keys=["hour"], since=since, window=window)
    return {key[0]: row for key, row in rows.items()}


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
    window = Window()
    scope = Q(job_id=job.pk)
    recent_labels = Label.objects.filter(job=job)  # (job, created_at) index: a short range
    items = item_figures(job_ids=[job.pk], now=now)[job.pk]
    counts, n_items = items.by_state, items.total
    totals = _total(scope, window)
    bonuses = _bonuses(job=job)
    cost = _cost(totals, bonuses)
    n_settled = counts.get("settled", 0)
    left = items.labels_left
    recent_counts = recent_labels.filter(
        created_at__gte=now - timedelta(hours=FORECAST_HOURS)
    ).aggregate(
        recent=Count("id"),
        last_hour=Count("id", filter=Q(created_at__gte=now - timedelta(hours=1))),
    )
    recent = recent_counts["recent"]
    forecast = backlog_forecast(
        labels_left=max(0, left),
        labels_recent=recent,
        recent_hours=FORECAST_HOURS,
        label_price=_crowd_price(job),
    )
    series = job_series(job=job, since=now - timedelta(hours=hours - 1), window=window)
    metrics = {
        "job": job.pk,
        "status": job.status,
        "items": {
            "total": n_items,
            **counts,
            "gold": items.gold,
            "settled_by_source": items.settled_by_source,
        },
        "progress": (n_settled / n_items) if n_items else None,
        "throughput": {
            "labels_total": totals["labels"],
            "labels_last_hour": recent_counts["last_hour"],
            "items_settled_last_hour": items.settled_last_hour,
            "hourly": [{"hour": h["hour"], "labels": h["labels"]} for h in series],
            "time_zone": settings.TIME_ZONE,
        },
        "series": series,
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
            "expert_labels": totals["expert_labels"],
        },
        "error_rates": {
            **_gold_figures(totals),
            "review_share": (counts.get("review", 0) / n_items) if n_items else None,
        },
        "worker_count": len(_worker_ids_in(scope, window)),
        "cost_of_quality": job_cost_breakdown(
            job=job, totals=totals, bonuses=bonuses, accepted=items.accepted, window=window
        ),
    }
    if worker_vendor_ids:
        metrics["workers"] = worker_summaries(
            scope=scope & Q(worker__organization_id__in=worker_vendor_ids),
            bonus_scope=scope,
            window=window,
        )
    return metrics


def _crowd_price(job: Job) -> Decimal:
    return Decimal(str(job.spec.pricing.crowd_label))


def job_cost_estimate(*, job: Job, n_items: int | None = None) -> CostEstimate | None:
    """The job's cost before launch from its policy, prices and item count (non-gold; pass
    `n_items` when it is known)."""
    policy = job.spec.policy
    if n_items is None:
        n_items = Item.objects.filter(job=job, gold_label__isnull=True).count()
    return cost_estimate(
        n_items=n_items,
        min_labels=policy.min_labels,
        max_labels=policy.max_labels,
        gold_rate=policy.gold_rate,
        crowd_price=_crowd_price(job),
    )


def job_series(*, job: Job, since: datetime, window: Window | None = None) -> list[dict[str, Any]]:
    """Per hour since `since` (every hour present): labels, gold answers and gold errors
    (with the rate) from the rollups, reviews opened for disagreement or low confidence, QC
    decisions and QC overrides (decisions that changed the item's result). A handful of
    grouped queries."""
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

    labels = _hour_series(Q(job_id=job.pk), start, window or Window())
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
        gold = lab.get("gold_answers", 0)
        wrong = gold - lab.get("gold_correct", 0)
        dec = decisions.get(hour, empty)
        hours.append(
            {
                "hour": hour.isoformat(),
                "labels": lab.get("labels", 0),
                "gold_answers": gold,
                "gold_errors": wrong,
                "gold_error_rate": wrong / gold if gold else None,
                "reviews_opened": reviews.get(hour, empty).get("n", 0),
                "qc_decisions": dec.get("n", 0),
                "qc_overrides": dec.get("overrides", 0),
            }
        )
        hour += timedelta(hours=1)
    return hours


def pool_metrics(*, pool: Pool) -> dict[str, Any]:
    member_ids = list(pool.members.values_list("id", flat=True))
    scope = Q(worker_id__in=member_ids)
    totals = _total(scope, Window(), per_worker=True)
    now = timezone.now()
    recent = Label.objects.filter(
        worker_id__in=member_ids,
        job_id__in=list(
            WorkerHour.objects.filter(scope, hour__gte=now - timedelta(hours=2))
            .values_list("job_id", flat=True)
            .distinct()
        )
        + list(Job.objects.filter(status=Job.Status.RUNNING).values_list("id", flat=True)),
        created_at__gte=now - timedelta(hours=1),
    ).count()
    return {
        "pool": pool.pk,
        "name": pool.name,
        "members": len(member_ids),
        "labels_total": totals["labels"],
        "labels_last_hour": recent,
        "cost": _cost(totals, _bonuses(worker_id__in=member_ids)),
        "error_rates": _gold_figures(totals),
    }


def overview_metrics(*, jobs: QuerySet[Job], window: Window | None = None) -> list[dict[str, Any]]:
    """One row per job for the dashboard (a fixed number of queries, whatever the job count)."""
    jobs = list(jobs.select_related("organization")[:200])
    ids = [job.pk for job in jobs]
    items = item_figures(job_ids=ids)
    label_stats = {
        key[0]: row
        for key, row in figures(scope=Q(job_id__in=ids), keys=["job_id"], window=window).items()
    }
    bonuses = dict(
        LedgerEntry.objects.filter(job_id__in=ids, kind=LedgerEntry.Kind.BONUS)
        .values_list("job_id")
        .annotate(t=Sum("amount"))
        .order_by()
    )
    rows = []
    for job in jobs:
        counts = items[job.pk]
        total = counts.total
        stats = label_stats.get(job.pk)
        gold = stats["gold_answers"] if stats else 0
        settled = counts.by_state["settled"]
        rows.append(
            {
                "job": job,
                "items": total,
                "settled": settled,
                "review": counts.by_state["review"],
                "progress": settled / total if total else 0.0,
                "labels": stats["labels"] if stats else 0,
                "gold_error_rate": 1 - stats["gold_correct"] / gold if gold else None,
                "cost": (_paid(stats) if stats else ZERO) + (bonuses.get(job.pk) or ZERO),
            }
        )
    return rows


def worker_list_metrics(
    *, vendor_ids: Collection[int], limit: int = WORKER_SUMMARY_LIMIT, window: Window | None = None
) -> list[dict[str, Any]]:
    """The busiest workers of these vendors, over every job."""
    return worker_summaries(
        scope=Q(worker__organization_id__in=vendor_ids), limit=limit, window=window
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
        "earned_today": money["today"] or ZERO,
        "earned_total": money["total"] or ZERO,
    }


def worker_history(*, worker_id: int, days: int = 14) -> list[dict[str, Any]]:
    """The worker's labels, gold answers and gold errors per day, the last `days` days
    (from the hourly rollups: a day is whole hours in the site's time zone)."""
    today = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)
    start = today - timedelta(days=days - 1)
    rows = {
        key[0]: row
        for key, row in figures(
            scope=Q(worker_id=worker_id), keys=["day"], per_worker=True, since=start
        ).items()
    }
    out = []
    for i in range(days):
        day = start + timedelta(days=i)
        row = rows.get(day, {})
        gold = row.get("gold_answers", 0)
        out.append(
            {
                "day": day.date().isoformat(),
                "labels": row.get("labels", 0),
                "gold_answers": gold,
                "gold_errors": gold - row.get("gold_correct", 0),
                "mean_ms": round(row["duration_ms_sum"] / row["duration_n"])
                if row.get("duration_n")
                else None,
            }
        )
    return out


def pool_member_rows(*, pool: Pool) -> list[dict[str, Any]]:
    """Every member of the pool with their figures over all jobs (members without labels
    too), for the pool page."""
    members = list(pool.members.select_related("user").order_by("id"))
    ids = [w.pk for w in members]
    rows = {
        r["worker_id"]: r for r in worker_summaries(scope=Q(worker_id__in=ids), limit=len(ids) or 1)
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
            "earnings": ZERO,
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
    rows = worker_summaries(scope=Q(worker_id=worker_id), limit=1)
    return rows[0] if rows else None


def job_ranks(*, job: Job, window: Window | None = None) -> dict[int, int]:
    """The job's crowd labels on regular items counted by their rank within the item."""
    window = window or Window()
    out: dict[int, int] = defaultdict(int)
    if window.boundary is not None:
        for by_rank in JobHour.objects.filter(job=job, hour__lt=window.boundary).values_list(
            "by_rank", flat=True
        ):
            for rank, n in by_rank.items():
                out[int(rank)] += n
    for row in label_ranks(_live_labels(Q(job_id=job.pk), window), []):
        if row["rank"]:
            out[row["rank"]] += row["n"]
    return dict(out)


def job_curve(*, job: Job) -> list[CurvePoint]:
    """The job's redundancy curve as the rollup last computed it (gold items' answers)."""
    stored = JobCurve.objects.filter(job=job).values_list("points", flat=True).first()
    if stored is None:
        return []
    return [CurvePoint(**point) for point in stored]


def job_cost_breakdown(
    *,
    job: Job,
    totals: dict[str, Any] | None = None,
    bonuses: Decimal | None = None,
    accepted: int | None = None,
    window: Window | None = None,
) -> dict[str, Any]:
    """The cost of quality: what the job paid, split into base labels (the first min_labels
    crowd labels of each item), extra redundancy (crowd labels beyond them), gold overhead
    (answers on gold items), expert labels, bonuses and rework (labels on items whose result
    QC overturned); QC decisions are counted (QC is not paid per decision). With the cost
    per accepted (settled, non-gold) item and the marginal cost of the last accuracy point
    (from the redundancy curve on gold items). Money is Decimal; from the rollups and a few
    aggregate queries."""
    window = window or Window()
    totals = totals if totals is not None else _total(Q(job_id=job.pk), window)
    crowd, crowd_n = totals["paid_crowd"], totals["crowd_labels"]
    min_labels = job.spec.policy.min_labels
    ranks = job_ranks(job=job, window=window)
    extra_n = sum(n for rank, n in ranks.items() if rank > min_labels)
    extra = (crowd * extra_n / crowd_n).quantize(Decimal("0.0001")) if crowd_n else ZERO
    overturned = ReviewDecision.objects.filter(job=job, is_current=True).exclude(
        original_label=F("label")
    )
    rework = (
        LedgerEntry.objects.filter(
            job=job, kind=LedgerEntry.Kind.LABEL, label__item_id__in=overturned.values("item_id")
        ).aggregate(t=Sum("amount"))["t"]
        or ZERO
    )
    bonuses = bonuses if bonuses is not None else _bonuses(job=job)
    total = crowd + totals["paid_gold"] + totals["paid_expert"] + bonuses
    if accepted is None:
        accepted = Item.objects.filter(
            job=job, gold_label__isnull=True, state=Item.State.SETTLED
        ).count()
    labeled_items = ranks.get(1, 0)
    label_price = (crowd / crowd_n) if crowd_n else _crowd_price(job)
    marginal = marginal_accuracy_cost(
        curve=job_curve(job=job),
        labels_per_item=(crowd_n / labeled_items) if labeled_items else 0.0,
        label_price=label_price,
        items=accepted,
    )
    return {
        "base_labels": crowd - extra,
        "extra_redundancy": extra,
        "gold_overhead": totals["paid_gold"],
        "expert_labels": totals["paid_expert"],
        "bonuses": bonuses,
        "rework": rework,
        "qc_decisions": ReviewDecision.objects.filter(job=job).count(),
        "total": total,
        "accepted_items": accepted,
        "per_accepted_item": (total / accepted).quantize(Decimal("0.0001")) if accepted else None,
        "marginal_accuracy_point": None if marginal is None else asdict(marginal),
    }
