"""The hourly rollups: labels summed per (job, hour), per (job, worker, hour) and per
(job, worker, hour, answered value), kept by the
Celery beat task `concord.reports.rollup` (every minute), read by the dashboards.

How a run stays correct with labels that arrive late or out of order:

- A run reads every label with an id above the watermark (an indexed range), notes the
  (job, hour) of each, and re-rolls those hours whole: it deletes their rows and sums their
  labels again. Re-rolling is idempotent, so a label that lands in an hour rolled long ago
  (a backdated import, a clock) only makes its hour be rolled again.
- The watermark stops before the labels of the last few minutes (LAG): a transaction that
  took an id earlier but commits later still lands above it, so its hour is re-rolled on a
  later run. (The current hour is therefore re-rolled on every run.)
- A change to labels already rolled (QC re-scoring a gold item's answers) re-rolls the
  item's hours through `rollup_item`, queued by the service that made the change.
- Every writer takes the state row's lock first: runs never interleave.

A run rolls only the labels made before its start, which becomes `RollupState.covered_until`:
dashboards read the rollup rows (the current hour's partial row included) and count the
labels made from that moment on directly, through the (job, created_at) index (a minute's
worth when beat runs), so what they show is never older than the last label.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.db.models import Count, Max, Min, OuterRef, Q, QuerySet, Subquery, Sum
from django.db.models.functions import Coalesce, TruncDay, TruncHour
from django.utils import timezone

from apps.assignments.models import Label
from apps.jobs.models import Item, Job
from apps.reports.items import job_items_refresh
from apps.reports.metrics import redundancy_curve
from apps.reports.models import (
    JobCurve,
    JobHour,
    RollupState,
    WorkerDay,
    WorkerDayValue,
    WorkerHour,
    WorkerHourValue,
)

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
# Labels younger than this stay above the watermark (read again by the next run): a
# transaction that holds an older id commits within it.
LAG = timedelta(minutes=5)
# Hours further apart than this are re-rolled by separate range scans.
GAP = timedelta(hours=6)
# The redundancy curve reads at most this many labels per gold item.
CURVE_MAX_K = 20

COUNTS = (
    "labels",
    "expert_labels",
    "crowd_labels",
    "gold_answers",
    "gold_correct",
    "duration_ms_sum",
    "duration_n",
)
MONEY = ("paid_crowd", "paid_gold", "paid_expert")
FIGURES = COUNTS + MONEY

_REGULAR_CROWD = Q(is_gold=False, tier="crowd")


CENT = Decimal("0.0001")


def money(value: Any) -> Decimal:
    """A sum of money as an exact Decimal with the ledger's four places (SQLite hands sums
    back as floats)."""
    return Decimal("0") if value is None else Decimal(str(value)).quantize(CENT)


def _with_keys(labels: QuerySet[Label], keys: Sequence[str]) -> QuerySet[Label]:
    if "hour" in keys:
        labels = labels.annotate(hour=TruncHour("created_at"))
    if "day" in keys:
        labels = labels.annotate(day=TruncDay("created_at"))
    return labels


def label_figures(labels: QuerySet[Label], keys: Sequence[str]) -> list[dict[str, Any]]:
    """The rollup figures of these labels grouped by `keys` (fields of Label, or "hour" /
    "day" of created_at), in one grouped query; paid money from their ledger credits."""
    paid = "ledger_entry__amount"
    sums = dict(
        labels=Count("id"),
        expert_labels=Count("id", filter=Q(tier="expert")),
        crowd_labels=Count("id", filter=_REGULAR_CROWD),
        gold_answers=Count("id", filter=Q(is_gold=True)),
        gold_correct=Count("id", filter=Q(is_gold=True, is_correct=True)),
        duration_ms_sum=Coalesce(Sum("duration_ms"), 0),
        duration_n=Count("duration_ms"),
        paid_crowd=Sum(paid, filter=_REGULAR_CROWD),
        paid_gold=Sum(paid, filter=Q(is_gold=True)),
        paid_expert=Sum(paid, filter=Q(is_gold=False, tier="expert")),
    )
    if not keys:  # (values() without fields would group by every column)
        rows = [labels.aggregate(**sums)]
    else:
        rows = _with_keys(labels, keys).values(*keys).annotate(**sums).order_by()
    out = []
    for row in rows:
        for name in MONEY:
            row[name] = money(row[name])
        out.append(row)
    return out


def label_ranks(labels: QuerySet[Label], keys: Sequence[str]) -> list[dict[str, Any]]:
    """Crowd labels on regular items counted by their rank within the item (1 for the
    item's first crowd label by id), grouped by `keys` and "rank"."""
    earlier = (
        Label.objects.filter(_REGULAR_CROWD, item_id=OuterRef("item_id"), id__lte=OuterRef("id"))
        .order_by()
        .values("item_id")
        .annotate(n=Count("id"))
        .values("n")
    )
    return list(
        _with_keys(labels.filter(_REGULAR_CROWD), keys)
        .annotate(rank=Subquery(earlier))
        .values(*keys, "rank")
        .annotate(n=Count("id"))
        .order_by()
    )


def label_values(labels: QuerySet[Label], keys: Sequence[str]) -> list[dict[str, Any]]:
    """Labels counted per answered value, grouped by `keys` and "value"."""
    return list(_with_keys(labels, keys).values(*keys, "value").annotate(n=Count("id")).order_by())


def _clusters(hours: Iterable[datetime]) -> list[list[datetime]]:
    """Hours sorted and cut where they are more than GAP apart (one range scan each)."""
    out: list[list[datetime]] = []
    for hour in sorted(set(hours)):
        if out and hour - out[-1][-1] <= GAP:
            out[-1].append(hour)
        else:
            out.append([hour])
    return out


def _state_locked() -> RollupState:
    RollupState.objects.get_or_create(pk=1)
    return RollupState.objects.select_for_update().get(pk=1)


def _roll_job_hours(job_id: int, hours: list[datetime], until: datetime) -> int:
    """Replace the rows of these hours of one job by sums of their labels made before
    `until` (the boundary the pages count live labels from); returns the labels read. The
    caller holds the state lock, in a transaction."""
    wanted = set(hours)
    labels = Label.objects.filter(
        job_id=job_id, created_at__gte=hours[0], created_at__lt=min(hours[-1] + HOUR, until)
    )
    job_rows = [r for r in label_figures(labels, ["hour"]) if r["hour"] in wanted]
    worker_rows = [r for r in label_figures(labels, ["worker_id", "hour"]) if r["hour"] in wanted]
    ranks: dict[datetime, dict[str, int]] = defaultdict(dict)
    for r in label_ranks(labels, ["hour"]):
        if r["hour"] in wanted and r["rank"]:
            ranks[r["hour"]][str(r["rank"])] = r["n"]
    values = [r for r in label_values(labels, ["worker_id", "hour"]) if r["hour"] in wanted]
    for table in (JobHour, WorkerHour, WorkerHourValue):
        table.objects.filter(job_id=job_id, hour__in=wanted).delete()
    _write(JobHour, job_id, [{**r, "by_rank": ranks.get(r["hour"], {})} for r in job_rows])
    _write(WorkerHour, job_id, worker_rows)
    _write(WorkerHourValue, job_id, values)
    _roll_job_days(job_id, {day_of(hour) for hour in wanted})
    return sum(r["labels"] for r in job_rows)


def day_of(moment: datetime) -> datetime:
    """The start of the moment's day in UTC (the rollups' days are UTC days)."""
    return moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def _roll_job_days(job_id: int, days: set[datetime]) -> None:
    """Rewrite the job's WorkerDay and WorkerDayValue rows of these days as sums of their
    hours' rows (the caller just rewrote those hours)."""
    start, end = min(days), max(days) + DAY
    hours = {"job_id": job_id, "hour__gte": start, "hour__lt": end}
    per_day = TruncDay("hour", tzinfo=UTC)
    worker_rows = (
        WorkerHour.objects.filter(**hours)
        .annotate(day=per_day)
        .values("worker_id", "day")
        .annotate(**{name: Sum(name) for name in FIGURES})
        .order_by()
    )
    value_rows = (
        WorkerHourValue.objects.filter(**hours)
        .annotate(day=per_day)
        .values("worker_id", "day", "value")
        .annotate(n=Sum("labels"))
        .order_by()
    )
    for table in (WorkerDay, WorkerDayValue):
        table.objects.filter(job_id=job_id, day__in=days).delete()
    _write(WorkerDay, job_id, [r for r in worker_rows if r["day"] in days])
    _write(WorkerDayValue, job_id, [r for r in value_rows if r["day"] in days])


def _write(table, job_id: int, rows: Iterable[dict[str, Any]]) -> None:
    """Insert rollup rows of one job (dicts of field values; a count named "n" goes to the
    `labels` field)."""
    table.objects.bulk_create(
        [
            table(job_id=job_id, **{("labels" if k == "n" else k): v for k, v in r.items()})
            for r in rows
        ],
        batch_size=2000,
    )


def _roll(keys: Iterable[tuple[int, datetime]], until: datetime) -> int:
    by_job: dict[int, set[datetime]] = defaultdict(set)
    for job_id, hour in keys:
        by_job[job_id].add(hour)
    read = 0
    for job_id, hours in sorted(by_job.items()):
        for cluster in _clusters(hours):
            read += _roll_job_hours(job_id, cluster, until)
    return read


def job_curve_refresh(*, job_id: int, now: datetime | None = None) -> JobCurve:
    """Recompute the job's redundancy curve from the crowd answers on its gold items (read
    item by item through the label's (item, worker) index)."""
    truth = dict(
        Item.objects.filter(job_id=job_id, gold_label__isnull=False).values_list("id", "gold_label")
    )
    answers: dict[int, list[str]] = defaultdict(list)
    for item_id, value in (
        Label.objects.filter(item_id__in=list(truth), tier="crowd")
        .order_by("item_id", "id")
        .values_list("item_id", "value")
        .iterator(chunk_size=20_000)
    ):
        if len(answers[item_id]) < CURVE_MAX_K:
            answers[item_id].append(value)
    points = redundancy_curve(
        ((truth[item_id], values) for item_id, values in answers.items()), CURVE_MAX_K
    )
    curve, _ = JobCurve.objects.update_or_create(
        job_id=job_id,
        defaults={
            "points": [asdict(p) for p in points],
            "computed_at": now or timezone.now(),
        },
    )
    return curve


@dataclass(frozen=True)
class RollupRun:
    hours: int  # (job, hour) pairs re-rolled
    labels_read: int
    curves: int  # redundancy curves recomputed
    watermark: int


def rollup_run(*, now: datetime | None = None) -> RollupRun:
    """One run of the beat task: re-roll the hours of every label above the watermark,
    refresh the curves of jobs with new gold answers, move the watermark and the covered
    boundary. Safe to run twice or concurrently (the state row's lock serializes runs)."""
    now = now or timezone.now()
    with transaction.atomic():
        state = _state_locked()
        # One statement, so the watermark and the hours come from the same snapshot.
        rows = list(
            Label.objects.filter(id__gt=state.watermark)
            .annotate(hour=TruncHour("created_at"))
            .values_list("job_id", "hour")
            .annotate(
                top=Max("id"),
                recent=Min("id", filter=Q(created_at__gte=now - LAG)),
                gold=Count("id", filter=Q(is_gold=True)),
            )
            .order_by()
        )
        keys = {(job_id, hour) for job_id, hour, *_ in rows}
        read = _roll(keys, now)
        gold_jobs = sorted({job_id for job_id, _, _, _, gold in rows if gold})
        for job_id in gold_jobs:
            job_curve_refresh(job_id=job_id, now=now)
        # The item counts of the jobs that move: running or paused, or with new labels.
        moving = set(
            Job.objects.filter(status__in=[Job.Status.RUNNING, Job.Status.PAUSED]).values_list(
                "id", flat=True
            )
        ) | {job_id for job_id, *_ in rows}
        for job_id in sorted(moving):
            job_items_refresh(job_id=job_id, now=now)
        recent = [r[3] for r in rows if r[3] is not None]
        if recent:
            state.watermark = min(recent) - 1
        elif rows:
            state.watermark = max(r[2] for r in rows)
        state.covered_until = now
        state.ran_at = now
        state.save(update_fields=["watermark", "covered_until", "ran_at"])
    return RollupRun(
        hours=len(keys), labels_read=read, curves=len(gold_jobs), watermark=state.watermark
    )


def rollup_item(*, item_id: int) -> int:
    """Re-roll the hours of one item's labels (after its labels changed in place, as when
    QC re-scores a gold item's answers) and its job's curve if it is gold; returns the
    hours re-rolled."""
    item = Item.objects.filter(pk=item_id).values("job_id", "gold_label").first()
    if item is None:
        return 0
    with transaction.atomic():
        state = _state_locked()
        keys = set(
            Label.objects.filter(item_id=item_id)
            .annotate(hour=TruncHour("created_at"))
            .values_list("job_id", "hour")
            .distinct()
        )
        # Only up to the pages' boundary: the labels after it are counted live.
        _roll(keys, state.covered_until or timezone.now())
        if item["gold_label"] is not None:
            job_curve_refresh(job_id=item["job_id"])
    return len(keys)


def rollup_rebuild(*, job_id: int | None = None) -> RollupRun:
    """Drop the rollups (of one job, or all) and roll every hour again from the labels."""
    jobs = Job.objects.all() if job_id is None else Job.objects.filter(pk=job_id)
    with transaction.atomic():
        state = _state_locked()
        for table in (JobHour, WorkerHour, WorkerHourValue, WorkerDay, WorkerDayValue):
            table.objects.filter(job__in=jobs).delete()
        keys = set(
            Label.objects.filter(job__in=jobs)
            .annotate(hour=TruncHour("created_at"))
            .values_list("job_id", "hour")
            .distinct()
        )
        read = _roll(keys, state.covered_until or timezone.now())
        gold_jobs = sorted(
            set(
                Label.objects.filter(job__in=jobs, is_gold=True)
                .values_list("job_id", flat=True)
                .distinct()
            )
        )
        for gold_job in gold_jobs:
            job_curve_refresh(job_id=gold_job)
    run = rollup_run()
    return RollupRun(
        hours=len(keys) + run.hours,
        labels_read=read + run.labels_read,
        curves=len(gold_jobs) + run.curves,
        watermark=run.watermark,
    )
