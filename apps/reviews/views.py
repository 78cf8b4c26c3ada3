"""QC pages: the queue and one review at a time, built to be worked through by keyboard.

The pages post CSRF-protected forms to these views; the views call the same services as
the API and redirect to the next claimed review (post/redirect/get, so reloading never
decides twice).

A decision is posted to the review page itself. If the session expired meanwhile, the
decision (label, note, tags, make gold) is kept in the new session, the person signs in
again and lands back on the review page, which shows the kept decision to confirm; a
decision the service refuses is shown again with its note and the reason, never lost.
"""

from __future__ import annotations

from urllib.parse import urlencode

import orjson
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.db.models import Count
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from apps.accounts.models import Role
from apps.accounts.selectors import user_roles, user_vendor_org_ids
from apps.common.errors import ApplicationError
from apps.jobs.kinds import answer_from_form, answer_value, answer_widget
from apps.jobs.payloads import payload_display
from apps.jobs.selectors import job_list_for_vendors
from apps.reviews import selectors, services
from apps.reviews.models import Reason, Review, Tag

QUEUE_ROWS = 100
# Reviews the person skipped this session are not offered again until the queue runs dry.
SKIPPED_KEY = "qc_skipped"
SKIPPED_MAX = 200
# A decision posted after the session expired, kept across the sign-in: {"review": id, ...}.
DRAFT_KEY = "qc_draft"


def _require_qc(request: HttpRequest) -> None:
    if Role.QC not in user_roles(user=request.user):
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


def _draft(data) -> dict:
    """The decision a form posted: label, note, make_gold and tags, as the page shows them."""
    return {
        "label": (data.get("label") or "").strip(),
        "note": (data.get("note") or "").strip(),
        "make_gold": data.get("make_gold") == "on",
        "tags": [t for t in data.getlist("tags") if t in Tag.values],
    }


def _render_review(
    request: HttpRequest,
    review: Review,
    filters: dict[str, str],
    *,
    error: str = "",
    draft: dict | None = None,
    kept: bool = False,
    status=200,
) -> HttpResponse:
    vendor_ids = selectors.viewer_vendor_ids(user=request.user)
    detail = selectors.review_detail(review=review, viewer_vendor_ids=vendor_ids)
    holder = selectors.review_claim_holder(review=review)
    shown = payload_display(detail["item"].payload)
    label_schema = detail["job"].label_schema
    widget = answer_widget(label_schema=label_schema, images=shown["images"])
    if widget:
        shown = {**shown, "images": widget.pop("answer_shown_images")}
        # QC starts from the current result (a kept draft first) and corrects it.
        start = (draft or {}).get("label") or detail["item"].label
        try:
            widget["answer_initial"] = answer_value(start) if start else None
        except orjson.JSONDecodeError:
            widget["answer_initial"] = None
    return render(
        request,
        "reviews/review.html",
        {
            **detail,
            "keyed_classes": [(i + 1, c) for i, c in enumerate(detail["classes"])],
            "p": shown,
            **widget,
            "holder": holder,
            "mine": holder == request.user.get_username(),
            "tags": Tag.choices,
            "filters": filters,
            "query": _query(filters),
            "error": error,
            "draft": draft or {"label": "", "note": "", "make_gold": False, "tags": []},
            "kept": kept,
        },
        status=status,
    )


def _keep_for_sign_in(request: HttpRequest, review_id: int) -> HttpResponse:
    """The session expired: keep a posted decision and send the person to sign in, then
    back to the review page (a GET there shows the kept decision)."""
    filters = _filters(request.POST or request.GET)
    if request.method == "POST" and request.POST.get("label"):
        request.session[DRAFT_KEY] = {"review": review_id, **_draft(request.POST)}
    return redirect_to_login(f"/qc/reviews/{review_id}/{_query(filters)}")


def _decide(request: HttpRequest, review: Review) -> HttpResponse:
    filters = _filters(request.POST)
    draft = _draft(request.POST)
    try:
        services.review_resolve(
            user=request.user,
            review_id=review.pk,
            label=answer_from_form(label_schema=review.job.label_schema, text=draft["label"]),
            note=draft["note"],
            make_gold=draft["make_gold"],
            tags=draft["tags"],
        )
    except ApplicationError as exc:
        review.refresh_from_db()
        return _render_review(
            request, review, filters, error=exc.message, draft=draft, status=exc.status_code
        )
    return _next_page(request, filters)


def review_page(request: HttpRequest, review_id: int) -> HttpResponse:
    """GET: the review (with a decision kept across a sign-in); POST: decide it."""
    if not request.user.is_authenticated:
        return _keep_for_sign_in(request, review_id)
    if request.method not in ("GET", "HEAD", "POST"):
        return HttpResponseNotAllowed(["GET", "POST"])
    _require_qc(request)
    review = selectors.review_get_for_user(user=request.user, review_id=review_id)
    if request.method == "POST":
        return _decide(request, review)
    kept = request.session.get(DRAFT_KEY)
    if kept and kept.get("review") == review.pk:
        del request.session[DRAFT_KEY]
        draft = {k: kept.get(k) for k in ("label", "note", "make_gold", "tags")}
        return _render_review(request, review, _filters(request.GET), draft=draft, kept=True)
    return _render_review(request, review, _filters(request.GET))


def resolve(request: HttpRequest, review_id: int) -> HttpResponse:
    """The old form target: a POST decides as the review page does; a GET (a sign-in that
    came back here) goes to the review page instead of answering 405."""
    if request.method == "POST":
        return review_page(request, review_id)
    if not request.user.is_authenticated:
        return _keep_for_sign_in(request, review_id)
    _require_qc(request)
    review = selectors.review_get_for_user(user=request.user, review_id=review_id)
    return redirect(f"/qc/reviews/{review.pk}/{_query(_filters(request.GET))}")


@login_required
@require_POST
def reopen(request: HttpRequest, review_id: int) -> HttpResponse:
    """Reopen a finished review (claimed for the person) to decide again."""
    _require_qc(request)
    filters = _filters(request.POST)
    review = selectors.review_get_for_user(user=request.user, review_id=review_id)
    try:
        services.review_reopen(
            user=request.user, review_id=review.pk, note=request.POST.get("note", "").strip()
        )
    except ApplicationError as exc:
        return _render_review(request, review, filters, error=exc.message, status=exc.status_code)
    return redirect(f"/qc/reviews/{review.pk}/{_query(filters)}")


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
