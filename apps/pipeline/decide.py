"""The one decision a label makes: `decide_label`, a pure function.

From the item as it was read (state, counts, votes), the new answer, the evidence (every
answer with its worker's confusion matrix and status, the class prior or the routing
model's vote, whether an expert could take the item) and the job's policy, it returns one
`Plan`: the decision (settle / ask for more / expert / review), the item columns it writes,
and the follow-up writes it implies (a review to open, an audit to draw, a gold answer to
count). No database, no cache, no clock: both writers (apps.pipeline.submit, through the
PostgreSQL statement of apps.assignments.fastpath or the ORM) apply the plan as it is.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from apps.jobs.kinds import SINGLE_CHOICE, answer_value
from apps.jobs.models import Item, Job
from apps.jobs.policy import Policy, Routing
from apps.quality import algorithms
from apps.quality.kinds import kind_gold_correct, kind_item_outcome
from apps.quality.matrices import one_coin_confusion
from apps.quality.posterior import item_posterior
from apps.reviews.models import Reason
from apps.reviews.services import audit_sampled
from apps.routing import policy as routing_policy
from apps.workforce.models import Worker


@dataclass(frozen=True)
class Decision:
    """What a label did to its item: the result fields the decision writes."""

    state: str
    labels_needed: int
    label: str | None = None
    confidence: float | None = None
    agreement: float | None = None
    posterior: list[float] | None = None
    source: str | None = None
    extra: dict = field(default_factory=dict)
    # Why the item goes to review ("disagreement" or "low_posterior"), when it does.
    review_reason: str | None = None

    @property
    def settled(self) -> bool:
        return self.state == Item.State.SETTLED


@dataclass(frozen=True)
class Evidence:
    """What a posterior decision reads beyond the item row, gathered by the caller.

    `answers`: every (worker_id, value, tier) answer of the item, the new one included;
    `statuses`: those workers' current status; `matrices`: each one's confusion matrix;
    `prior`: the job's class prior, or the routing model's calibrated vote on the item
    (`model_voted`); `routing`: the job's routing config when it routes by model, else None;
    `model_probs`: where the model votes, its calibrated probabilities before the vote
    weight (the prior of the confidence a routed item reports,
    apps.routing.policy.reported_confidence).
    """

    answers: list[tuple[int, str, str]]
    statuses: dict[int, str]
    matrices: dict[int, np.ndarray]
    prior: np.ndarray | list[float]
    model_voted: bool = False
    routing: Routing | None = None
    # Another kind than single_choice: each worker's accuracy on the job's gold, in the
    # kind's unit (apps.quality.kinds.kind_worker_accuracies), in place of matrices.
    accuracies: dict[int, float] = field(default_factory=dict)
    model_probs: np.ndarray | list[float] | None = None


@dataclass(frozen=True)
class Plan:
    """The outcome of one label, as both writers apply it.

    `updates`: the item's new column values (besides the slot turning into a label:
    n_leases - 1, n_labels + 1); `expert_slot`: the item gets one more slot that only an
    expert fills (labels_needed = n_labels + n_leases + 1 from the row as it is);
    `open_review`: a QC review to open for `decision`; `audit`: the settled item was drawn
    for a QC audit; `gold_correct`: the answer to a gold item and whether it was right
    (None for other items); `needs_experts`: the decision sends the item to review and the
    escalation policy needs to know whether an expert is available, which the evidence
    did not say (decide again with it, under the item's lock).
    """

    decision: Decision | None
    updates: dict[str, Any]
    expert_slot: bool = False
    open_review: bool = False
    audit: bool = False
    gold_correct: bool | None = None
    needs_experts: bool = False

    @property
    def settles(self) -> bool:
        return self.decision is not None and self.decision.settled

    @property
    def writes_beyond_the_item(self) -> bool:
        """Whether applying the plan writes more than the label, its credit and the item row:
        a review, an audit, a gold answer's bookkeeping."""
        return self.open_review or self.audit or self.gold_correct is not None


def needs_evidence(*, job: Job, item: Item) -> bool:
    """Whether decide_label will read Evidence for this label (a posterior decision):
    callers gather it only then."""
    return (
        item.gold_label is None
        and item.state == Item.State.OPEN
        and (job.spec.policy.aggregation != "mv" or job.kind != SINGLE_CHOICE)
    )


# --------------------------------------------------------------------------- the deciders


def decide_by_votes(
    *,
    vote_counts: dict[str, int],
    n_labels: int,
    labels_needed: int,
    classes: list[str],
    policy: Policy,
) -> Decision:
    """The crowd decision by majority vote (policy aggregation "mv").

    While labels are still outstanding the item stays open; once it has all it needs, a
    clear majority settles it, a tie asks for one more label, and a tie at max_labels sends
    it to QC review.
    """
    min_labels = policy.min_labels
    max_labels = max(policy.max_labels, min_labels)
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
        review_reason=Reason.DISAGREEMENT,
        extra={"method": "majority_vote", "tied": leaders},
    )


def decide_by_posterior(
    *, job: Job, evidence: Evidence, labels_needed: int, policy: Policy
) -> Decision:
    """Dynamic redundancy for one open item after a label: settle, ask for more, or review.

    The item settles once it has its minimum labels and the top posterior reaches the job's
    target confidence; while below, it asks for one more label up to max_labels; at
    max_labels still unsure it goes to review (reason: the crowd disagreed, or it agreed but
    the posterior stayed low). With model routing on, the model votes (in the evidence's
    prior) and the cost-aware rule decides instead (_decide_routed).
    """
    classes = job.classes
    answers = evidence.answers
    n_labels = len(answers)
    min_labels = policy.min_labels
    max_labels = max(policy.max_labels, min_labels)
    posterior, contributors = item_posterior(
        classes=classes,
        answers=answers,
        matrices=evidence.matrices,
        prior=evidence.prior,
        statuses=evidence.statuses,
        inactive_weight=policy.suspended_label_weight,
        # A routed job stops, trains and certifies on these posteriors: the crowd counts at
        # its aggregation's calibration there, as in the routing policy's loop.
        crowd_weight=routing_policy.crowd_weight(policy) if evidence.routing is not None else 1.0,
    )
    top = int(np.argmax(posterior))
    confidence = float(posterior[top])
    counted = [c for c in contributors if c["weight"] != 0.0] or contributors
    votes = [c["label"] for c in counted]
    agreement = (max(votes.count(v) for v in set(votes)) / len(votes)) if votes else None
    meta = {"method": "posterior", "version": algorithms.VERSION, "workers": contributors}
    common: dict[str, Any] = {
        "posterior": [round(float(p), 6) for p in posterior],
        "agreement": agreement,
        "extra": meta,
    }
    if n_labels < labels_needed:
        return Decision(state=Item.State.OPEN, labels_needed=labels_needed, **common)
    if evidence.routing is not None:
        reported = None
        if evidence.model_voted and evidence.model_probs is not None:
            # What a settled item reports (not what its stopping reads): the model's
            # probabilities and the crowd undiscounted (routing_policy.reported_confidence).
            reported, _ = item_posterior(
                classes=classes,
                answers=answers,
                matrices=evidence.matrices,
                prior=routing_policy.model_vote(
                    np.asarray(evidence.model_probs, dtype=np.float64),
                    routing_policy.REPORT_VOTE_WEIGHT,
                ),
                statuses=evidence.statuses,
                inactive_weight=policy.suspended_label_weight,
                crowd_weight=routing_policy.REPORT_CROWD_WEIGHT,
            )
        return _decide_routed(
            job=job,
            policy=policy,
            evidence=evidence,
            posterior=posterior,
            max_labels=max_labels,
            labels_needed=labels_needed,
            common=common,
            reported=reported,
        )
    return _settle_or_ask(
        n_labels=n_labels,
        labels_needed=labels_needed,
        policy=policy,
        confident=confidence >= policy.target_confidence,
        label=classes[top],
        confidence=confidence,
        common=common,
    )


def _settle_or_ask(
    *,
    n_labels: int,
    labels_needed: int,
    policy: Policy,
    confident: bool,
    label: str | None,
    confidence: float | None,
    common: dict[str, Any],
) -> Decision:
    """Dynamic redundancy once an item has the labels it asked for: settle when it has the
    policy's minimum and is `confident`, else one more label up to max_labels, then review
    (the crowd disagreed, or agreed with too little confidence)."""
    max_labels = max(policy.max_labels, policy.min_labels)
    if n_labels < policy.min_labels:
        return Decision(state=Item.State.OPEN, labels_needed=policy.min_labels, **common)
    if confident:
        return Decision(
            state=Item.State.SETTLED,
            labels_needed=labels_needed,
            label=label,
            confidence=confidence,
            source=Item.Source.CROWD,
            **common,
        )
    if n_labels < max_labels:
        return Decision(state=Item.State.OPEN, labels_needed=n_labels + 1, **common)
    return Decision(
        state=Item.State.REVIEW,
        labels_needed=labels_needed,
        label=label,
        confidence=confidence,
        review_reason=_disputed_reason(common["agreement"]),
        **common,
    )


def decide_by_kind(*, job: Job, evidence: Evidence, labels_needed: int, policy: Policy) -> Decision:
    """Dynamic redundancy for an item of another kind than single_choice: the kind's item
    outcome (apps.quality.kinds: tag posteriors, a level's posterior, an interval's
    half-width against the tolerance, the boxes' agreement against the target IoU) decides
    as the posterior does for classes: settle once confident with the minimum labels, else
    one more label up to max_labels, then review. A suspended or banned worker's answers
    count only if the policy weighs them (suspended_label_weight > 0)."""
    answers = evidence.answers
    n_labels = len(answers)
    counted = [
        a
        for a in answers
        if policy.suspended_label_weight > 0
        or evidence.statuses.get(a[0], Worker.Status.ACTIVE) == Worker.Status.ACTIVE
    ] or answers
    outcome = kind_item_outcome(
        label_schema=job.label_schema,
        policy=policy,
        answers=counted,
        accuracies=evidence.accuracies,
    )
    used = {id(a) for a in counted}
    meta = {
        **outcome.extra,
        "kind": job.kind,
        "version": algorithms.VERSION,
        "workers": [
            {"worker": a[0], "label": answer_value(a[1]), "weight": 1.0 if id(a) in used else 0.0}
            for a in answers
        ],
    }
    common: dict[str, Any] = {
        "posterior": outcome.posterior,
        "agreement": outcome.agreement,
        "extra": meta,
    }
    if n_labels < labels_needed:
        return Decision(state=Item.State.OPEN, labels_needed=labels_needed, **common)
    return _settle_or_ask(
        n_labels=n_labels,
        labels_needed=labels_needed,
        policy=policy,
        confident=outcome.confident,
        label=outcome.label,
        confidence=outcome.confidence,
        common=common,
    )


def _finite(value: float) -> float | None:
    return round(value, 6) if math.isfinite(value) else None


def _disputed_reason(agreement: float | None) -> str:
    if agreement is not None and agreement < 1.0:
        return Reason.DISAGREEMENT
    return Reason.LOW_POSTERIOR


def _decide_routed(
    *,
    job: Job,
    policy: Policy,
    evidence: Evidence,
    posterior: np.ndarray,
    max_labels: int,
    labels_needed: int,
    common: dict[str, Any],
    reported: np.ndarray | None = None,
) -> Decision:
    """Model routing on: the routing policy's cost-aware stopping (apps.routing.policy
    .routed_actions, the rule the bench runs), where another crowd label is bought only
    while the expected error it removes, times the value of a correct label, beats its
    price. The model already voted in `posterior` (at its version's vote weight), so an item
    the model and one worker agree on can stop at routing's min_labels (default 1).

    Where the model does not vote (an audit item, a job before its first model, a model
    whose vote weight is 0) people settle the item alone at the reference confidence
    (routing_policy.reference_confidence, above the target the threshold certifies): those
    items train, calibrate and audit the model, so the cost-aware shortcut is not for them.
    An item the rule sends to an expert, or still unsure at max_labels, goes to review and
    the escalation policy picks an expert or QC.

    Where the model voted, a settled item's confidence is the `reported` posterior's mass
    on its label (routing_policy.reported_confidence), not the stopping posterior's: the
    stopping posterior (the item's `posterior`, `why.posterior_confidence`) discounts the
    vote and the crowd to stop safely and is underconfident as a claim. Only the
    confidence differs; the label and the decision are the stopping posterior's.
    """
    routing = evidence.routing or Routing(mode="model")
    classes = job.classes
    k = len(classes)
    n_labels = len(evidence.answers)
    top = int(np.argmax(posterior))
    confidence = float(posterior[top])
    if not evidence.model_voted:
        extra = {
            **common["extra"],
            "stopping": "people_only",
            "route": "crowd",
            "why": (
                "the model did not vote: people settle it alone at the reference confidence "
                "(it trains and certifies the model)"
            ),
        }
        common = {**common, "extra": extra}
        action = routing_policy.dynamic_actions(
            posterior=posterior[None, :],
            n_labels=np.array([n_labels]),
            policy=policy,
            target=routing_policy.reference_confidence(routing=routing, policy=policy),
            max_labels=routing_policy.reference_max_labels(routing=routing, policy=policy),
        )[0]
        crowd_value = None
    else:
        if n_labels < routing.min_labels:
            return Decision(state=Item.State.OPEN, labels_needed=routing.min_labels, **common)
        # The next worker is expected to be like this item's crowd workers so far.
        crowd = [
            evidence.matrices[w] for w, _, tier in evidence.answers if tier != Worker.Tier.EXPERT
        ]
        typical = (
            np.mean(crowd, axis=0) if crowd else one_coin_confusion(policy.new_worker_accuracy, k)
        )
        acts = routing_policy.routed_actions(
            posterior=posterior[None, :],
            n_labels=np.array([n_labels]),
            crowd_confusion=typical,
            classes=classes,
            routing=routing,
            policy=policy,
            pricing=job.spec.pricing,
        )
        action = acts.action[0]
        crowd_value = float(acts.crowd_value[0])
        extra = {
            **common["extra"],
            "method": "posterior+model",
            "stopping": "cost_aware",
            "route": "crowd+model",
            # -inf when no number of crowd labels could help: JSON has no infinities.
            "crowd_value": _finite(crowd_value),
        }
        # Why this route and this stop: the model's vote (its tempered probabilities, the
        # prior here), what the crowd's answers made of it, and the cost-aware numbers.
        vote = np.asarray(evidence.prior, dtype=np.float64)
        why: dict[str, Any] = {
            "model_vote": classes[int(vote.argmax())],
            "model_vote_confidence": round(float(vote.max()), 6),
            "posterior_confidence": round(confidence, 6),
            "error_now": round(float(acts.error_now[0]), 6),
            "n_labels": n_labels,
        }
        extra["why"] = why
        common = {**common, "extra": extra}
        if action == routing_policy.SETTLE:
            extra["stopped"] = "confident" if bool(acts.confident[0]) else "not_worth_a_label"
            why["stopped"] = extra["stopped"]
    if action == routing_policy.REVIEW:
        return Decision(
            state=Item.State.REVIEW,
            labels_needed=labels_needed,
            label=classes[top],
            confidence=confidence,
            review_reason=_disputed_reason(common["agreement"]),
            **common,
        )
    if action == routing_policy.SETTLE:
        if evidence.model_voted and reported is not None:
            confidence = routing_policy.reported_confidence(reported, top)
            common["extra"]["why"]["reported_confidence"] = round(confidence, 6)
        return Decision(
            state=Item.State.SETTLED,
            labels_needed=labels_needed,
            label=classes[top],
            confidence=confidence,
            source=Item.Source.CROWD,
            **common,
        )
    return Decision(state=Item.State.OPEN, labels_needed=n_labels + 1, **common)


def decide_by_expert(
    *, item: Item, job: Job, votes: dict[str, int], value: str, worker_id: int
) -> Decision:
    """The decision on an item in state expert once an expert labeled it.

    The expert's label counts as policy.expert_weight crowd votes (default 1). If it is
    then the single leader, the item settles with source expert and the weighted share as
    confidence; otherwise the expert could not settle it and it goes to QC. With the default
    weight this is "the expert agrees with one of the crowd's leaders". `votes` already
    holds the expert's vote.
    """
    weight = job.spec.policy.expert_weight
    weighted = {c: float(n) for c, n in votes.items()}
    weighted[value] = weighted.get(value, 0.0) - 1.0 + weight
    total = sum(weighted.values()) or 1.0
    top = max(weighted.values())
    leaders = [c for c, n in weighted.items() if n == top]
    posterior = [weighted.get(c, 0.0) / total for c in job.classes]
    agreement = votes[value] / (sum(votes.values()) or 1)
    extra = {"method": "expert", "expert_worker": worker_id, "expert_weight": weight}
    if leaders == [value]:
        return Decision(
            state=Item.State.SETTLED,
            labels_needed=item.labels_needed,
            label=value,
            confidence=weighted[value] / total,
            agreement=agreement,
            posterior=posterior,
            source=Item.Source.EXPERT,
            extra=extra,
        )
    escalation = (item.result_meta or {}).get("escalation") or {}
    return Decision(
        state=Item.State.REVIEW,
        labels_needed=item.labels_needed,
        confidence=top / total,
        agreement=agreement,
        posterior=posterior,
        review_reason=escalation.get("reason") or Reason.DISAGREEMENT,
        extra={
            **extra,
            "expert_label": value,
            "review_reason": escalation.get("reason") or Reason.DISAGREEMENT,
        },
    )


def decide_by_expert_answer(*, item: Item, job: Job, value: str, worker_id: int) -> Decision:
    """An expert's answer on an item of another kind than single_choice settles it (source
    expert): a tag set, a number or boxes have no votes for the expert to break a tie
    between, so the expert's answer is the result, at the policy's expert accuracy."""
    return Decision(
        state=Item.State.SETTLED,
        labels_needed=item.labels_needed,
        label=value,
        confidence=job.spec.policy.new_expert_accuracy,
        source=Item.Source.EXPERT,
        extra={"method": "expert", "kind": job.kind, "expert_worker": worker_id},
    )


def escalate(*, decision: Decision, job: Job, experts_available: bool | None) -> Decision | None:
    """Apply the job's escalation policy to a crowd decision that sends its item to review:
    the decision with its route recorded (state expert for an expert), or None when the
    policy says "auto" and `experts_available` was not read."""
    reason = decision.review_reason or Reason.DISAGREEMENT
    route = job.spec.policy.route_for(reason)
    if route == "auto":
        if experts_available is None:
            return None
        route = "expert" if experts_available else "qc"
    extra = {
        **decision.extra,
        "review_reason": reason,
        "escalation": {"reason": reason, "route": route},
    }
    state = Item.State.EXPERT if route == "expert" else decision.state
    return dataclasses.replace(decision, state=state, review_reason=reason, extra=extra)


# --------------------------------------------------------------------------- the plan


# What an item's result_meta keeps across a new decision: what happened to the item (its
# escalation, its drawing for a model audit), not how a result was made. Everything else is
# the last result's provenance, which the new decision's replaces whole: left in place, an
# earlier aggregation run's id and the answers it read (fewer than the item has now) stood
# beside a later label, in the client's provenance and in checkinvariants' view, and an
# earlier routed decision's `why` or a kind's interval would stand beside a new one's.
RESULT_META_KEPT = ("escalation", "audit", "model_version", "model_label")


def result_meta_replaced(meta: dict | None, provenance: dict) -> dict:
    """The item's result_meta once a new decision writes its `provenance`."""
    return {**{k: v for k, v in (meta or {}).items() if k in RESULT_META_KEPT}, **provenance}


def decide_label(
    *,
    item: Item,
    job: Job,
    value: str,
    tier: str,
    worker_id: int,
    now: datetime,
    evidence: Evidence | None = None,
    experts_available: bool | None = None,
) -> Plan:
    """The one decision of a label: what it does to its item and what else it writes.

    `item` is the row as read before this label (with the label's lease counted in
    n_leases); `evidence` is required when needs_evidence() says so; `experts_available`:
    whether an active expert could still label the item (None: not read — a decision that
    needs it says so in Plan.needs_experts). The item's new votes,
    result fields and state follow from the decision; a gold item gets no decision (its
    answer is scored). Pure.
    """
    single = job.kind == SINGLE_CHOICE
    votes = dict(item.vote_counts or {})
    # The slot becomes a label (n_leases - 1, n_labels + 1, in SQL) plus these values.
    if single:
        # Votes per class; another kind's answers (JSON) are read from the labels instead.
        votes[value] = votes.get(value, 0) + 1
    updates: dict[str, Any] = {"vote_counts": votes, "updated_at": now}
    if item.gold_label is not None:
        if single:
            correct = value == item.gold_label
        else:
            correct = kind_gold_correct(
                label_schema=job.label_schema, answer=value, gold=item.gold_label
            )
        return Plan(decision=None, updates=updates, gold_correct=correct)
    policy = job.spec.policy
    decision: Decision | None = None
    if item.state == Item.State.EXPERT and tier == Worker.Tier.EXPERT and not single:
        decision = decide_by_expert_answer(item=item, job=job, value=value, worker_id=worker_id)
    elif item.state == Item.State.EXPERT and tier == Worker.Tier.EXPERT:
        decision = decide_by_expert(
            item=item, job=job, votes=votes, value=value, worker_id=worker_id
        )
    elif needs_evidence(job=job, item=item):
        if evidence is None:
            raise ValueError("a posterior decision needs its evidence (needs_evidence)")
        decider = decide_by_posterior if single else decide_by_kind
        decision = decider(
            job=job, evidence=evidence, labels_needed=item.labels_needed, policy=policy
        )
    elif item.state == Item.State.OPEN:
        decision = decide_by_votes(
            vote_counts=votes,
            n_labels=item.n_labels + 1,
            labels_needed=item.labels_needed,
            classes=job.classes,
            policy=job.spec.policy,
        )
    if decision is None:
        # A crowd label on an item waiting for an expert or in review: counted, no decision.
        return Plan(decision=None, updates=updates)
    needs_experts = False
    if item.state == Item.State.OPEN and decision.state == Item.State.REVIEW:
        routed = escalate(
            decision=decision,
            job=job,
            experts_available=experts_available,
        )
        needs_experts = routed is None
        decision = routed or decision
    updates["state"] = decision.state
    expert_slot = decision.state == Item.State.EXPERT
    if not expert_slot:
        # An expert slot's budget is set from the row as it is (the SQL right-hand side
        # reads the old row), not from this read.
        updates["labels_needed"] = decision.labels_needed
    if decision.agreement is not None:
        updates.update(agreement=decision.agreement, posterior=decision.posterior)
    if decision.state in (Item.State.SETTLED, Item.State.REVIEW, Item.State.EXPERT):
        updates.update(
            label=decision.label,
            confidence=decision.confidence,
            source=decision.source,
            result_meta=result_meta_replaced(item.result_meta, decision.extra),
        )
    if decision.settled:
        updates["settled_at"] = now
    return Plan(
        decision=decision,
        updates=updates,
        expert_slot=expert_slot,
        open_review=decision.state == Item.State.REVIEW,
        audit=decision.settled and audit_sampled(job=job, item_id=item.pk),
        needs_experts=needs_experts,
    )
