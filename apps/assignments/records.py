"""Recording labels and ending leases: the two writers of a label and the item changes
other deciders make (an expert slot, a finished job).

A label's outcome is decided above (apps.pipeline.decide) and applied here as it is:
write_label_sql (PostgreSQL, one statement through apps.assignments.fastpath) and
write_label_orm (any database) write the same rows for the same plan;
tests/assignments/test_parity.py holds them equal.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone
from rest_framework import status

from apps.assignments import fastpath
from apps.assignments.leasing import JOB_COLUMNS
from apps.assignments.models import Assignment, Label
from apps.assignments.sweeps import job_leases_release
from apps.common.errors import ApplicationError, ErrorCode
from apps.common.retry import retry_on_deadlock
from apps.jobs.kinds import SINGLE_CHOICE, answer_shown, answer_stored
from apps.jobs.models import Item, Job
from apps.webhooks import events as webhooks
from apps.workforce.models import Worker
from apps.workforce.services import label_price, ledger_credit_label

# The item columns a label's decision reads.
DECISION_COLUMNS = (
    "id",
    "job_id",
    "gold_label",
    "state",
    "n_labels",
    "labels_needed",
    "vote_counts",
    "result_meta",
)


@dataclass(frozen=True)
class SubmitResult:
    label: Label
    created: bool
    # The answer as the API shows it (a class name, or the kind's decoded JSON answer).
    answer: Any = None


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


def locked_assignment(*, assignment_id: int) -> Assignment:
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


def submittable(
    *,
    assignment: Assignment,
    worker: Worker,
    worker_status: str | None,
    label: Any,
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
        first = Label.objects.get(assignment_id=assignment.pk)
        shown = answer_shown(label_schema=assignment.job.label_schema, value=first.value)
        return SubmitResult(label=first, created=False, answer=shown)
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
    # Raises the 400 naming what does not fit the job's kind.
    stored = answer_stored(label_schema=job.label_schema, value=label)
    if job.kind == SINGLE_CHOICE and stored not in job.classes:
        # A fractional, NaN or unknown label ("1.5", "nan", "Cat") is no class name: 400,
        # naming the assignment it was for (the worker's handle on the item: an item id
        # would tell gold apart, see AssignmentNextApi).
        raise ApplicationError(
            f"{label!r} is not one of the job's classes (assignment {assignment.pk}).",
            details={
                "label": [f"Choose one of: {', '.join(job.classes)}."],
                "assignment": assignment.pk,
            },
        )
    return None


def write_label_sql(
    *,
    read: fastpath.SubmitRead,
    worker: Worker,
    label: str,
    duration_ms: int,
    updates: dict[str, Any],
    expert_slot: bool,
    now: datetime,
    is_correct: bool | None = None,
) -> Label | None:
    """The PostgreSQL writer: assignment, label, credit and the item's `updates` in one
    statement, only if the item still is as `read` saw it (None otherwise: nothing written)."""
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
        amount=label_price(pricing=job.spec.pricing, tier=worker.tier),
        item_values=updates,
        expert_slot=expert_slot,
        expect=(item.state, item.n_labels, item.labels_needed),
        now=now,
        is_correct=is_correct,
    )


def locked_item(*, item_id: int) -> Item:
    """The item's row, locked, with the columns a label's decision reads (ORM path)."""
    return Item.objects.select_for_update().only(*DECISION_COLUMNS).get(pk=item_id)


def write_label_orm(
    *,
    assignment: Assignment,
    item: Item,
    job: Job,
    worker: Worker,
    label: str,
    duration_ms: int,
    updates: dict[str, Any],
    expert_slot: bool,
    now: datetime,
    is_correct: bool | None = None,
) -> Label:
    """The ORM writer (any database): mark the assignment submitted, store and credit the
    label, and apply the item's `updates` (the slot becomes a label).

    Precondition: the assignment and item rows are locked in the current transaction.
    """
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
        is_correct=(is_correct if is_correct is not None else label == item.gold_label)
        if is_gold
        else None,
    )
    ledger_credit_label(
        worker_id=worker.pk,
        job_id=job.pk,
        label_id=stored.pk,
        tier=worker.tier,
        pricing=job.spec.pricing,
    )
    values = dict(updates)
    if expert_slot:
        # One more slot that only experts fill, from the row as it is.
        values["labels_needed"] = F("n_labels") + F("n_leases") + 1
    Item.objects.filter(pk=item.pk).update(
        n_leases=F("n_leases") - 1, n_labels=F("n_labels") + 1, **values
    )
    return stored


@retry_on_deadlock
def _assignment_end(
    *, worker: Worker, assignment_id: int, to_state: str, now: datetime | None
) -> Assignment:
    now = now or timezone.now()
    with transaction.atomic():
        assignment = locked_assignment(assignment_id=assignment_id)
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


def _conflict(message: str, code: ErrorCode) -> ApplicationError:
    return ApplicationError(message, code=code, status_code=status.HTTP_409_CONFLICT)


def _not_found() -> ApplicationError:
    return ApplicationError(
        "No such assignment.", code=ErrorCode.NOT_FOUND, status_code=status.HTTP_404_NOT_FOUND
    )
