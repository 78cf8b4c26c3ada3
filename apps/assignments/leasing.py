"""Leasing: which items a worker may take, and taking one (a slot and an assignment).

The primitives apps.pipeline.next composes into "the next task" (gold draws and pre-labels
live above, in apps.quality and apps.routing). Both paths are here: the ORM rule
(eligible_items, candidate, lease_item) and the PostgreSQL statement (lease_fast, through
apps.assignments.fastpath); tests/assignments/test_parity.py holds them equal."""

from __future__ import annotations

import enum
import functools
import itertools
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import connection, transaction
from django.db.models import Exists, F, Min, OuterRef, QuerySet

from apps.assignments import fastpath
from apps.assignments.models import Assignment
from apps.jobs.models import Item, Job
from apps.workforce.models import Pool, Worker

# The columns of a job the engine reads; everything else stays in the database.
JOB_COLUMNS = ("id", "status", "label_schema", "instructions", "policy", "pricing", "routing")
LIVE_STATES = (Assignment.State.LEASED, Assignment.State.SUBMITTED)


class IdleReason(enum.StrEnum):
    """Why a worker got no task: the `Concord-Idle-Reason` header of a 204."""

    WORKER_SUSPENDED = "worker_suspended"
    WORKER_BANNED = "worker_banned"
    NO_OPEN_JOB = "no_open_job"
    EXHAUSTED = "exhausted"
    ALL_LEASED = "all_leased"
    CAP_REACHED = "cap_reached"


IDLE_MESSAGES = {
    IdleReason.WORKER_SUSPENDED: "You are suspended.",
    IdleReason.WORKER_BANNED: "You are banned.",
    IdleReason.NO_OPEN_JOB: "No running job is open to your pools.",
    IdleReason.EXHAUSTED: "You have labeled or skipped everything that is left.",
    IdleReason.ALL_LEASED: "All remaining items are leased to others; retry shortly.",
    IdleReason.CAP_REACHED: "You reached the job's per-worker cap.",
}
# Waiting helps only for these; the value is a ceiling on the Retry-After we compute.
NO_OPEN_JOB_RETRY_S = 60
ALL_LEASED_RETRY_MAX_S = 60


@dataclass(frozen=True)
class Task:
    """A leased item as the annotator sees it."""

    id: int
    job: int
    item: int
    external_id: str
    payload: Any
    classes: list[str]
    instructions: str
    prelabel: str | None
    expires_at: datetime
    # The job's answer kind and its parameters (tags, levels, range, box classes and image).
    label_schema: dict | None = None


@dataclass(frozen=True)
class Idle:
    """Nothing to do, and why."""

    reason: IdleReason
    retry_after: int | None = None

    @property
    def message(self) -> str:
        return IDLE_MESSAGES[self.reason]


# --------------------------------------------------------------------------- next task


def worker_open_jobs(*, worker: Worker, job_id: int | None = None) -> list[Job]:
    """Running jobs open to one of the worker's pools (only the columns the engine reads)."""
    if fastpath.enabled():
        return fastpath.open_jobs(worker_id=worker.pk, job_id=job_id)
    open_job_ids = Pool.jobs.through.objects.filter(pool__members=worker.pk).values("job_id")
    jobs = Job.objects.filter(status=Job.Status.RUNNING, id__in=open_job_ids)
    if job_id is not None:
        jobs = jobs.filter(pk=job_id)
    return list(jobs.only(*JOB_COLUMNS).order_by("id"))


def not_seen_by(worker_id: int) -> Exists:
    # Probes the (item, worker) unique index once per candidate row: cost does not grow with
    # the worker's history, unlike excluding a list of the worker's item ids.
    return Exists(Assignment.objects.filter(item_id=OuterRef("pk"), worker_id=worker_id))


def eligible_items(*, job_id: int, worker_id: int, state: str, spread: bool) -> QuerySet[Item]:
    """The items of this state the worker may lease now, best first: not gold, a free slot,
    never assigned to the worker; with `spread`, only items nobody holds a lease on. The
    rule the fast path's lease statement carries in SQL (a test holds the two equal)."""
    items = Item.objects.filter(
        job_id=job_id,
        state=state,
        gold_label__isnull=True,
        n_labels__lt=F("labels_needed") - F("n_leases"),
    )
    if spread:
        items = items.filter(n_leases=0)
    return items.filter(~not_seen_by(worker_id)).order_by("-priority", "id")


def candidate(*, job: Job, worker: Worker, state: str, spread: bool) -> Item | None:
    """The best item of this state the worker may lease now, row-locked (PostgreSQL).

    Walks item_queue_idx (job, state, -priority, id) from the head and stops at the first
    row with a free slot that the worker has not seen and no other transaction holds:
    SKIP LOCKED lets concurrent annotators take different items without waiting.
    """
    return (
        eligible_items(job_id=job.pk, worker_id=worker.pk, state=state, spread=spread)
        .only("id", "external_id", "payload", "prediction")
        .select_for_update(skip_locked=True, of=("self",))
        .first()
    )


def lease_item(
    *, job: Job, worker: Worker, item: Item, is_gold: bool, now: datetime
) -> fastpath.Leased:
    """Take a slot on the item and record the lease.

    Precondition: inside a transaction, holding the item's row lock for a non-gold item.
    """
    Item.objects.filter(pk=item.pk).update(n_leases=F("n_leases") + 1)
    lease_seconds = job.spec.policy.lease_seconds
    assignment = Assignment.objects.create(
        item_id=item.pk,
        job_id=job.pk,
        worker_id=worker.pk,
        is_gold=is_gold,
        leased_at=now,
        expires_at=now + timedelta(seconds=lease_seconds),
    )
    return fastpath.Leased(assignment_id=assignment.pk, item=item, expires_at=assignment.expires_at)


def lease_fast(
    *, job: Job, worker: Worker, states: list[str], now: datetime
) -> fastpath.Leased | None:
    """The PostgreSQL lease: one statement per state tried (see apps.assignments.fastpath)."""
    expires = now + timedelta(seconds=job.spec.policy.lease_seconds)
    # First an item nobody holds (spread), then any item with a free slot.
    for state, spread in itertools.product(states, (True, False)):
        lease = functools.partial(
            fastpath.lease,
            job_id=job.pk,
            worker_id=worker.pk,
            state=state,
            now=now,
            expires=expires,
            spread=spread,
        )
        # In a caller's transaction (tests, nested services) a savepoint keeps a lost race
        # on the (item, worker) constraint from poisoning it; in autocommit the statement is
        # its own transaction.
        if connection.in_atomic_block:
            with transaction.atomic():
                leased = lease()
        else:
            leased = lease()
        if leased is not None:
            fastpath.served(fastpath.Path.SQL)
            return leased
    return None


def worker_item_states(*, worker: Worker) -> list[str]:
    """The item states the worker is handed, in the order they are tried: experts first take
    what the crowd could not settle, then help with open items."""
    if worker.tier == Worker.Tier.EXPERT:
        return [Item.State.EXPERT, Item.State.OPEN]
    return [Item.State.OPEN]


def items_left_for(*, worker: Worker, job_id: int | OuterRef) -> QuerySet[Item]:
    """The job's items the worker could still be handed, now or once others' leases end: of
    a state they take, not gold, short of labels, never assigned to them (labeled, skipped,
    released or leased). None left is what the engine calls EXHAUSTED. `job_id` may be an
    OuterRef, to count per job in one query."""
    return Item.objects.filter(
        job_id=job_id,
        state__in=worker_item_states(worker=worker),
        gold_label__isnull=True,
        n_labels__lt=F("labels_needed"),
    ).filter(~not_seen_by(worker.pk))


def idle_in_job(*, job: Job, worker: Worker, now: datetime) -> Idle:
    """Why the worker found nothing in this job (called only after a failed lease)."""
    waiting = items_left_for(worker=worker, job_id=job.pk).exists()
    if not waiting:
        return Idle(IdleReason.EXHAUSTED)
    earliest = Assignment.objects.filter(job_id=job.pk, state=Assignment.State.LEASED).aggregate(
        at=Min("expires_at")
    )["at"]
    retry = ALL_LEASED_RETRY_MAX_S
    if earliest is not None:
        retry = int((earliest - now).total_seconds()) + 1
    return Idle(IdleReason.ALL_LEASED, retry_after=max(1, min(retry, ALL_LEASED_RETRY_MAX_S)))


def cap_reached(*, job: Job, worker: Worker) -> bool:
    cap = job.spec.policy.max_items_per_worker
    if not cap:
        return False
    taken = Assignment.objects.filter(worker_id=worker.pk, job_id=job.pk, state__in=LIVE_STATES)
    return taken.count() >= int(cap)


# --------------------------------------------------------------------------- label decision


# --------------------------------------------------------------------------- submit / end


# --------------------------------------------------------------------------- sweeps
