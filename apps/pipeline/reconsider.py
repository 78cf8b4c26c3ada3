"""Reconsider a worker's items once their labels stop counting (a suspension or a ban).

Each crowd item the worker labeled is decided again by the one decision a label makes
(apps.pipeline.decide, with the evidence apps.pipeline.submit gathers: the job's matrices or
the kind's worker accuracies, and in a routed job the model's vote, the crowd's tempering
and the cost-aware stopping rule), as if its last label had just arrived, with the worker's
labels at the policy's `suspended_label_weight` (0 by default: dropped). An item the
decision still settles keeps its result, refreshed; any other outcome (ask for more, an
expert, a review) sends it back to the queue for one more label, and that label's own
decision takes it from there.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Q
from django.utils import timezone

from apps.assignments.models import Label
from apps.jobs.kinds import SINGLE_CHOICE
from apps.jobs.models import Item, Job
from apps.pipeline.decide import (
    Decision,
    decide_by_kind,
    decide_by_posterior,
    decide_by_votes,
    result_meta_replaced,
)
from apps.pipeline.submit import label_evidence
from apps.quality.matrices import INACTIVE
from apps.quality.posterior import item_answers


def item_redecided(*, job: Job, item: Item) -> Decision | None:
    """The decision the item's labels make now, with inactive workers' labels weighed as
    the policy says; None when no label of an active worker is left to decide on."""
    answers, statuses = item_answers(item_id=item.pk)
    policy = job.spec.policy
    counted = [
        a for a in answers if statuses.get(a[0]) not in INACTIVE or policy.suspended_label_weight
    ]
    if not counted:
        return None
    if job.kind == SINGLE_CHOICE and policy.aggregation == "mv":
        votes: dict[str, int] = {}
        for _, value, _ in counted:
            votes[value] = votes.get(value, 0) + 1
        return decide_by_votes(
            vote_counts=votes,
            n_labels=len(counted),
            labels_needed=len(counted),
            classes=job.classes,
            policy=policy,
        )
    evidence = label_evidence(job=job, item=item, answers=answers, statuses=statuses)
    decider = decide_by_posterior if job.kind == SINGLE_CHOICE else decide_by_kind
    return decider(job=job, evidence=evidence, labels_needed=len(answers), policy=policy)


def items_reconsider_without(*, worker_id: int, job: Job) -> list[int]:
    """Decide again every open or crowd-settled item the worker labeled in the job (their
    labels no longer counting: call it once their status is inactive, in the same
    transaction); an item no longer settled goes back to the queue for one more label.
    Returns the ids of the items sent back for a label."""
    item_ids = list(
        Label.objects.filter(job=job, worker_id=worker_id, is_gold=False).values_list(
            "item_id", flat=True
        )
    )
    reopened = []
    for item in (
        Item.objects.select_for_update()
        .filter(pk__in=item_ids, state__in=[Item.State.OPEN, Item.State.SETTLED])
        .filter(Q(source__isnull=True) | Q(source=Item.Source.CROWD))
        .order_by("pk")
    ):
        decision = item_redecided(job=job, item=item)
        fields: dict[str, Any] = {"updated_at": timezone.now()}
        if decision is not None:
            fields.update(
                posterior=decision.posterior,
                result_meta=result_meta_replaced(item.result_meta, decision.extra),
            )
        settles = decision is not None and decision.settled
        if item.state == Item.State.SETTLED and not settles:
            fields.update(
                state=Item.State.OPEN,
                label=None,
                confidence=None,
                source=None,
                settled_at=None,
                labels_needed=item.n_labels + item.n_leases + 1,
            )
            reopened.append(item.pk)
        elif item.state == Item.State.OPEN and item.labels_needed <= item.n_labels + item.n_leases:
            fields["labels_needed"] = item.n_labels + item.n_leases + 1
            reopened.append(item.pk)
        elif item.state == Item.State.SETTLED:
            fields.update(
                label=decision.label, confidence=decision.confidence, agreement=decision.agreement
            )
        Item.objects.filter(pk=item.pk).update(**fields)
    if reopened:
        Job.objects.filter(pk=job.pk, status=Job.Status.COMPLETED).update(
            status=Job.Status.RUNNING, completed_at=None
        )
    return reopened
