"""The assignment engine: next task under a lease, submit, release, skip, the lease sweep, and
the label decision (vote tally) that the quality engine will replace."""

from __future__ import annotations

import enum
import functools
import itertools
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.db.models import Exists, F, Min, OuterRef, Q, QuerySet
from django.utils import timezone
from rest_framework import status

from apps.assignments import fastpath
from apps.assignments.models import Assignment, Label
from apps.common.errors import ApplicationError, ErrorCode
from apps.common.retry import retry_on_deadlock
from apps.jobs.models import Item, Job
from apps.quality.services import (
    classes_key,
    gold_pick,
    gold_rate_ceiling,
    gold_rate_for,
    gold_record_shown,
    item_decide_after_label,
    quality_after_label,
    quality_policy,
)
from apps.webhooks import events as webhooks
from apps.workforce.models import Pool, Worker
from apps.workforce.services import label_price, ledger_credit_label

# The columns of a job the engine reads; everything else stays in the database.
JOB_COLUMNS = ("id", "status", "label_schema", "instructions", "policy", "pricing", "routing")
LIVE_STATES = (Assignment.State.LEASED, Assignment.State.SUBMITTED)


# Seeding a Random per request reads os.urandom; one per process is enough for gold draws.
_RNG = random.Random()


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


@dataclass(frozen=True)
class Idle:
    """Nothing to do, and why."""

    reason: IdleReason
    retry_after: int | None = None

    @property
    def message(self) -> str:
        return IDLE_MESSAGES[self.reason]


@dataclass(frozen=True)
class Decision:
    """What a label did to its item: the fields the label decision writes."""

    state: str
    labels_needed: int
    label: str | None = None
    confidence: float | None = None
    agreement: float | None = None
    posterior: list[float] | None = None
    source: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def settled(self) -> bool:
        return self.state == Item.State.SETTLED


@dataclass(frozen=True)
class SubmitResult:
    label: Label
    created: bool


def _conflict(message: str, code: ErrorCode) -> ApplicationError:
    return ApplicationError(message, code=code, status_code=status.HTTP_409_CONFLICT)


def _not_found() -> ApplicationError:
    return ApplicationError(
        "No such assignment.", code=ErrorCode.NOT_FOUND, status_code=status.HTTP_404_NOT_FOUND
    )


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


def _not_seen_by(worker_id: int) -> Exists:
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
    return items.filter(~_not_seen_by(worker_id)).order_by("-priority", "id")


def _candidate(*, job: Job, worker: Worker, state: str, spread: bool) -> Item | None:
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


def _prelabel(*, job: Job, item: Item) -> str | None:
    """The suggestion shown with the task, or None.

    With routing "prelabels" on, the routing model's suggestion (apps.routing records that
    it was shown, to measure its effect on gold accuracy). Otherwise the client's predicted
    class, shown only if the job's policy asks for it.
    Precondition: called by _lease right after the item's assignment was created.
    """
    from apps.routing.services import prelabel_for_lease

    suggestion = prelabel_for_lease(job=job, item=item)
    if suggestion is not None:
        return suggestion
    classes = job.classes
    prediction = item.prediction
    if not job.effective_policy.get("show_prelabel") or not isinstance(prediction, list):
        return None
    if len(prediction) != len(classes) or not classes:
        return None
    return classes[max(range(len(classes)), key=lambda i: prediction[i])]


def _lease(*, job: Job, worker: Worker, item: Item, is_gold: bool, now: datetime) -> Task:
    """Take a slot on the item and record the lease.

    Precondition: inside a transaction, holding the item's row lock for a non-gold item.
    """
    Item.objects.filter(pk=item.pk).update(n_leases=F("n_leases") + 1)
    lease_seconds = int(job.effective_policy["lease_seconds"])
    assignment = Assignment.objects.create(
        item_id=item.pk,
        job_id=job.pk,
        worker_id=worker.pk,
        is_gold=is_gold,
        leased_at=now,
        expires_at=now + timedelta(seconds=lease_seconds),
    )
    return _task(job=job, item=item, assignment_id=assignment.pk, expires_at=assignment.expires_at)


def _task(*, job: Job, item: Item, assignment_id: int, expires_at: datetime) -> Task:
    """The leased item as the annotator sees it (with its pre-label, recorded if shown)."""
    return Task(
        id=assignment_id,
        job=job.pk,
        item=item.pk,
        external_id=item.external_id,
        payload=item.payload,
        classes=job.classes,
        instructions=job.instructions,
        prelabel=_prelabel(job=job, item=item),
        expires_at=expires_at,
    )


def _wants_gold(*, job: Job, worker: Worker, rng: random.Random) -> bool:
    """Draw whether this lease should be a control item, at the worker's adaptive rate.

    The job's gold rate, raised for new or uncertain workers and lowered for proven ones
    (apps.quality); the worker's gold record is read only when the draw falls below the
    highest rate anyone could have.
    """
    base = float(job.effective_policy.get("gold_rate") or 0.0)
    if base <= 0:
        return False
    draw = rng.random()
    if draw >= gold_rate_ceiling(job=job, base_rate=base):
        return False
    return draw < gold_rate_for(job=job, worker_id=worker.pk, base_rate=base)


def _try_lease_fast(*, job: Job, worker: Worker, states: list[str], now: datetime) -> Task | None:
    """The PostgreSQL lease: one statement per state tried (see apps.assignments.fastpath)."""
    expires = now + timedelta(seconds=int(job.effective_policy["lease_seconds"]))
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
            return _task(
                job=job,
                item=leased.item,
                assignment_id=leased.assignment_id,
                expires_at=leased.expires_at,
            )
    return None


def _try_lease_in_job(
    *, job: Job, worker: Worker, now: datetime, rng: random.Random
) -> Task | None:
    states = [Item.State.OPEN]
    if worker.tier == Worker.Tier.EXPERT:
        # Experts first take what the crowd could not settle, then help with open items.
        states = [Item.State.EXPERT, Item.State.OPEN]
    # Gold is mixed in only while there is real work, at the job's rate: a gold item is
    # leased instead of a real candidate, so idle workers are not paid for gold.
    want_gold = _wants_gold(job=job, worker=worker, rng=rng)
    if fastpath.enabled() and not want_gold:
        return _try_lease_fast(job=job, worker=worker, states=states, now=now)
    with transaction.atomic():
        # As the fast path's lease statement does: the worker's status from the database,
        # not from the request's cached credentials (a ban made a moment ago counts).
        if not Worker.objects.filter(pk=worker.pk, status=Worker.Status.ACTIVE).exists():
            return None
        fastpath.served(fastpath.Path.ORM)
        # As the fast path: first an item nobody holds (spread), then any with a free slot.
        for state, spread in itertools.product(states, (True, False)):
            item = _candidate(job=job, worker=worker, state=state, spread=spread)
            if item is None:
                continue
            if want_gold:
                # Class-balanced, never retired, never one the worker has had.
                gold = gold_pick(job=job, worker=worker, rng=rng)
                if gold is not None:
                    task = _lease(job=job, worker=worker, item=gold, is_gold=True, now=now)
                    gold_record_shown(
                        item_id=gold.pk,
                        job_id=job.pk,
                        max_exposures=int(quality_policy(job)["gold_max_exposures"]),
                    )
                    return task
            return _lease(job=job, worker=worker, item=item, is_gold=False, now=now)
    return None


def _idle_in_job(*, job: Job, worker: Worker, now: datetime) -> Idle:
    """Why the worker found nothing in this job (called only after a failed lease)."""
    states = [Item.State.OPEN]
    if worker.tier == Worker.Tier.EXPERT:
        states = [Item.State.EXPERT, Item.State.OPEN]
    waiting = (
        Item.objects.filter(
            job_id=job.pk,
            state__in=states,
            gold_label__isnull=True,
            n_labels__lt=F("labels_needed"),
        )
        .filter(~_not_seen_by(worker.pk))
        .exists()
    )
    if not waiting:
        return Idle(IdleReason.EXHAUSTED)
    earliest = Assignment.objects.filter(job_id=job.pk, state=Assignment.State.LEASED).aggregate(
        at=Min("expires_at")
    )["at"]
    retry = ALL_LEASED_RETRY_MAX_S
    if earliest is not None:
        retry = int((earliest - now).total_seconds()) + 1
    return Idle(IdleReason.ALL_LEASED, retry_after=max(1, min(retry, ALL_LEASED_RETRY_MAX_S)))


def _cap_reached(*, job: Job, worker: Worker) -> bool:
    cap = job.effective_policy.get("max_items_per_worker")
    if not cap:
        return False
    taken = Assignment.objects.filter(worker_id=worker.pk, job_id=job.pk, state__in=LIVE_STATES)
    return taken.count() >= int(cap)


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
        if _cap_reached(job=job, worker=worker):
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
        idles.append(_idle_in_job(job=job, worker=worker, now=now))

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


# --------------------------------------------------------------------------- label decision


def decide_by_votes(
    *,
    vote_counts: dict[str, int],
    n_labels: int,
    labels_needed: int,
    classes: list[str],
    policy: dict,
) -> Decision:
    """The crowd decision by majority vote: the single place the quality engine replaces.

    Called when an open item received a label. While labels are still outstanding the item
    stays open; once it has all it needs, a clear majority settles it, a tie asks for one
    more label, and a tie at max_labels sends it to QC review.
    """
    min_labels = int(policy.get("min_labels") or 1)
    max_labels = max(int(policy.get("max_labels") or min_labels), min_labels)
    if n_labels < labels_needed:
        return Decision(state=Item.State.OPEN, labels_needed=labels_needed)
    if n_labels < min_labels:
        # The item was created with a smaller budget than the policy asks for.
        return Decision(state=Item.State.OPEN, labels_needed=min_labels)
    total = sum(vote_counts.values()) or 1
    order = list(classes) + sorted(set(vote_counts) - set(classes))
    top = max(vote_counts.values())
    leaders = [c for c in order if vote_counts.get(c, 0) == top]
    posterior = [vote_counts.get(c, 0) / total for c in classes]
    agreement = top / total
    if len(leaders) == 1:
        return Decision(
            state=Item.State.SETTLED,
            labels_needed=labels_needed,
            label=leaders[0],
            confidence=agreement,
            agreement=agreement,
            posterior=posterior,
            source=Item.Source.CROWD,
            extra={"method": "majority_vote"},
        )
    if labels_needed < max_labels:
        return Decision(
            state=Item.State.OPEN,
            labels_needed=labels_needed + 1,
            agreement=agreement,
            posterior=posterior,
        )
    return Decision(
        state=Item.State.REVIEW,
        labels_needed=labels_needed,
        agreement=agreement,
        posterior=posterior,
        confidence=agreement,
        extra={"method": "majority_vote", "tied": leaders},
    )


@dataclass(frozen=True)
class LabelPlan:
    """What one label does to its item: the decision (None for gold), the item's new column
    values, and whether the item gets one more slot that only an expert fills."""

    decision: Decision | None
    updates: dict[str, Any]
    expert_slot: bool


def item_label_plan(
    *,
    item: Item,
    job: Job,
    value: str,
    tier: str,
    worker_id: int,
    now: datetime,
    known: tuple[list, dict, dict] | None = None,
    escalate: bool = True,
) -> LabelPlan:
    """Decide the item after one more label: count the vote and run the job's decision.

    Precondition: the item's row is locked in the current transaction, or the write that
    follows re-checks the item columns this read (fastpath.record_label's `expect`); the
    label's lease is counted in item.n_leases. `known`: the item's (answers, worker statuses, stored
    matrices) including this label, when the caller already read them; otherwise the label
    is already stored and the quality engine reads them. `escalate=False` leaves a decision
    to send the item to review as the crowd made it (state review), without asking the
    escalation policy (which reads the job's experts) where it goes.
    """
    votes = dict(item.vote_counts or {})
    votes[value] = votes.get(value, 0) + 1
    # The slot becomes a label (n_leases - 1, n_labels + 1, in SQL) plus these values.
    updates: dict[str, Any] = {"vote_counts": votes, "updated_at": now}
    expert_slot = False
    decision: Decision | None = None
    if item.gold_label is None:
        if item.state == Item.State.EXPERT and tier == Worker.Tier.EXPERT:
            # The expert's label weighs as the job's policy says; an expert who cannot settle
            # the item sends it to QC (apps.reviews owns the escalation policy).
            from apps.reviews.services import expert_label_decide

            decision = expert_label_decide(
                item=item, job=job, votes=votes, value=value, worker_id=worker_id
            )
        elif item.state == Item.State.OPEN and job.effective_policy.get("aggregation") != "mv":
            # The quality engine: a posterior from the workers' confusion matrices.
            decision = item_decide_after_label(job=job, item=item, known=known)
        elif item.state == Item.State.OPEN:
            decision = decide_by_votes(
                vote_counts=votes,
                n_labels=item.n_labels + 1,
                labels_needed=item.labels_needed,
                classes=job.classes,
                policy=job.effective_policy,
            )
        if (
            escalate
            and item.state == Item.State.OPEN
            and decision
            and decision.state == Item.State.REVIEW
        ):
            # A disputed item goes to an expert first or straight to QC, as the job's
            # escalation policy says (apps.reviews).
            from apps.reviews.services import escalation_decide

            decision = escalation_decide(item=item, job=job, decision=decision)
    if decision is not None:
        updates.update(state=decision.state, labels_needed=decision.labels_needed)
        if decision.state == Item.State.EXPERT:
            # One more slot that only experts fill, from the pre-update counts (the SQL
            # right-hand side reads the old row).
            del updates["labels_needed"]
            expert_slot = True
        if decision.agreement is not None:
            updates.update(agreement=decision.agreement, posterior=decision.posterior)
        if decision.state in (Item.State.SETTLED, Item.State.REVIEW, Item.State.EXPERT):
            updates.update(
                label=decision.label,
                confidence=decision.confidence,
                source=decision.source,
                result_meta={**(item.result_meta or {}), **decision.extra},
            )
        if decision.settled:
            updates["settled_at"] = now
    return LabelPlan(decision=decision, updates=updates, expert_slot=expert_slot)


def _item_update_orm(*, item_id: int, plan: LabelPlan) -> None:
    updates = dict(plan.updates)
    if plan.expert_slot:
        updates["labels_needed"] = F("n_labels") + F("n_leases") + 1
    Item.objects.filter(pk=item_id).update(
        n_leases=F("n_leases") - 1, n_labels=F("n_labels") + 1, **updates
    )


def item_label_applied(
    *, item: Item, job: Job, plan: LabelPlan, worker_id: int, value: str, now: datetime
) -> None:
    """After the label and its item update are written: open the QC review of an item sent
    to review, sample settled items for audit, and the quality engine's bookkeeping."""
    if plan.decision is not None:
        from apps.reviews.services import item_decided

        item_decided(item=item, job=job, decision=plan.decision, now=now)
    quality_after_label(job=job, item=item, worker_id=worker_id, value=value)


def item_send_to_expert(*, item_id: int) -> None:
    """Ask an expert for one more label on the item (routing or QC decide when).

    The item leaves the crowd queue; its budget grows by one slot that only experts fill,
    and the expert's label settles it (source expert).
    """
    with transaction.atomic():
        item = Item.objects.select_for_update().only("id", "n_labels", "n_leases").get(pk=item_id)
        Item.objects.filter(pk=item.pk).update(
            state=Item.State.EXPERT,
            labels_needed=item.n_labels + item.n_leases + 1,
            updated_at=timezone.now(),
        )


def item_send_to_review(*, item_id: int, reason: str = "") -> None:
    """Put the item in QC review: no more crowd leases; QC's resolution settles it.

    Opens the item's review for `reason` (an apps.reviews Reason value; anything else is kept
    as the review's note under "disagreement"). Gold items keep their state.
    """
    from apps.reviews.models import Reason
    from apps.reviews.services import review_open

    known = reason in Reason.values
    with transaction.atomic():
        item = Item.objects.select_for_update().only("id", "job_id", "gold_label").get(pk=item_id)
        if item.gold_label is None:
            Item.objects.filter(pk=item.pk).update(
                state=Item.State.REVIEW, updated_at=timezone.now()
            )
        review_open(
            item=item,
            reason=reason if known else Reason.DISAGREEMENT,
            note="" if known else reason,
        )


def job_complete_if_done(*, job_id: int, now: datetime | None = None) -> bool:
    """Mark a running job completed once every non-gold item is settled; True if it did.

    Runs after the settling transaction committed, so that two labels settling the last
    two items concurrently cannot both miss each other.
    """
    if fastpath.enabled():
        unsettled = fastpath.job_has_unsettled(job_id=job_id)
    else:
        unsettled = Item.objects.filter(
            job_id=job_id,
            gold_label__isnull=True,
            state__in=[Item.State.OPEN, Item.State.EXPERT, Item.State.REVIEW],
        ).exists()
    if unsettled:
        return False
    now = now or timezone.now()
    done = Job.objects.filter(pk=job_id, status=Job.Status.RUNNING).update(
        status=Job.Status.COMPLETED, completed_at=now, updated_at=now
    )
    if done:
        # Gold leases may still be out; a finished job holds no live leases.
        job_leases_release(job_id=job_id, now=now)
        webhooks.job_completed_emit(job_id=job_id)
    return bool(done)


# --------------------------------------------------------------------------- submit / end


def _locked_assignment(*, assignment_id: int) -> Assignment:
    assignment = (
        Assignment.objects.select_for_update(of=("self",))
        .select_related("job", "worker")
        .only(
            "id",
            "state",
            "worker_id",
            "item_id",
            "is_gold",
            "leased_at",
            "expires_at",
            "worker__status",
            *(f"job__{name}" for name in JOB_COLUMNS),
        )
        .filter(pk=assignment_id)
        .first()
    )
    if assignment is None:
        raise _not_found()
    return assignment


@retry_on_deadlock
def assignment_submit(
    *,
    worker: Worker,
    assignment_id: int,
    label: str,
    duration_ms: int | None = None,
    now: datetime | None = None,
) -> SubmitResult:
    """Store the worker's answer for a live lease, credit it, and update the item.

    Idempotent: submitting a submitted assignment again returns the first answer and stores
    nothing. A foreign or lapsed lease is a 409, a label outside the job's classes a 400;
    neither stores anything.

    On PostgreSQL, outside a caller's transaction, a label that neither sends its item to
    review (QC or an expert) nor is a gold answer (most labels) takes two statements: a
    plain read, then one that re-checks what the decision was made from, writes everything
    and commits. Otherwise, or if the item changed in between, the locking path below
    decides under the row locks.
    """
    now = now or timezone.now()
    if fastpath.enabled() and not connection.in_atomic_block:
        done = _submit_unlocked(
            worker=worker,
            assignment_id=assignment_id,
            label=label,
            duration_ms=duration_ms,
            now=now,
        )
        if done is not None:
            return done
    with transaction.atomic():
        if fastpath.enabled():
            locked = fastpath.lock_for_submit(
                assignment_id=assignment_id, worker_id=worker.pk, classes_key=classes_key
            )
            if locked is None:
                raise _not_found()
            assignment, item = locked.assignment, locked.item
            fastpath.served(fastpath.Path.SQL_LOCKED)
        else:
            assignment, item, locked = _locked_assignment(assignment_id=assignment_id), None, None
            fastpath.served(fastpath.Path.ORM)
        # The assignment's worker's status, read with it (another worker's lease is refused
        # before the status matters).
        worker_status = locked.worker_status if locked is not None else assignment.worker.status
        first = _submittable(
            assignment=assignment, worker=worker, worker_status=worker_status, label=label, now=now
        )
        if first is not None:
            return first
        job = assignment.job
        if duration_ms is None:
            duration_ms = int((now - assignment.leased_at).total_seconds() * 1000)
        if locked is not None:
            # PostgreSQL: decide first from the answers read with the lock, then write the
            # assignment, label, credit and item update in one statement.
            plan = _plan_from_read(read=locked, worker=worker, label=label, now=now)
            stored = _record(
                read=locked, worker=worker, label=label, duration_ms=duration_ms, plan=plan, now=now
            )
            if stored is None:
                # The assignment and item are locked and were checked; only the worker's
                # status (not locked) can have changed since: a ban in between.
                raise ApplicationError(
                    "The worker is no longer active: no task may be submitted.",
                    code=ErrorCode.WORKER_INACTIVE,
                    status_code=status.HTTP_403_FORBIDDEN,
                )
        else:
            item, stored = _record_label_orm(
                assignment=assignment,
                job=job,
                worker=worker,
                label=label,
                duration_ms=duration_ms,
                now=now,
            )
            plan = item_label_plan(
                item=item, job=job, value=label, tier=worker.tier, worker_id=worker.pk, now=now
            )
            _item_update_orm(item_id=item.pk, plan=plan)
        item_label_applied(item=item, job=job, plan=plan, worker_id=worker.pk, value=label, now=now)
        if plan.decision is not None and plan.decision.settled:
            transaction.on_commit(lambda: job_complete_if_done(job_id=job.pk))
    return SubmitResult(label=stored, created=True)


def _submittable(
    *,
    assignment: Assignment,
    worker: Worker,
    worker_status: str | None,
    label: str,
    now: datetime,
) -> SubmitResult | None:
    """Raise the 4xx a submit of `label` on this assignment gets, if any; the first answer
    when it was submitted already (idempotent); None when it may be stored.

    `worker_status` is the worker's status read from the database with the assignment (not
    the request's cached credentials): a banned or suspended worker stores and earns nothing.
    """
    if assignment.worker_id != worker.pk:
        raise _conflict("This lease belongs to someone else.", ErrorCode.LEASE_NOT_YOURS)
    if assignment.state == Assignment.State.SUBMITTED:
        return SubmitResult(label=Label.objects.get(assignment_id=assignment.pk), created=False)
    if worker_status != Worker.Status.ACTIVE:
        raise ApplicationError(
            f"The worker is {worker_status}: no task may be submitted.",
            code=ErrorCode.WORKER_INACTIVE,
            status_code=status.HTTP_403_FORBIDDEN,
        )
    if assignment.state == Assignment.State.EXPIRED or (
        assignment.state == Assignment.State.LEASED and assignment.expires_at <= now
    ):
        raise _conflict("The lease has expired.", ErrorCode.LEASE_EXPIRED)
    if assignment.state != Assignment.State.LEASED:
        raise _conflict(f"The assignment was {assignment.state}.", ErrorCode.INVALID_STATE)
    job = assignment.job
    if job.status != Job.Status.RUNNING:
        raise _conflict(f"The job is {job.status}.", ErrorCode.INVALID_STATE)
    if label not in job.classes:
        # A fractional, NaN or unknown label ("1.5", "nan", "Cat") is no class name: 400,
        # naming the item it was for.
        raise ApplicationError(
            f"{label!r} is not one of the job's classes (item {assignment.item_id}).",
            details={
                "label": [f"Choose one of: {', '.join(job.classes)}."],
                "item": assignment.item_id,
            },
        )
    return None


def _plan_from_read(
    *,
    read: fastpath.SubmitRead,
    worker: Worker,
    label: str,
    now: datetime,
    escalate: bool = True,
) -> LabelPlan:
    return item_label_plan(
        item=read.item,
        job=read.assignment.job,
        value=label,
        tier=worker.tier,
        worker_id=worker.pk,
        now=now,
        known=read.answers.with_answer(
            worker_id=worker.pk, value=label, tier=worker.tier, status=worker.status
        ),
        escalate=escalate,
    )


def _record(
    *,
    read: fastpath.SubmitRead,
    worker: Worker,
    label: str,
    duration_ms: int,
    plan: LabelPlan,
    now: datetime,
) -> Label | None:
    item, job = read.item, read.assignment.job
    return fastpath.record_label(
        assignment_id=read.assignment.pk,
        item_id=item.pk,
        job_id=job.pk,
        worker_id=worker.pk,
        value=label,
        tier=worker.tier,
        duration_ms=duration_ms,
        gold_label=item.gold_label,
        amount=label_price(pricing=job.effective_pricing, tier=worker.tier),
        item_values=plan.updates,
        expert_slot=plan.expert_slot,
        expect=(item.state, item.n_labels, item.labels_needed),
        now=now,
    )


def _submit_unlocked(
    *, worker: Worker, assignment_id: int, label: str, duration_ms: int | None, now: datetime
) -> SubmitResult | None:
    """The two-statement submit (PostgreSQL, autocommit); None when the locking path must
    take over: the label sends its item to review (escalated there, once), has follow-up
    writes that belong in its transaction (an audit to open, a gold answer to count), or
    the item changed between the read and the write."""
    read = fastpath.read_for_submit(assignment_id=assignment_id, worker_id=worker.pk)
    if read is None:
        raise _not_found()
    fastpath.served(fastpath.Path.SQL)
    first = _submittable(
        assignment=read.assignment,
        worker=worker,
        worker_status=read.worker_status,
        label=label,
        now=now,
    )
    if first is not None:
        return first
    item, job = read.item, read.assignment.job
    if item.gold_label is not None:
        return None
    # Unescalated: a label that sends its item to review (to QC or, by the escalation
    # policy, to an expert) takes the locking path, which decides again and escalates once.
    plan = _plan_from_read(read=read, worker=worker, label=label, now=now, escalate=False)
    if plan.decision is not None:
        from apps.reviews.services import item_decided_writes

        if item_decided_writes(item=item, job=job, decision=plan.decision):
            return None
    if duration_ms is None:
        duration_ms = int((now - read.assignment.leased_at).total_seconds() * 1000)
    stored = _record(
        read=read, worker=worker, label=label, duration_ms=duration_ms, plan=plan, now=now
    )
    if stored is None:
        return None
    # Committed: what is left writes nothing (checked above) or runs after commit anyway.
    item_label_applied(item=item, job=job, plan=plan, worker_id=worker.pk, value=label, now=now)
    if plan.decision is not None and plan.decision.settled:
        job_complete_if_done(job_id=job.pk)
    return SubmitResult(label=stored, created=True)


def _record_label_orm(
    *,
    assignment: Assignment,
    job: Job,
    worker: Worker,
    label: str,
    duration_ms: int,
    now: datetime,
) -> tuple[Item, Label]:
    """Lock the item, mark the assignment submitted, store and credit the label (any DB)."""
    item = (
        Item.objects.select_for_update()
        .only(
            "id", "gold_label", "state", "n_labels", "labels_needed", "vote_counts", "result_meta"
        )
        .get(pk=assignment.item_id)
    )
    Assignment.objects.filter(pk=assignment.pk).update(
        state=Assignment.State.SUBMITTED, finished_at=now
    )
    is_gold = item.gold_label is not None
    stored = Label.objects.create(
        assignment_id=assignment.pk,
        item_id=item.pk,
        job_id=job.pk,
        worker_id=worker.pk,
        value=label,
        tier=worker.tier,
        duration_ms=duration_ms,
        is_gold=is_gold,
        is_correct=(label == item.gold_label) if is_gold else None,
    )
    ledger_credit_label(
        worker_id=worker.pk,
        job_id=job.pk,
        label_id=stored.pk,
        tier=worker.tier,
        pricing=job.effective_pricing,
    )
    return item, stored


@retry_on_deadlock
def _assignment_end(
    *, worker: Worker, assignment_id: int, to_state: str, now: datetime | None
) -> Assignment:
    now = now or timezone.now()
    with transaction.atomic():
        assignment = _locked_assignment(assignment_id=assignment_id)
        if assignment.worker_id != worker.pk:
            raise _conflict("This lease belongs to someone else.", ErrorCode.LEASE_NOT_YOURS)
        if assignment.state == to_state:
            return assignment
        if assignment.state == Assignment.State.EXPIRED:
            raise _conflict("The lease has expired.", ErrorCode.LEASE_EXPIRED)
        if assignment.state != Assignment.State.LEASED:
            raise _conflict(f"The assignment was {assignment.state}.", ErrorCode.INVALID_STATE)
        Item.objects.filter(pk=assignment.item_id).update(n_leases=F("n_leases") - 1)
        Assignment.objects.filter(pk=assignment.pk).update(state=to_state, finished_at=now)
        assignment.state = to_state
        assignment.finished_at = now
    return assignment


def assignment_release(
    *, worker: Worker, assignment_id: int, now: datetime | None = None
) -> Assignment:
    """Give a leased item back unanswered; its slot returns to the queue at once.

    The worker is not offered the item again (one assignment per worker and item).
    Idempotent for an already released assignment.
    """
    return _assignment_end(
        worker=worker, assignment_id=assignment_id, to_state=Assignment.State.RELEASED, now=now
    )


def assignment_skip(
    *, worker: Worker, assignment_id: int, now: datetime | None = None
) -> Assignment:
    """Decline a leased item (e.g. cannot judge it); like release, but recorded as a skip."""
    return _assignment_end(
        worker=worker, assignment_id=assignment_id, to_state=Assignment.State.SKIPPED, now=now
    )


# --------------------------------------------------------------------------- sweeps


@retry_on_deadlock
def _leases_end(*, assignment_filter: Q, to_state: str, now: datetime, limit: int) -> int:
    """End the live leases matching the filter and return their slots; returns how many.

    Locks assignments first, then items in id order: the same order as submit and release,
    so sweeps and annotators never deadlock. Leases being submitted right now are skipped.
    """
    with transaction.atomic():
        rows = list(
            Assignment.objects.filter(assignment_filter, state=Assignment.State.LEASED)
            .select_for_update(skip_locked=True, of=("self",))
            .order_by("id")
            .values_list("id", "item_id")[:limit]
        )
        if not rows:
            return 0
        per_item: dict[int, int] = {}
        for _, item_id in rows:
            per_item[item_id] = per_item.get(item_id, 0) + 1
        Assignment.objects.filter(pk__in=[pk for pk, _ in rows]).update(
            state=to_state, finished_at=now
        )
        list(
            Item.objects.filter(pk__in=list(per_item))
            .select_for_update()
            .order_by("id")
            .values_list("id", flat=True)
        )
        by_count: dict[int, list[int]] = {}
        for item_id, count in per_item.items():
            by_count.setdefault(count, []).append(item_id)
        for count, item_ids in by_count.items():
            Item.objects.filter(pk__in=item_ids).update(n_leases=F("n_leases") - count)
    return len(rows)


def lease_sweep(
    *, job_id: int | None = None, now: datetime | None = None, limit: int = 5000
) -> int:
    """Expire lapsed leases and release leases on jobs that stopped running; returns how many.

    Safe to run concurrently and repeatedly (Celery beat runs it every minute; the engine
    also runs it for one job when a worker finds nothing free).
    """
    now = now or timezone.now()
    scope = Q(job_id=job_id) if job_id is not None else Q()
    ended = _leases_end(
        assignment_filter=scope & Q(expires_at__lte=now),
        to_state=Assignment.State.EXPIRED,
        now=now,
        limit=limit,
    )
    if job_id is None:
        ended += _leases_end(
            assignment_filter=~Q(job__status=Job.Status.RUNNING),
            to_state=Assignment.State.RELEASED,
            now=now,
            limit=limit,
        )
    return ended


def job_leases_release(*, job_id: int, now: datetime | None = None) -> int:
    """Release every live lease of a job: call when it is paused, cancelled or completed."""
    now = now or timezone.now()
    total = 0
    while ended := _leases_end(
        assignment_filter=Q(job_id=job_id), to_state=Assignment.State.RELEASED, now=now, limit=5000
    ):
        total += ended
    return total


def worker_leases_release(*, worker_id: int, now: datetime | None = None) -> int:
    """Release every live lease of a worker: call when the worker is suspended or banned."""
    now = now or timezone.now()
    return _leases_end(
        assignment_filter=Q(worker_id=worker_id),
        to_state=Assignment.State.RELEASED,
        now=now,
        limit=100000,
    )
