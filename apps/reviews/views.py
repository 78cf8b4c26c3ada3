"""QC pages: the queue and one review at a time, built to be worked through by keyboard.

The pages post CSRF-protected forms to these views; the views call the same services as
the API and redirect to the next claimed review (post/redirect/get, so reloading never
decides twice).
"""

from __future__ import annotations

from urllib.parse import urlencode

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from apps.accounts.selectors import user_roles, user_vendor_org_ids
from apps.common.errors import ApplicationError
from apps.jobs.selectors import job_list_for_vendors
from apps.reviews import selectors, services
from apps.reviews.models import Reason, Review, Tag

QUEUE_ROWS = 100
# Reviews the person skipped this session are not offered again until the queue runs dry.
SKIPPED_KEY = "qc_skipped"
SKIPPED_MAX = 200


def _require_qc(request: HttpRequest) -> None:
    if "qc" not in user_roles(user=request.user):
        raise PermissionDenied


def _filters(data) -> dict[str, str]:
    """The queue filters carried from page to page (job id, reason), validated."""
    found = {}
    job = (data.get("job") or "").strip()
    if job.isdigit():
        found["job"] = job
    reason = (data.get("reason") or "").strip()
    if reason in Reason.values:
        found["reason"] = reason
    return found


def _query(filters: dict[str, str]) -> str:
    return f"?{urlencode(filters)}" if filters else ""


def _next_page(request: HttpRequest, filters: dict[str, str]) -> HttpResponse:
    """Claim the next review under the filters and go there; the queue when none is left."""
    skipped = request.session.get(SKIPPED_KEY, [])
    kwargs = {
        "user": request.user,
        "job_id": int(filters["job"]) if "job" in filters else None,
        "reason": filters.get("reason"),
    }
    review = services.review_claim_next(**kwargs, exclude_ids=skipped)
    if review is None and skipped:
        request.session[SKIPPED_KEY] = []
        review = services.review_claim_next(**kwargs)
    if review is None:
        return redirect(f"/qc/{_query({**filters, 'done': '1'})}")
    return redirect(f"/qc/reviews/{review.pk}/{_query(filters)}")


@login_required
def queue(request: HttpRequest) -> HttpResponse:
    _require_qc(request)
    filters = _filters(request.GET)
    reviews = selectors.review_list_for_user(user=request.user).filter(status=Review.Status.OPEN)
    if "job" in filters:
        reviews = reviews.filter(job_id=int(filters["job"]))
    if "reason" in filters:
        reviews = reviews.filter(reason=filters["reason"])
    counts = dict(reviews.order_by().values_list("reason").annotate(n=Count("id")))
    jobs = (
        job_list_for_vendors(vendor_ids=user_vendor_org_ids(user=request.user))
        .filter(reviews__status=Review.Status.OPEN)
        .distinct()
        .order_by("-id")
    )
    rows = [
        {"review": r, "holder": selectors.review_claim_holder(review=r)}
        for r in reviews[:QUEUE_ROWS]
    ]
    return render(
        request,
        "reviews/queue.html",
        {
            "rows": rows,
            "total": sum(counts.values()),
            "counts": counts,
            "jobs": jobs.only("id", "name"),
            "reasons": Reason.choices,
            "filters": filters,
            "query": _query(filters),
            "done": request.GET.get("done") == "1",
        },
    )


@login_required
@require_POST
def claim_next(request: HttpRequest) -> HttpResponse:
    _require_qc(request)
    return _next_page(request, _filters(request.POST))


def _render_review(
    request: HttpRequest, review: Review, filters: dict[str, str], *, error: str = "", status=200
) -> HttpResponse:
    vendor_ids = selectors.viewer_vendor_ids(user=request.user)
    detail = selectors.review_detail(review=review, viewer_vendor_ids=vendor_ids)
    holder = selectors.review_claim_holder(review=review)
    return render(
        request,
        "reviews/review.html",
        {
            **detail,
            "keyed_classes": [(i + 1, c) for i, c in enumerate(detail["classes"])],
            "holder": holder,
            "mine": holder == request.user.get_username(),
            "tags": Tag.choices,
            "filters": filters,
            "query": _query(filters),
            "error": error,
        },
        status=status,
    )


@login_required
def review_page(request: HttpRequest, review_id: int) -> HttpResponse:
    _require_qc(request)
    review = selectors.review_get_for_user(user=request.user, review_id=review_id)
    return _render_review(request, review, _filters(request.GET))


@login_required
@require_POST
def resolve(request: HttpRequest, review_id: int) -> HttpResponse:
    _require_qc(request)
    filters = _filters(request.POST)
    review = selectors.review_get_for_user(user=request.user, review_id=review_id)
    try:
        services.review_resolve(
            user=request.user,
            review_id=review.pk,
            label=request.POST.get("label", ""),
            note=request.POST.get("note", "").strip(),
            make_gold=request.POST.get("make_gold") == "on",
            tags=request.POST.getlist("tags"),
        )
    except ApplicationError as exc:
        return _render_review(request, review, filters, error=exc.message, status=exc.status_code)
    return _next_page(request, filters)


@login_required
@require_POST
def skip(request: HttpRequest, review_id: int) -> HttpResponse:
    _require_qc(request)
    filters = _filters(request.POST)
    try:
        services.review_release(user=request.user, review_id=review_id)
    except ApplicationError:
        pass  # Someone else holds it now: skipping it is what we wanted anyway.
    skipped = [review_id, *request.session.get(SKIPPED_KEY, [])][:SKIPPED_MAX]
    request.session[SKIPPED_KEY] = skipped
    return _next_page(request, filters)
