"""Submitting a label: check it, gather what its decision reads, decide once
(apps.pipeline.decide.decide_label), write the plan with one of the two writers, then carry
out the follow-ups the plan names (a review, an audit, a gold answer's bookkeeping, the
job's re-aggregation trigger, the job's completion).

The writers (apps.assignments.records):
- write_label_sql: PostgreSQL. Outside a caller's transaction a label whose plan writes
  nothing beyond the label, its credit and the item row (most labels) takes two statements:
  a plain read, then one that re-checks the item is as read, writes and commits. Otherwise,
  or if the item changed in between, the same statement under the row locks.
- write_label_orm: any database (and PostgreSQL with CONCORD_FASTPATH=0), under the locks.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db import connection, transaction
from django.utils import timezone
from rest_framework import status

from apps.assignments import fastpath
from apps.assignments.models import Assignment, Label
from apps.assignments.records import (
    SubmitResult,
    job_complete_if_done,
    locked_assignment,
    locked_item,
    submittable,
    write_label_orm,
    write_label_sql,
)
from apps.common.errors import ApplicationError, ErrorCode
from apps.common.retry import retry_on_deadlock
from apps.common.tasks import enqueue_on_commit
from apps.jobs.kinds import SINGLE_CHOICE, answer_shown, answer_stored
from apps.jobs.models import Item, Job
from apps.pipeline.decide import Evidence, Plan, decide_label, needs_evidence
from apps.quality.aggregation import maybe_schedule_aggregation
from apps.quality.gold import gold_record_answer
from apps.quality.kinds import kind_worker_accuracies
from apps.quality.matrices import classes_key, job_class_prior, worker_confusions
from apps.quality.posterior import item_answers
from apps.reviews.services import expert_available, item_decided
from apps.routing.selectors import item_model_vote
from apps.workforce.models import Worker

__all__ = ["SubmitResult", "assignment_submit", "label_evidence"]


def _not_found() -> ApplicationError:
    return ApplicationError(
        "No such assignment.", code=ErrorCode.NOT_FOUND, status_code=status.HTTP_404_NOT_FOUND
    )


def label_evidence(
    *,
    job: Job,
    item: Item,
    answers: list[tuple[int, str, str]],
    statuses: dict[int, str],
    stored: dict[int, list] | None = None,
) -> Evidence:
    """What a posterior decision on `item` reads besides the row: its answers (the new one
    included) with each worker's matrix (`stored`: those already read with the answers), and
    the class prior or the routing model's vote. Another kind than single_choice reads the
    answers alone (apps.quality.kinds)."""
    if job.kind != SINGLE_CHOICE:
        workers = [(w, t) for w, _, t in answers]
        accuracies = kind_worker_accuracies(job=job, workers=workers, policy=job.spec.policy)
        return Evidence(
            answers=answers, statuses=statuses, matrices={}, prior=[], accuracies=accuracies
        )
    tiers = {w: t for w, _, t in answers}
    matrices = worker_confusions(job=job, worker_ids=list(tiers), tiers=tiers, stored=stored)
    prior = job_class_prior(job=job)
    routing = job.spec.routing if job.spec.routing.mode == "model" else None
    vote = None
    if routing is not None:
        # The model is a voter: its calibrated probabilities take the class prior's place.
        vote = item_model_vote(item_id=item.pk, n_classes=len(job.classes))
    return Evidence(
        answers=answers,
        statuses=statuses,
        matrices=matrices,
        prior=prior if vote is None else vote[0],
        model_voted=vote is not None,
        routing=routing,
        model_probs=None if vote is None else vote[1],
    )


def _plan(
    *,
    item: Item,
    job: Job,
    worker: Worker,
    label: str,
    now: datetime,
    known: tuple[list, dict, dict | None] | None,
    experts: bool = False,
    ask_experts: bool = True,
) -> Plan:
    """Gather (only what the decision reads) and decide. `known`: the item's earlier
    (answers, statuses, stored matrices) when the caller read them (PostgreSQL). A plan
    that needs to know whether an expert is available is made again with that read, unless
    `ask_experts` is off (the unlocked path hands such a label to the locking one)."""
    evidence = None
    if needs_evidence(job=job, item=item):
        if known is None:
            earlier, statuses = item_answers(item_id=item.pk)
            known = (earlier, statuses, None)
        answers, statuses, stored = known
        answers = [*answers, (worker.pk, label, worker.tier)]
        statuses = {**statuses, worker.pk: worker.status}
        evidence = label_evidence(
            job=job, item=item, answers=answers, statuses=statuses, stored=stored
        )
    plan = decide_label(
        item=item,
        job=job,
        value=label,
        tier=worker.tier,
        worker_id=worker.pk,
        now=now,
        evidence=evidence,
        experts_available=expert_available(job=job, item_id=item.pk) if experts else None,
    )
    if plan.needs_experts and not experts and ask_experts:
        return _plan(
            item=item, job=job, worker=worker, label=label, now=now, known=known, experts=True
        )
    return plan


def _known(read: fastpath.SubmitRead, worker: Worker) -> tuple[list, dict, dict]:
    answers = read.answers
    stored = dict(answers.matrices)
    if answers.mine is not None:
        stored[worker.pk] = answers.mine
    return answers.answers, answers.statuses, stored


def _follow_ups(*, item: Item, job: Job, plan: Plan, worker_id: int, now: datetime) -> None:
    """What the plan implies beyond the label and the item row, in the label's transaction
    (or after its commit): the QC review or audit it opens, the gold answer's count and the
    worker's rule check, the job's re-aggregation trigger and completion."""
    if plan.open_review or plan.audit:
        item_decided(item=item, job=job, decision=plan.decision, now=now)
    if plan.gold_correct is not None:
        gold_record_answer(item_id=item.pk, job_id=job.pk, correct=plan.gold_correct)
        enqueue_on_commit("quality.worker_rules_check", worker_id, job.pk)
    maybe_schedule_aggregation(job=job)
    if plan.settles:
        job_id = job.pk
        transaction.on_commit(lambda: job_complete_if_done(job_id=job_id))


def _write_sql(
    *, read: fastpath.SubmitRead, worker: Worker, label: str, ms: int, plan: Plan, now: datetime
) -> Label | None:
    return write_label_sql(
        read=read,
        worker=worker,
        label=label,
        duration_ms=ms,
        updates=plan.updates,
        expert_slot=plan.expert_slot,
        now=now,
        is_correct=plan.gold_correct,
    )


def _duration(duration_ms: int | None, assignment: Assignment, now: datetime) -> int:
    if duration_ms is not None:
        return duration_ms
    return int((now - assignment.leased_at).total_seconds() * 1000)


@retry_on_deadlock
def assignment_submit(
    *,
    worker: Worker,
    assignment_id: int,
    label: Any,
    duration_ms: int | None = None,
    now: datetime | None = None,
) -> SubmitResult:
    """Store the worker's answer for a live lease, credit it, and update the item.

    Idempotent: submitting a submitted assignment again returns the first answer and stores
    nothing. A foreign or lapsed lease is a 409, a label outside the job's classes a 400;
    neither stores anything.
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
            fastpath.served(fastpath.Path.SQL_LOCKED)
            assignment, worker_status = locked.assignment, locked.worker_status
        else:
            locked = None
            assignment = locked_assignment(assignment_id=assignment_id)
            fastpath.served(fastpath.Path.ORM)
            worker_status = assignment.worker.status
        # The worker's status as read with the assignment (another worker's lease is refused
        # before the status matters).
        first = submittable(
            assignment=assignment, worker=worker, worker_status=worker_status, label=label, now=now
        )
        if first is not None:
            return first
        job = assignment.job
        label = answer_stored(label_schema=job.label_schema, value=label)
        duration = _duration(duration_ms, assignment, now)
        if locked is not None:
            item = locked.item
            plan = _plan(
                item=item,
                job=job,
                worker=worker,
                label=label,
                now=now,
                known=_known(locked, worker),
            )
            stored = _write_sql(
                read=locked, worker=worker, label=label, ms=duration, plan=plan, now=now
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
            item = locked_item(item_id=assignment.item_id)
            plan = _plan(item=item, job=job, worker=worker, label=label, now=now, known=None)
            stored = write_label_orm(
                assignment=assignment,
                item=item,
                job=job,
                worker=worker,
                label=label,
                duration_ms=duration,
                updates=plan.updates,
                expert_slot=plan.expert_slot,
                now=now,
                is_correct=plan.gold_correct,
            )
        _follow_ups(item=item, job=job, plan=plan, worker_id=worker.pk, now=now)
    return _submitted(job=job, stored=stored)


def _submitted(*, job: Job, stored: Label) -> SubmitResult:
    shown = answer_shown(label_schema=job.label_schema, value=stored.value)
    return SubmitResult(label=stored, created=True, answer=shown)


def _submit_unlocked(
    *, worker: Worker, assignment_id: int, label: Any, duration_ms: int | None, now: datetime
) -> SubmitResult | None:
    """The two-statement submit (PostgreSQL, autocommit); None when the locking path must
    take over: the plan writes beyond the item (a review, an audit, a gold answer), sends
    the item to an expert or review, needs to know whether an expert is available, or the
    item changed between the read and the write."""
    read = fastpath.read_for_submit(assignment_id=assignment_id, worker_id=worker.pk)
    if read is None:
        raise _not_found()
    fastpath.served(fastpath.Path.SQL)
    first = submittable(
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
    label = answer_stored(label_schema=job.label_schema, value=label)
    plan = _plan(
        item=item,
        job=job,
        worker=worker,
        label=label,
        now=now,
        known=_known(read, worker),
        ask_experts=False,
    )
    escalated = plan.decision is not None and plan.decision.state in (
        Item.State.REVIEW,
        Item.State.EXPERT,
    )
    if plan.needs_experts or plan.writes_beyond_the_item or escalated:
        return None
    duration = _duration(duration_ms, read.assignment, now)
    stored = _write_sql(read=read, worker=worker, label=label, ms=duration, plan=plan, now=now)
    if stored is None:
        return None
    # Committed: the follow-ups of such a plan write nothing in the label's transaction.
    _follow_ups(item=item, job=job, plan=plan, worker_id=worker.pk, now=now)
    return _submitted(job=job, stored=stored)
