"""The next task: a worker asks for work and gets a leased item, or the reason there is none.

Composes the leasing primitives (apps.assignments.leasing: the ORM rule and the PostgreSQL
statement), gold draws (apps.quality.gold) and pre-labels (apps.routing).
"""

from __future__ import annotations

import itertools
import random
from datetime import datetime

from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.assignments import fastpath
from apps.assignments.leasing import (
    NO_OPEN_JOB_RETRY_S,
    Idle,
    IdleReason,
    Task,
    candidate,
    cap_reached,
    idle_in_job,
    lease_fast,
    lease_item,
    worker_item_states,
    worker_open_jobs,
)
from apps.assignments.sweeps import lease_sweep
from apps.common.retry import retry_on_deadlock
from apps.jobs.models import Item, Job
from apps.quality.gold import gold_pick, gold_rate_ceiling, gold_rate_for, gold_record_shown
from apps.routing.services import prelabel_for_lease
from apps.workforce.models import Worker

# Seeding a Random per request reads os.urandom; one per process is enough for gold draws.
_RNG = random.Random()


def _prelabel(*, job: Job, item: Item) -> str | None:
    """The suggestion shown with the task, or None.

    With routing "prelabels" on, the routing model's suggestion (apps.routing records that
    it was shown, to measure its effect on gold accuracy). Otherwise the client's predicted
    class, shown only if the job's policy asks for it.
    Precondition: called by _lease right after the item's assignment was created.
    """
    suggestion = prelabel_for_lease(job=job, item=item)
    if suggestion is not None:
        return suggestion
    classes = job.classes
    prediction = item.prediction
    if not job.spec.policy.show_prelabel or not isinstance(prediction, list):
        return None
    if len(prediction) != len(classes) or not classes:
        return None
    return classes[max(range(len(classes)), key=lambda i: prediction[i])]


def _task(*, job: Job, leased: fastpath.Leased) -> Task:
    """The leased item as the annotator sees it (with its pre-label, recorded if shown)."""
    item = leased.item
    return Task(
        id=leased.assignment_id,
        job=job.pk,
        item=item.pk,
        external_id=item.external_id,
        payload=item.payload,
        classes=job.classes,
        instructions=job.instructions,
        prelabel=_prelabel(job=job, item=item),
        expires_at=leased.expires_at,
        label_schema=job.label_schema,
    )


def _wants_gold(*, job: Job, worker: Worker, rng: random.Random) -> bool:
    """Draw whether this lease should be a control item, at the worker's adaptive rate.

    The job's gold rate, raised for new or uncertain workers and lowered for proven ones
    (apps.quality); the worker's gold record is read only when the draw falls below the
    highest rate anyone could have.
    """
    base = job.spec.policy.gold_rate
    if base <= 0:
        return False
    draw = rng.random()
    if draw >= gold_rate_ceiling(job=job, base_rate=base):
        return False
    return draw < gold_rate_for(job=job, worker_id=worker.pk, base_rate=base)


def _try_lease_in_job(
    *, job: Job, worker: Worker, now: datetime, rng: random.Random
) -> Task | None:
    states = worker_item_states(worker=worker)
    # Gold is mixed in only while there is real work, at the job's rate: a gold item is
    # leased instead of a real candidate, so idle workers are not paid for gold.
    want_gold = _wants_gold(job=job, worker=worker, rng=rng)
    if fastpath.enabled() and not want_gold:
        leased = lease_fast(job=job, worker=worker, states=states, now=now)
        return None if leased is None else _task(job=job, leased=leased)
    with transaction.atomic():
        # As the fast path's lease statement does: the worker's status from the database,
        # not from the request's cached credentials (a ban made a moment ago counts).
        if not Worker.objects.filter(pk=worker.pk, status=Worker.Status.ACTIVE).exists():
            return None
        fastpath.served(fastpath.Path.ORM)
        # As the fast path: first an item nobody holds (spread), then any with a free slot.
        for state, spread in itertools.product(states, (True, False)):
            item = candidate(job=job, worker=worker, state=state, spread=spread)
            if item is None:
                continue
            if want_gold:
                # Class-balanced, never retired, never one the worker has had.
                gold = gold_pick(job=job, worker=worker, rng=rng)
                if gold is not None:
                    leased = lease_item(job=job, worker=worker, item=gold, is_gold=True, now=now)
                    gold_record_shown(
                        item_id=gold.pk,
                        job_id=job.pk,
                        max_exposures=job.spec.policy.gold_max_exposures,
                    )
                    return _task(job=job, leased=leased)
            leased = lease_item(job=job, worker=worker, item=item, is_gold=False, now=now)
            return _task(job=job, leased=leased)
    return None


@retry_on_deadlock
def assignment_next(
    *,
    worker: Worker,
    job_id: int | None = None,
    now: datetime | None = None,
    rng: random.Random | None = None,
) -> Task | Idle:
    """Lease the worker the next item, or say why there is none.

    Jobs are tried in id order; within a job, higher priority first, then FIFO by id. Each
    lease is one short transaction; on PostgreSQL concurrent callers skip each other's
    locked rows, on SQLite the IMMEDIATE transaction serializes them.
    """
    if worker.status == Worker.Status.BANNED:
        return Idle(IdleReason.WORKER_BANNED)
    if worker.status == Worker.Status.SUSPENDED:
        return Idle(IdleReason.WORKER_SUSPENDED)
    now = now or timezone.now()
    rng = rng or _RNG
    jobs = worker_open_jobs(worker=worker, job_id=job_id)
    if not jobs:
        return Idle(IdleReason.NO_OPEN_JOB, retry_after=NO_OPEN_JOB_RETRY_S)

    idles: list[Idle] = []
    for job in jobs:
        if cap_reached(job=job, worker=worker):
            idles.append(Idle(IdleReason.CAP_REACHED))
            continue
        for attempt in range(2):
            try:
                task = _try_lease_in_job(job=job, worker=worker, now=now, rng=rng)
            except IntegrityError:
                # Only a concurrent request of the same worker for the same item gets here
                # (the (item, worker) constraint); the retry no longer sees that item.
                task = None
            if task is not None:
                return task
            # Nothing free: return the slots of lapsed leases in this job (lazily, between
            # beat sweeps) and look once more.
            if attempt == 0 and not lease_sweep(job_id=job.pk, now=now):
                break
        idles.append(idle_in_job(job=job, worker=worker, now=now))

    # The lease read the worker's status from the database: a worker banned or suspended
    # since the request's credentials were read (a ban in another process, a quality
    # suspension by their last label) is told so, not "all leased".
    current = Worker.objects.filter(pk=worker.pk).values_list("status", flat=True).first()
    if current == Worker.Status.BANNED:
        return Idle(IdleReason.WORKER_BANNED)
    if current == Worker.Status.SUSPENDED:
        return Idle(IdleReason.WORKER_SUSPENDED)
    for reason in (IdleReason.ALL_LEASED, IdleReason.CAP_REACHED, IdleReason.EXHAUSTED):
        matching = [idle for idle in idles if idle.reason == reason]
        if matching:
            retries = [idle.retry_after for idle in matching if idle.retry_after is not None]
            return Idle(reason, retry_after=min(retries) if retries else None)
    return Idle(IdleReason.EXHAUSTED)
