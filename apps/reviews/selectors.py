"""Reads for QC review: the queue, one review with everything a decision needs, worker
feedback, guideline gaps and the review metrics of a job."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection
from datetime import datetime
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Count, F, Q, QuerySet
from django.http import Http404
from django.utils import timezone

from apps.accounts.selectors import user_vendor_org_ids
from apps.assignments.models import Label
from apps.jobs.models import Item, Job
from apps.jobs.selectors import job_list_for_vendors, worker_pseudonym
from apps.reviews.models import Reason, Review, ReviewDecision, ReviewOutcome
from apps.workforce.models import Worker

GUIDELINE_GAPS_MAX = 500


def review_list_for_user(*, user: AbstractBaseUser) -> QuerySet[Review]:
    """Reviews of the jobs the user's vendors serve, as their staff (the vendor half of the
    tenancy rule of `job_list_for_user`), queue order. Reviews show workers and their
    quality, so a client membership the user may also hold never widens this."""
    return (
        Review.objects.select_related("job", "item", "claimed_by")
        .filter(job__in=job_list_for_vendors(vendor_ids=user_vendor_org_ids(user=user)))
        .order_by("-priority", "created_at", "id")
    )


def viewer_vendor_ids(*, user: AbstractBaseUser) -> list[int]:
    """The vendors the user is staff of: whose workers they see by name."""
    return list(user_vendor_org_ids(user=user).values_list("organization_id", flat=True))


def review_get_for_user(*, user: AbstractBaseUser, review_id: int) -> Review:
    """The review if the user may see it; 404 otherwise."""
    review = review_list_for_user(user=user).filter(pk=review_id).first()
    if review is None:
        raise Http404("No such review.")
    return review


def review_claim_holder(*, review: Review, now: datetime | None = None) -> str | None:
    """Username of whoever holds a live claim on the review, else None."""
    now = now or timezone.now()
    if review.claimed_by_id is None or review.claim_expires_at <= now:
        return None
    return review.claimed_by.username


def worker_review_stats(*, worker_ids: list[int]) -> dict[int, dict[str, Any]]:
    """Per worker: gold accuracy (Label.is_correct over all jobs) and the overturned rate of
    their labels in QC decisions (current outcomes only). Two queries."""
    gold = {
        row["worker_id"]: row
        for row in Label.objects.filter(worker_id__in=worker_ids, is_gold=True)
        .values("worker_id")
        .annotate(n=Count("id"), correct=Count("id", filter=Q(is_correct=True)))
        .order_by()
    }
    reviewed = {
        row["worker_id"]: row
        for row in ReviewOutcome.objects.filter(worker_id__in=worker_ids, is_current=True)
        .values("worker_id")
        .annotate(n=Count("id"), wrong=Count("id", filter=Q(correct=False)))
        .order_by()
    }
    stats = {}
    for worker_id in worker_ids:
        g = gold.get(worker_id, {"n": 0, "correct": 0})
        r = reviewed.get(worker_id, {"n": 0, "wrong": 0})
        stats[worker_id] = {
            "gold_answers": g["n"],
            "gold_accuracy": g["correct"] / g["n"] if g["n"] else None,
            "reviewed_labels": r["n"],
            "overturned": r["wrong"],
            "overturned_rate": r["wrong"] / r["n"] if r["n"] else None,
        }
    return stats


def review_detail(
    *, review: Review, viewer_vendor_ids: Collection[int] | None = None
) -> dict[str, Any]:
    """Everything QC needs to decide: the item, every label with its worker's quality, the
    posterior, the model's prediction, the gold answer, the item's reviews and decisions.

    With `viewer_vendor_ids`, a worker of another vendor (two vendors serving one client's
    job) is named by their per-job pseudonym instead of their username: their quality
    figures stay, since the decision needs them."""
    item = review.item
    job = review.job
    labels = list(
        Label.objects.filter(item_id=item.pk)
        .select_related("worker__user")
        .order_by("id")
        .only(
            "id",
            "value",
            "tier",
            "duration_ms",
            "created_at",
            "worker__id",
            "worker__organization_id",
            "worker__user__username",
        )
    )

    def name(worker: Worker) -> str:
        if viewer_vendor_ids is None or worker.organization_id in viewer_vendor_ids:
            return worker.user.username
        return worker_pseudonym(job_id=job.pk, worker_id=worker.pk)

    stats = worker_review_stats(worker_ids=sorted({label.worker_id for label in labels}))
    decisions = list(
        ReviewDecision.objects.filter(item_id=item.pk).select_related("decided_by").order_by("-id")
    )
    reviews = list(Review.objects.filter(item_id=item.pk).order_by("-id"))
    classes = job.classes
    prediction = item.prediction if isinstance(item.prediction, list) else None
    predicted = None
    if prediction and len(prediction) == len(classes):
        predicted = classes[max(range(len(classes)), key=lambda i: prediction[i])]
    return {
        "review": review,
        "job": job,
        "item": item,
        "classes": classes,
        "label_schema": job.label_schema,
        "labels": [
            {
                "id": label.pk,
                "worker": label.worker_id,
                "username": name(label.worker),
                "tier": label.tier,
                "value": label.value,
                "duration_ms": label.duration_ms,
                "created_at": label.created_at,
                **stats[label.worker_id],
            }
            for label in labels
        ],
        "posterior": _pairs(classes, item.posterior),
        "prediction": _pairs(classes, prediction),
        "predicted_label": predicted,
        "gold_label": item.gold_label,
        "decisions": [
            {
                "id": d.pk,
                "review": d.review_id,
                "label": d.label,
                "previous_label": d.previous_label,
                "previous_source": d.previous_source,
                "note": d.note,
                "tags": d.tags,
                "make_gold": d.make_gold,
                "is_current": d.is_current,
                "decided_by": d.decided_by.username,
                "created_at": d.created_at,
            }
            for d in decisions
        ],
        "reviews": [
            {
                "id": r.pk,
                "reason": r.reason,
                "status": r.status,
                "note": r.note,
                "created_at": r.created_at,
                "resolved_at": r.resolved_at,
            }
            for r in reviews
        ],
    }


def _pairs(classes: list[str], values: Any) -> list[dict[str, Any]] | None:
    if not isinstance(values, list) or len(values) != len(classes):
        return None
    return [{"label": c, "p": float(p)} for c, p in zip(classes, values, strict=True)]


def feedback_list_for_worker(*, worker: Worker) -> QuerySet[ReviewOutcome]:
    """The worker's own outcomes under current QC decisions, newest first."""
    return (
        ReviewOutcome.objects.filter(worker_id=worker.pk, is_current=True)
        .select_related("item", "decision")
        .only(
            "id",
            "job_id",
            "value",
            "final_label",
            "correct",
            "note",
            "created_at",
            "item__payload",
            "decision__tags",
        )
        .order_by("-id")
    )


def guideline_gaps(*, job: Job) -> dict[str, Any]:
    """Tagged current decisions of the job with their notes (newest first, capped), and how
    often each tag was used: what the client should clarify in the instructions."""
    rows = list(
        ReviewDecision.objects.filter(job_id=job.pk, is_current=True)
        .exclude(tags=[])
        .select_related("item")
        .only("id", "label", "note", "tags", "created_at", "item__external_id", "item__payload")
        .order_by("-id")[:GUIDELINE_GAPS_MAX]
    )
    counts: Counter[str] = Counter(tag for row in rows for tag in row.tags)
    return {
        "tags": dict(counts.most_common()),
        "results": [
            {
                "external_id": row.item.external_id,
                "payload": row.item.payload,
                "label": row.label,
                "tags": row.tags,
                "note": row.note,
                "decided_at": row.created_at,
            }
            for row in rows
        ],
    }


def review_metrics(*, job: Job, worker_vendor_ids: Collection[int] = ()) -> dict[str, Any]:
    """What QC found in the job.

    - qc_override_rate: among current decisions on items that had a result before QC, the
      share where QC chose a different label (crowd, model or expert overturned).
    - audit_accuracy: among decided audits, the share where the audited result stood, per
      source of that result; audit_accuracy_model is the auto-accepted (model) figure.
    - workers: per worker, labels judged by QC and the share overturned; only the workers
      of `worker_vendor_ids` (the vendors through which the reader is staff on the job), and
      left out for a client reader: clients never see worker identities.
    """
    reviews = dict(
        Review.objects.filter(job_id=job.pk, status=Review.Status.OPEN)
        .values_list("reason")
        .annotate(n=Count("id"))
        .order_by()
    )
    decided = ReviewDecision.objects.filter(job_id=job.pk, is_current=True)
    totals = decided.aggregate(
        n=Count("id"),
        with_result=Count("id", filter=Q(original_label__isnull=False)),
        overridden=Count(
            "id", filter=Q(original_label__isnull=False) & ~Q(label=F("original_label"))
        ),
    )
    audits = (
        decided.filter(review__reason=Reason.AUDIT, original_label__isnull=False)
        .values("original_source")
        .annotate(
            n=Count("id"),
            correct=Count("id", filter=Q(label=F("original_label"))),
        )
        .order_by()
    )
    audit_accuracy = {
        row["original_source"] or "none": {
            "audited": row["n"],
            "correct": row["correct"],
            "accuracy": row["correct"] / row["n"],
        }
        for row in audits
    }
    workers = list(
        ReviewOutcome.objects.filter(
            job_id=job.pk, is_current=True, worker__organization_id__in=list(worker_vendor_ids)
        )
        .values("worker_id", "worker__user__username")
        .annotate(n=Count("id"), wrong=Count("id", filter=Q(correct=False)))
        .order_by("-wrong", "worker_id")
    )
    model = audit_accuracy.get(Item.Source.MODEL)
    metrics = {
        "open_reviews": {reason: reviews.get(reason, 0) for reason in Reason.values},
        "decisions": totals["n"],
        "qc_override_rate": (
            totals["overridden"] / totals["with_result"] if totals["with_result"] else None
        ),
        "qc_overrides": totals["overridden"],
        "audit_accuracy": audit_accuracy,
        "audit_accuracy_model": model["accuracy"] if model else None,
    }
    if worker_vendor_ids:
        metrics["workers"] = [
            {
                "worker": row["worker_id"],
                "username": row["worker__user__username"],
                "reviewed_labels": row["n"],
                "overturned": row["wrong"],
                "overturned_rate": row["wrong"] / row["n"],
            }
            for row in workers
        ]
    return metrics
