"""Writes for QC review: opening reviews (each reason once), the expert escalation policy,
claims under a lease, QC decisions and what they change, audits and disputes."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.db.models import Exists, F, OuterRef, Q, QuerySet
from django.utils import timezone
from rest_framework import status

from apps.accounts.models import Role
from apps.accounts.selectors import user_roles, user_vendor_org_ids
from apps.assignments.models import Assignment, Label
from apps.assignments.records import job_complete_if_done
from apps.common.bulk import bulk_update_rows
from apps.common.errors import ApplicationError, ErrorCode
from apps.common.tasks import enqueue_on_commit
from apps.jobs.kinds import answer_shown, answer_stored
from apps.jobs.models import Item, Job
from apps.jobs.selectors import job_list_for_vendors
from apps.quality.kinds import job_kind, kind_gold_correct
from apps.reviews.models import Reason, Review, ReviewDecision, ReviewOutcome, Tag
from apps.webhooks import events as webhooks
from apps.workforce.models import Worker

if TYPE_CHECKING:
    # Imported at call time below: the assignment engine imports this module lazily too, and
    # the quality engine sits between them; no import cycle can form that way.
    pass

# Queue order: a client's complaint about a delivered result comes first, audits last.
REASON_WEIGHT: dict[str, float] = {
    Reason.CLIENT_DISPUTE: 100.0,
    Reason.GOLD_DISPUTE: 80.0,
    Reason.WORKER_DISPUTE: 40.0,
    Reason.DISAGREEMENT: 60.0,
    Reason.LOW_POSTERIOR: 50.0,
    Reason.AUDIT: 20.0,
}
# Waiting raises a review by this much per hour, up to AGE_BONUS_MAX, so that audits are not
# starved by a steady stream of disputes.
AGE_WEIGHT_PER_HOUR = 2.0
AGE_BONUS_MAX = 60.0
# An item's own value (its queue priority and a numeric payload "value") counts, bounded so
# that one client cannot push every other job's reviews out of the queue.
ITEM_VALUE_MAX = 30.0
# How long a QC claim holds before another person may take the review.
CLAIM_SECONDS = int(getattr(settings, "REVIEW_CLAIM_SECONDS", 600))
# How long an item may wait for an expert before it falls through to QC.
EXPERT_TIMEOUT_SECONDS = 24 * 3600

Route = Literal["expert", "qc"]
ROUTES = ("expert", "qc", "auto")
# Reasons the escalation policy covers, with the alias the policy may use for each.
QC_ROLE = Role.QC


def _conflict(message: str, code: ErrorCode = ErrorCode.CONFLICT) -> ApplicationError:
    return ApplicationError(message, code=code, status_code=status.HTTP_409_CONFLICT)


def _held(review: Review) -> ApplicationError:
    # The claim's expiry tells the client when retrying can succeed.
    return ApplicationError(
        "Another QC person holds this review.",
        code=ErrorCode.CONFLICT,
        status_code=status.HTTP_409_CONFLICT,
        details={"claim_expires_at": review.claim_expires_at.isoformat()},
    )


def _not_found(what: str = "review") -> ApplicationError:
    return ApplicationError(
        f"No such {what}.", code=ErrorCode.NOT_FOUND, status_code=status.HTTP_404_NOT_FOUND
    )


# --------------------------------------------------------------------------- priority


def review_priority(*, reason: str, item_value: float = 0.0, age_seconds: float = 0.0) -> float:
    """A review's queue priority: reason weight, the item's value, and how long it waited."""
    value = max(-ITEM_VALUE_MAX, min(ITEM_VALUE_MAX, item_value))
    aging = min(AGE_BONUS_MAX, max(0.0, age_seconds) / 3600.0 * AGE_WEIGHT_PER_HOUR)
    return REASON_WEIGHT.get(reason, 0.0) + value + aging


def _item_value(*, priority: float, payload: Any) -> float:
    value = priority or 0.0
    if isinstance(payload, dict):
        extra = payload.get("value")
        if isinstance(extra, int | float) and not isinstance(extra, bool):
            value += float(extra)
    return value


def review_reprioritize(*, now: datetime | None = None, batch: int = 2000) -> int:
    """Refresh the aging bonus of open reviews; returns how many changed. Safe to rerun."""
    now = now or timezone.now()
    rows = list(
        Review.objects.filter(status=Review.Status.OPEN)
        .order_by("id")
        .values_list("id", "base_priority", "priority", "created_at")[:batch]
    )
    changed = []
    for pk, base, current, created_at in rows:
        aging = min(AGE_BONUS_MAX, (now - created_at).total_seconds() / 3600 * AGE_WEIGHT_PER_HOUR)
        if abs(base + aging - current) > 1e-6:
            changed.append(Review(pk=pk, priority=base + aging))
    bulk_update_rows(Review, changed, ["priority"])
    return len(changed)


# --------------------------------------------------------------------------- opening


def review_open(
    *,
    item: Item,
    reason: str,
    job: Job | None = None,
    note: str = "",
    context: dict[str, Any] | None = None,
    opened_by: AbstractBaseUser | None = None,
    now: datetime | None = None,
) -> tuple[Review, bool]:
    """Open the item's review for this reason, or return the open one; True if created.

    Idempotent per (item, reason) while the review is open: the partial unique constraint
    settles races, and every call's note and context are appended to the review's
    `context["triggers"]` so that, for example, a second worker's gold dispute is not lost.
    Does not change the item's state: callers that take an item out of the crowd flow
    (item_send_to_review, the label decision) do that themselves.
    """
    if reason not in Reason.values:
        raise ApplicationError(
            f"Unknown review reason {reason!r}.", details={"reason": Reason.values}
        )
    now = now or timezone.now()
    trigger = {
        "at": now.isoformat(),
        "note": note,
        "by": opened_by.pk if opened_by is not None else None,
        **(context or {}),
    }
    with transaction.atomic():
        existing = (
            Review.objects.select_for_update()
            .filter(item_id=item.pk, reason=reason, status=Review.Status.OPEN)
            .first()
        )
        if existing is None:
            job_id = job.pk if job is not None else None
            values = Item.objects.filter(pk=item.pk).values("job_id", "priority", "payload").get()
            base = review_priority(
                reason=reason,
                item_value=_item_value(priority=values["priority"], payload=values["payload"]),
            )
            try:
                # A savepoint: a concurrent opener may win the unique constraint.
                with transaction.atomic():
                    review = Review.objects.create(
                        job_id=job_id or values["job_id"],
                        item_id=item.pk,
                        reason=reason,
                        note=note,
                        context={"triggers": [trigger]},
                        opened_by=opened_by,
                        base_priority=base,
                        priority=base,
                    )
                return review, True
            except IntegrityError:
                existing = (
                    Review.objects.select_for_update()
                    .filter(item_id=item.pk, reason=reason, status=Review.Status.OPEN)
                    .first()
                )
                if existing is None:
                    raise
        context_now = dict(existing.context or {})
        context_now["triggers"] = [*context_now.get("triggers", []), trigger]
        existing.context = context_now
        existing.save(update_fields=["context", "updated_at"])
        return existing, False


def review_gold_dispute(
    *, worker: Worker, assignment_id: int, note: str, now: datetime | None = None
) -> tuple[Review, bool]:
    """A worker disputes the expected answer of an item they submitted; opens its review.

    On a gold item this is a gold dispute (QC checks the gold answer); on any other item a
    worker dispute (QC looks at the item). Both are accepted the same way and the caller
    answers the worker the same way, so that the endpoint cannot be used to probe which
    items are gold. Another worker's assignment is a 404 (ids of others' tasks stay hidden);
    a not yet submitted assignment is a 409, whatever the item.
    """
    assignment = (
        Assignment.objects.select_related("item")
        .filter(pk=assignment_id, worker_id=worker.pk)
        .first()
    )
    if assignment is None:
        raise _not_found("assignment")
    if assignment.state != Assignment.State.SUBMITTED:
        raise _conflict("Submit your label before disputing the answer.", ErrorCode.INVALID_STATE)
    item = assignment.item
    label = Label.objects.filter(assignment_id=assignment.pk).values_list("value", flat=True).get()
    context: dict[str, Any] = {"worker": worker.pk, "assignment": assignment.pk, "label": label}
    if item.gold_label is None:
        reason, context["kind"] = Reason.WORKER_DISPUTE, "worker_dispute"
    else:
        reason, context["kind"] = Reason.GOLD_DISPUTE, "gold_dispute"
        context["gold_label"] = item.gold_label
    return review_open(
        item=item, reason=reason, note=note, context=context, opened_by=worker.user, now=now
    )


def review_client_dispute(
    *, user: AbstractBaseUser, job: Job, external_id: str, note: str, now: datetime | None = None
) -> tuple[Review, bool]:
    """The job's client (or ops) disputes a delivered result; opens its review.

    Precondition: `job` came from a tenant-checked fetch (job_get_for_user). The item keeps
    its result and state until QC decides, so a completed job stays completed.
    """
    item = Item.objects.filter(job_id=job.pk, external_id=external_id).first()
    if item is None:
        raise _not_found("item")
    if item.state != Item.State.SETTLED:
        raise _conflict(
            f"The item has no delivered result yet (it is {item.state}).", ErrorCode.INVALID_STATE
        )
    return review_open(
        item=item,
        job=job,
        reason=Reason.CLIENT_DISPUTE,
        note=note,
        context={"kind": "client_dispute", "label": item.label, "source": item.source},
        opened_by=user,
        now=now,
    )


def _audit_draw(*, job_id: int, item_id: int) -> float:
    """A uniform draw in [0, 1) fixed by the item: sampling twice decides the same way."""
    digest = hashlib.sha256(f"audit:{job_id}:{item_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def audit_sampled(*, job: Job, item_id: int) -> bool:
    """Whether the item, once settled, is drawn for a QC audit at the job's `audit_rate`."""
    rate = job.spec.policy.audit_rate
    return rate > 0.0 and _audit_draw(job_id=job.pk, item_id=item_id) < rate


def review_audit_maybe(
    *, item: Item, job: Job, source: str | None = None, now: datetime | None = None
) -> Review | None:
    """Sample a just-settled item for a QC audit at the job's `audit_rate`; the review or None.

    Call it wherever an item settles without a person's decision: the label decision calls it
    for crowd and expert results, and routing must call it for auto-accepted (model) items.
    The draw is a hash of the item, so a retried call makes the same choice.
    """
    if not audit_sampled(job=job, item_id=item.pk):
        return None
    review, _ = review_open(
        item=item, job=job, reason=Reason.AUDIT, context={"source": source}, now=now
    )
    return review


# --------------------------------------------------------------------------- escalation


def expert_available(*, job: Job, item_id: int | None = None) -> bool:
    """Whether an active expert in a pool open to the job could still label the item."""
    experts = Worker.objects.filter(
        tier=Worker.Tier.EXPERT, status=Worker.Status.ACTIVE, pools__jobs=job.pk
    )
    if item_id is not None:
        experts = experts.filter(
            ~Exists(Assignment.objects.filter(item_id=item_id, worker_id=OuterRef("pk")))
        )
    return experts.exists()


def escalation_route(*, job: Job, reason: str, item_id: int | None = None) -> Route:
    """Where a disputed item goes first: "expert" or "qc", from the job's policy
    (Policy.route_for); "auto" means an expert when an active expert in a pool open to the
    job has not labeled the item yet, else QC."""
    choice = job.spec.policy.route_for(reason)
    if choice == "auto":
        return "expert" if expert_available(job=job, item_id=item_id) else "qc"
    return choice  # type: ignore[return-value]


def _review_reason(decision: Any) -> str:
    # The quality engine's ItemDecision carries review_reason; other deciders put it in extra.
    reason = getattr(decision, "review_reason", None) or decision.extra.get("review_reason")
    return reason if reason in Reason.values else Reason.DISAGREEMENT


def item_decided(*, item: Item, job: Job, decision: Any, now: datetime) -> Review | None:
    """Follow-up of a label decision: open the QC review of an item sent to review, or sample
    a settled item for audit. Returns the review opened, if any.

    Precondition: called in the label's transaction after the item row was updated.
    item_decided_writes() says beforehand whether this writes: keep the two in step.
    """
    if decision.state == Item.State.REVIEW:
        extra = decision.extra
        review, _ = review_open(
            item=item,
            job=job,
            reason=_review_reason(decision),
            context={
                "kind": "decision",
                "method": extra.get("method"),
                "tied": extra.get("tied"),
                "expert_label": extra.get("expert_label"),
                "expert_worker": extra.get("expert_worker") if "expert_label" in extra else None,
            },
            now=now,
        )
        return review
    if decision.settled:
        return review_audit_maybe(item=item, job=job, source=decision.source, now=now)
    return None


def item_escalate(
    *, item_id: int, reason: str, context: dict[str, Any] | None = None, now: datetime | None = None
) -> Route | None:
    """Send a disputed item to an expert or to QC as the job's policy says; the route taken.

    For deciders outside the label path (the quality engine's re-aggregation). Items QC has
    decided are final and are left alone (None).
    """
    now = now or timezone.now()
    with transaction.atomic():
        item = (
            Item.objects.select_for_update()
            .select_related("job")
            .only(
                "id",
                "state",
                "source",
                "gold_label",
                "result_meta",
                "job__id",
                "job__policy",
                "job__pricing",
                "job__routing",
            )
            .get(pk=item_id)
        )
        if item.source == Item.Source.QC or item.gold_label is not None:
            return None
        job = item.job
        already_expert = bool(
            (item.result_meta or {}).get("escalation", {}).get("route") == "expert"
        )
        route = (
            "qc" if already_expert else escalation_route(job=job, reason=reason, item_id=item.pk)
        )
        meta = {**(item.result_meta or {}), "escalation": {"reason": reason, "route": route}}
        if route == "expert":
            # One more slot that only experts fill (SQL reads the old counts on the right).
            Item.objects.filter(pk=item.pk).update(
                state=Item.State.EXPERT,
                labels_needed=F("n_labels") + F("n_leases") + 1,
                result_meta=meta,
                updated_at=now,
            )
            return "expert"
        Item.objects.filter(pk=item.pk).update(
            state=Item.State.REVIEW, result_meta=meta, updated_at=now
        )
        review_open(item=item, job=job, reason=reason, context=context, now=now)
        return "qc"


def review_expert_timeouts(*, now: datetime | None = None, limit: int = 1000) -> int:
    """Send items that waited too long for an expert to QC; returns how many.

    The wait is policy.expert_timeout_seconds (default a day). Items with a live expert
    lease are left for that expert.
    """
    now = now or timezone.now()
    moved = 0
    jobs = Job.objects.filter(status=Job.Status.RUNNING, items__state=Item.State.EXPERT).distinct()
    for job in jobs.only("id", "policy", "pricing", "routing"):
        wait = job.spec.policy.expert_timeout_seconds
        stale = Item.objects.filter(
            job_id=job.pk,
            state=Item.State.EXPERT,
            n_leases=0,
            updated_at__lte=now - timedelta(seconds=wait),
        ).values_list("id", "result_meta")[: limit - moved]
        for item_id, meta in stale:
            reason = ((meta or {}).get("escalation") or {}).get("reason") or Reason.DISAGREEMENT
            with transaction.atomic():
                locked = (
                    Item.objects.select_for_update()
                    .filter(pk=item_id, state=Item.State.EXPERT, n_leases=0)
                    .only("id")
                    .first()
                )
                if locked is None:
                    continue
                Item.objects.filter(pk=item_id).update(state=Item.State.REVIEW, updated_at=now)
                review_open(
                    item=locked, job=job, reason=reason, context={"kind": "expert_timeout"}, now=now
                )
            moved += 1
        if moved >= limit:
            break
    return moved


# --------------------------------------------------------------------------- claims


def _claim_live(review: Review, now: datetime) -> bool:
    return review.claimed_by_id is not None and review.claim_expires_at > now


def _require_qc(user: AbstractBaseUser) -> None:
    if QC_ROLE not in user_roles(user=user):
        raise ApplicationError(
            "Only QC staff may do this.",
            code=ErrorCode.PERMISSION_DENIED,
            status_code=status.HTTP_403_FORBIDDEN,
        )


def _qc_jobs(user: AbstractBaseUser) -> QuerySet[Job]:
    """The jobs whose reviews the user may decide: those of the vendors they are QC for."""
    return job_list_for_vendors(
        vendor_ids=user_vendor_org_ids(user=user, roles=frozenset({QC_ROLE}))
    )


def _locked_review(review_id: int, user: AbstractBaseUser) -> Review:
    """The review, row-locked, if it belongs to a job the user's vendor may act on (as QC);
    404 otherwise (another tenant's review does not exist for them)."""
    review = (
        Review.objects.select_for_update(of=("self",))
        .select_related("job")
        .filter(pk=review_id, job__in=_qc_jobs(user))
        .first()
    )
    if review is None:
        raise _not_found()
    return review


def _set_claim(review: Review, *, user: AbstractBaseUser, now: datetime, seconds: int) -> None:
    review.claimed_by = user
    review.claimed_at = now
    review.claim_expires_at = now + timedelta(seconds=seconds)
    review.save(update_fields=["claimed_by", "claimed_at", "claim_expires_at", "updated_at"])


def review_claim(
    *,
    user: AbstractBaseUser,
    review_id: int,
    now: datetime | None = None,
    claim_seconds: int = CLAIM_SECONDS,
) -> Review:
    """Claim an open review for `claim_seconds`; the holder may renew. 409 while another
    person's claim is live or when the review is not open."""
    _require_qc(user)
    now = now or timezone.now()
    with transaction.atomic():
        review = _locked_review(review_id, user)
        if review.status != Review.Status.OPEN:
            raise _conflict(f"The review is {review.status}.", ErrorCode.INVALID_STATE)
        if _claim_live(review, now) and review.claimed_by_id != user.pk:
            raise _held(review)
        _set_claim(review, user=user, now=now, seconds=claim_seconds)
    return review


def review_claim_next(
    *,
    user: AbstractBaseUser,
    job_id: int | None = None,
    reason: str | None = None,
    exclude_ids: Iterable[int] = (),
    now: datetime | None = None,
    claim_seconds: int = CLAIM_SECONDS,
) -> Review | None:
    """Claim the best open review nobody else holds (resuming the user's own claim first).

    On PostgreSQL, SKIP LOCKED lets several QC people take different reviews at once.
    """
    _require_qc(user)
    now = now or timezone.now()
    scope = (
        Q(status=Review.Status.OPEN)
        & ~Q(job__status=Job.Status.CANCELLED)
        & Q(job__in=_qc_jobs(user))
    )
    if job_id is not None:
        scope &= Q(job_id=job_id)
    if reason:
        scope &= Q(reason=reason)
    excluded = list(exclude_ids)
    with transaction.atomic():
        mine = (
            Review.objects.filter(scope, claimed_by=user, claim_expires_at__gt=now)
            .exclude(pk__in=excluded)
            .order_by("-priority", "created_at", "id")
            .select_for_update(skip_locked=True, of=("self",))
            .first()
        )
        review = mine or (
            Review.objects.filter(scope)
            .filter(Q(claimed_by__isnull=True) | Q(claim_expires_at__lte=now))
            .exclude(pk__in=excluded)
            .order_by("-priority", "created_at", "id")
            .select_for_update(skip_locked=True, of=("self",))
            .first()
        )
        if review is None:
            return None
        _set_claim(review, user=user, now=now, seconds=claim_seconds)
    return review


def review_release(
    *, user: AbstractBaseUser, review_id: int, now: datetime | None = None
) -> Review:
    """Give up the user's claim; idempotent. 409 while another person's claim is live."""
    _require_qc(user)
    now = now or timezone.now()
    with transaction.atomic():
        review = _locked_review(review_id, user)
        if review.claimed_by_id is None:
            return review
        if review.claimed_by_id != user.pk and _claim_live(review, now):
            raise _held(review)
        review.claimed_by = None
        review.claimed_at = None
        review.claim_expires_at = None
        review.save(update_fields=["claimed_by", "claimed_at", "claim_expires_at", "updated_at"])
    return review


# --------------------------------------------------------------------------- decisions


def _check_tags(tags: Iterable[str]) -> list[str]:
    tags = list(dict.fromkeys(tags))
    unknown = [t for t in tags if t not in Tag.values]
    if unknown:
        raise ApplicationError(
            f"Unknown tags: {', '.join(unknown)}.", details={"tags": [f"Choose from {Tag.values}."]}
        )
    return tags


def review_resolve(
    *,
    user: AbstractBaseUser,
    review_id: int,
    label: Any,
    note: str = "",
    make_gold: bool = False,
    tags: Iterable[str] = (),
    now: datetime | None = None,
) -> ReviewDecision:
    """QC's decision on the review's item: the label becomes final, and every label on the
    item is judged against it.

    The item settles with source qc and confidence 1 (a gold item keeps its state, and its
    gold answer becomes the label); `make_gold` makes it a control item for future workers.
    The review is resolved and the item's other open reviews closed. Decisions are final: a
    review that is not open (resolved, or closed by a decision on another review of the
    item) is a 409; to change a decision, reopen the review (review_reopen) and decide
    again. A new decision, after a reopen or on a later review of the item (a client
    dispute), supersedes the item's current one: the old decision and its outcomes stay as
    history with is_current false. Only QC may decide (403); a review another person holds
    is a 409. The job completes (on commit) if this was its last unsettled item.
    """
    _require_qc(user)
    now = now or timezone.now()
    tags = _check_tags(tags)
    with transaction.atomic():
        review = _locked_review(review_id, user)
        job = review.job
        label = answer_stored(label_schema=job.label_schema, value=label)
        kind = job_kind(job.label_schema)
        if kind is None and label not in job.classes:
            raise ApplicationError(
                f"{label!r} is not one of the job's classes.",
                details={"label": [f"Choose one of: {', '.join(job.classes)}."]},
            )
        if review.status != Review.Status.OPEN:
            raise _conflict(
                f"The review is already {review.status}: decisions are final. To change it, "
                "reopen the review and decide again.",
                ErrorCode.INVALID_STATE,
            )
        if _claim_live(review, now) and review.claimed_by_id != user.pk:
            raise _held(review)
        item = Item.objects.select_for_update().get(pk=review.item_id)
        current = (
            ReviewDecision.objects.select_for_update()
            .filter(item_id=item.pk, is_current=True)
            .first()
        )
        if current is not None:
            # Supersede first: the database allows one current decision per item.
            ReviewDecision.objects.filter(pk=current.pk).update(is_current=False)
            ReviewOutcome.objects.filter(decision_id=current.pk).update(is_current=False)
            original_label, original_source = current.original_label, current.original_source
        else:
            original_label, original_source = item.label, item.source
        decision = ReviewDecision.objects.create(
            review=review,
            item=item,
            job=job,
            decided_by=user,
            label=label,
            previous_label=item.label,
            previous_source=item.source,
            original_label=original_label,
            original_source=original_source,
            note=note,
            tags=tags,
            make_gold=make_gold,
            supersedes=current,
        )
        was_gold = item.gold_label is not None
        updates: dict[str, Any] = {
            "label": label,
            "source": Item.Source.QC,
            "confidence": 1.0,
            "posterior": [1.0 if c == label else 0.0 for c in job.classes]
            if kind is None
            else None,
            "settled_at": now,
            "updated_at": now,
            "result_meta": {
                **(item.result_meta or {}),
                "method": "qc",
                "qc_decision": decision.pk,
                "qc_user": user.pk,
            },
        }
        if not was_gold:
            updates["state"] = Item.State.SETTLED
        if was_gold or make_gold:
            updates["gold_label"] = label
        Item.objects.filter(pk=item.pk).update(**updates)
        labels = list(Label.objects.filter(item_id=item.pk).only("id", "worker_id", "value"))
        # Another kind's answer is judged by the kind's gold score (a near box, one level
        # off), not by equality.
        correct = {
            row.pk: row.value == label
            if kind is None
            else kind_gold_correct(label_schema=job.label_schema, answer=row.value, gold=label)
            for row in labels
        }
        if was_gold and item.gold_label != label:
            # The gold answer was wrong: past answers are re-scored so that gold accuracy
            # (read from Label.is_correct) stops counting correct workers as wrong.
            right = [pk for pk, ok in correct.items() if ok]
            Label.objects.filter(item_id=item.pk, pk__in=right).update(is_correct=True)
            Label.objects.filter(item_id=item.pk).exclude(pk__in=right).update(is_correct=False)
            # The dashboards' rollups counted the old scores: roll the item's hours again.
            enqueue_on_commit("concord.reports.rollup_item", item.pk)
        ReviewOutcome.objects.bulk_create(
            [
                ReviewOutcome(
                    decision=decision,
                    label_id=row.pk,
                    worker_id=row.worker_id,
                    job_id=job.pk,
                    item_id=item.pk,
                    value=row.value,
                    final_label=label,
                    correct=correct[row.pk],
                    note=note,
                )
                for row in labels
            ]
        )
        finished = {
            "resolved_at": now,
            "claimed_by": None,
            "claimed_at": None,
            "claim_expires_at": None,
            "updated_at": now,
        }
        Review.objects.filter(pk=review.pk).update(status=Review.Status.RESOLVED, **finished)
        Review.objects.filter(item_id=item.pk, status=Review.Status.OPEN).exclude(
            pk=review.pk
        ).update(status=Review.Status.CLOSED, **finished)
        shown = answer_shown(label_schema=job.label_schema, value=label)
        webhooks.review_resolved_emit(review=review, item=item, label=shown)

        job_id = job.pk
        transaction.on_commit(lambda: job_complete_if_done(job_id=job_id))
    return decision


def review_reopen(
    *, user: AbstractBaseUser, review_id: int, note: str = "", now: datetime | None = None
) -> Review:
    """Reopen a finished review so that QC can decide again; claims it for the user.

    The item keeps its current result until the new decision supersedes it. 409 when the
    item already has an open review for the same reason (decide on that one instead).
    """
    _require_qc(user)
    now = now or timezone.now()
    with transaction.atomic():
        review = _locked_review(review_id, user)
        if review.status == Review.Status.OPEN:
            return review
        context = dict(review.context or {})
        context["reopened"] = [
            *context.get("reopened", []),
            {"at": now.isoformat(), "by": user.pk, "note": note},
        ]
        review.status = Review.Status.OPEN
        review.resolved_at = None
        review.context = context
        try:
            with transaction.atomic():
                review.save(update_fields=["status", "resolved_at", "context", "updated_at"])
        except IntegrityError:
            raise _conflict(
                "The item already has an open review for this reason.", ErrorCode.INVALID_STATE
            ) from None
        _set_claim(review, user=user, now=now, seconds=CLAIM_SECONDS)
    return review


def item_send_to_review(*, item_id: int, reason: str = "") -> None:
    """Put the item in QC review: no more crowd leases; QC's resolution settles it.

    Opens the item's review for `reason` (an apps.reviews Reason value; anything else is kept
    as the review's note under "disagreement"). Gold items keep their state.
    """
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
