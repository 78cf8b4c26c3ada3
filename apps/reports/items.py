"""A job's item figures (states, sources, backlog): counted in one pass over its items, and
kept per job by the rollup run, so that a page reads one row instead of counting 100,000
items. A kept count older than STALE is not trusted: the page counts again."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

from django.db.models import BooleanField, Count, ExpressionWrapper, F, Q, Sum
from django.utils import timezone

from apps.jobs.models import Item
from apps.reports.models import JobItems

# The rollup refreshes the counts every minute; older ones mean beat is not running.
STALE = timedelta(minutes=3)


@dataclass(frozen=True)
class ItemFigures:
    total: int
    by_state: dict[str, int]  # every state, zeros included
    gold: int
    accepted: int  # settled regular (non-gold) items
    settled_by_source: dict[str, int]
    settled_last_hour: int
    labels_left: int  # labels the open and expert-waiting regular items still need


def item_figures_count(
    *, job_ids: Collection[int], now: datetime | None = None
) -> dict[int, ItemFigures]:
    """Everything the dashboards count about these jobs' items, in one grouped query."""
    now = now or timezone.now()
    waiting = Q(state__in=[Item.State.OPEN, Item.State.EXPERT])
    rows = (
        Item.objects.filter(job_id__in=job_ids)
        .annotate(is_gold=ExpressionWrapper(Q(gold_label__isnull=False), BooleanField()))
        .values("job_id", "state", "source", "is_gold")
        .annotate(
            n=Count("id"),
            recent=Count("id", filter=Q(settled_at__gte=now - timedelta(hours=1))),
            left=Sum(F("labels_needed") - F("n_labels"), filter=waiting),
        )
        .order_by()
    )
    acc = {
        job_id: {
            "by_state": dict.fromkeys(Item.State.values, 0),
            "settled_by_source": {},
            "gold": 0,
            "accepted": 0,
            "settled_last_hour": 0,
            "labels_left": 0,
        }
        for job_id in job_ids
    }
    for row in rows:
        into = acc[row["job_id"]]
        into["by_state"][row["state"]] += row["n"]
        into["gold"] += row["n"] if row["is_gold"] else 0
        if row["state"] == Item.State.SETTLED:
            sources = into["settled_by_source"]
            sources[row["source"]] = sources.get(row["source"], 0) + row["n"]
            into["settled_last_hour"] += row["recent"]
            into["accepted"] += 0 if row["is_gold"] else row["n"]
        if not row["is_gold"]:
            into["labels_left"] += row["left"] or 0
    return {
        job_id: ItemFigures(total=sum(into["by_state"].values()), **into)
        for job_id, into in acc.items()
    }


def job_items_refresh(*, job_id: int, now: datetime | None = None) -> ItemFigures:
    """Count the job's items and keep the figures (the rollup run; a page after an upload)."""
    now = now or timezone.now()
    figures = item_figures_count(job_ids=[job_id], now=now)[job_id]
    JobItems.objects.update_or_create(
        job_id=job_id, defaults={"figures": asdict(figures), "counted_at": now}
    )
    return figures


def job_items_forget(*, job_id: int) -> None:
    """Drop the job's kept figures (its items changed: an upload): pages count until the
    next run keeps them again."""
    JobItems.objects.filter(job_id=job_id).delete()


def item_figures(
    *, job_ids: Collection[int], now: datetime | None = None
) -> dict[int, ItemFigures]:
    """The jobs' item figures: the kept ones when fresh, counted anew otherwise."""
    now = now or timezone.now()
    kept = {
        job_id: ItemFigures(**figures)
        for job_id, figures in JobItems.objects.filter(
            job_id__in=job_ids, counted_at__gte=now - STALE
        ).values_list("job_id", "figures")
    }
    missing = [job_id for job_id in job_ids if job_id not in kept]
    if missing:
        kept.update(item_figures_count(job_ids=missing, now=now))
    return kept
