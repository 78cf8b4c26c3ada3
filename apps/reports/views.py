"""Server-rendered pages: token login and the dashboards (jobs for their readers; pools and
workers for ops, scoped to the ops user's own vendor, with actions that call the same
services as the API). Every table downloads as CSV with `?format=csv`."""

from __future__ import annotations

import csv
import uuid
from collections.abc import Iterable, Sequence
from decimal import Decimal, InvalidOperation
from urllib.parse import urlencode

from django import forms
from django.contrib.auth import login, logout
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from apps.accounts.models import ApiToken, Organization, Role
from apps.accounts.selectors import user_client_org_ids, user_roles
from apps.accounts.services import token_digest
from apps.common.errors import ApplicationError
from apps.jobs.apis import JobInputSerializer
from apps.jobs.ingest import UploadFormatError
from apps.jobs.selectors import (
    JOB_WRITER_ROLES,
    job_get_for_user,
    job_list_for_user,
    job_vendor_ids_for_user,
)
from apps.jobs.services import (
    item_ingest,
    job_cancel,
    job_create,
    job_launch,
    job_pause,
    job_resume,
)
from apps.quality.selectors import worker_quality
from apps.reports.items import job_items_forget
from apps.reports.jobform import KIND_CHOICES, job_form_body, job_form_errors, job_form_read
from apps.reports.selectors import (
    Window,
    job_cost_estimate,
    job_metrics,
    overview_metrics,
    pool_member_rows,
    worker_history,
    worker_list_metrics,
    worker_summary,
)
from apps.workforce.selectors import (
    job_get_for_bonus,
    job_list_for_ops,
    ops_organization_ids,
    pool_get_for_ops,
    pool_list_for_ops,
    worker_earnings,
    worker_get_for_ops,
)
from apps.workforce.services import (
    ledger_bonus,
    pool_update,
    worker_ban,
    worker_suspend,
    worker_unban,
)


class TokenLoginForm(forms.Form):
    token = forms.CharField(widget=forms.PasswordInput, label="API token")


@require_http_methods(["GET", "POST"])
def token_login(request: HttpRequest) -> HttpResponse:
    """Sign in to the pages with an API token (users made by createtoken have no password)."""
    form = TokenLoginForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        token = (
            ApiToken.objects.select_related("user")
            .filter(
                digest=token_digest(form.cleaned_data["token"].strip()), revoked_at__isnull=True
            )
            .first()
        )
        if token and token.user.is_active:
            login(request, token.user, backend="django.contrib.auth.backends.ModelBackend")
            target = request.GET.get("next") or "/"
            return redirect(
                target if target.startswith("/") and not target.startswith("//") else "/"
            )
        form.add_error("token", "Unknown or revoked token.")
    return render(
        request,
        "registration/token_login.html",
        {"form": form},
        status=200 if form.is_valid() or request.method == "GET" else 400,
    )


def token_logout(request: HttpRequest) -> HttpResponse:
    logout(request)
    return redirect("/login/")


def home(request: HttpRequest) -> HttpResponse:
    if not request.user.is_authenticated:
        return redirect("/login/")
    roles = user_roles(user=request.user)
    if Role.QC in roles:
        return redirect("/qc/")
    if roles & {Role.OPS, Role.CLIENT}:
        return redirect("/dashboard/")
    if roles & {Role.ANNOTATOR, Role.EXPERT}:
        return redirect("/annotate/")
    return redirect("/dashboard/")


def _require_reader(request: HttpRequest) -> None:
    if not user_roles(user=request.user) & {Role.OPS, Role.QC, Role.CLIENT}:
        raise PermissionDenied


def _require_writer(request: HttpRequest) -> None:
    """Changing a job is for clients and ops (QC and workers: 403)."""
    if not user_roles(user=request.user) & JOB_WRITER_ROLES:
        raise PermissionDenied


def _require_ops(request: HttpRequest) -> None:
    if Role.OPS not in user_roles(user=request.user) or not ops_organization_ids(user=request.user):
        raise PermissionDenied


class _Echo:
    def write(self, value: str) -> str:
        return value


def _wants_csv(request: HttpRequest) -> bool:
    return request.GET.get("format") == "csv"


def _csv(filename: str, columns: Sequence[tuple[str, str]], rows: Iterable[dict]) -> HttpResponse:
    """A table as CSV: `columns` are (key, header) pairs; money stays exact (Decimal)."""
    writer = csv.writer(_Echo())

    def lines():
        yield writer.writerow([header for _, header in columns])
        for row in rows:
            yield writer.writerow(["" if row.get(k) is None else row.get(k) for k, _ in columns])

    response = StreamingHttpResponse(lines(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


WORKER_COLUMNS = [
    ("worker_id", "worker"),
    ("username", "username"),
    ("worker_tier", "tier"),
    ("worker_status", "status"),
    ("labels", "labels"),
    ("gold", "gold answers"),
    ("gold_correct", "gold correct"),
    ("gold_accuracy", "gold accuracy"),
    ("gold_low", "gold accuracy low (95%)"),
    ("gold_high", "gold accuracy high (95%)"),
    ("mean_duration_ms", "mean ms"),
    ("earnings", "earnings"),
    ("flag_text", "flags"),
]


def _worker_rows_for_csv(rows: list[dict]) -> list[dict]:
    return [{**r, "flag_text": "; ".join(r.get("flags", []))} for r in rows]


@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    _require_reader(request)
    window = Window()  # where the rollups stop, read once for the page
    rows = overview_metrics(jobs=job_list_for_user(user=request.user), window=window)
    ops_vendor_ids = ops_organization_ids(user=request.user)
    workers = (
        worker_list_metrics(vendor_ids=ops_vendor_ids, limit=50, window=window)
        if ops_vendor_ids
        else []
    )
    if _wants_csv(request):
        table = request.GET.get("table")
        if table == "workers":
            return _csv("workers.csv", WORKER_COLUMNS, _worker_rows_for_csv(workers))
        if table == "pools":
            pools = [
                {"id": p.pk, "name": p.name, "members": p.members.count(), "jobs": p.jobs.count()}
                for p in (pool_list_for_ops(user=request.user) if ops_vendor_ids else [])
            ]
            columns = [
                ("id", "pool"),
                ("name", "name"),
                ("members", "members"),
                ("jobs", "open jobs"),
            ]
            return _csv("pools.csv", columns, pools)
        flat = [
            {**r, "id": r["job"].pk, "name": r["job"].name, "status": r["job"].status} for r in rows
        ]
        columns = [
            ("id", "job"),
            ("name", "name"),
            ("status", "status"),
            ("items", "items"),
            ("settled", "settled"),
            ("review", "in review"),
            ("labels", "labels"),
            ("gold_error_rate", "gold error rate"),
            ("cost", "cost"),
        ]
        return _csv("jobs.csv", columns, flat)
    pools = list(pool_list_for_ops(user=request.user)) if ops_vendor_ids else []
    return render(
        request,
        "reports/dashboard.html",
        {
            "rows": rows,
            "workers": workers,
            "pools": pools,
            "is_ops": bool(ops_vendor_ids),
            "is_client": Role.CLIENT in user_roles(user=request.user),
        },
    )


@login_required
def job_dashboard(request: HttpRequest, job_id: int) -> HttpResponse:
    _require_reader(request)
    job = job_get_for_user(user=request.user, job_id=job_id)
    vendor_ids = job_vendor_ids_for_user(user=request.user, job=job)
    hours = _hours(request)
    metrics = job_metrics(job=job, worker_vendor_ids=vendor_ids, hours=hours)
    if _wants_csv(request):
        if request.GET.get("table") == "cost":
            cost = metrics["cost_of_quality"]
            rows = [
                {"part": f"{k}.{sub}", "value": v2}
                for k, v in cost.items()
                if isinstance(v, dict)
                for sub, v2 in v.items()
            ]
            rows[:0] = [{"part": k, "value": v} for k, v in cost.items() if not isinstance(v, dict)]
            return _csv(f"job-{job.pk}-cost.csv", [("part", "part"), ("value", "value")], rows)
        if request.GET.get("table") == "workers" and "workers" in metrics:
            return _csv(
                f"job-{job.pk}-workers.csv",
                WORKER_COLUMNS,
                _worker_rows_for_csv(metrics["workers"]),
            )
        columns = [(k, k) for k in metrics["series"][0]] if metrics["series"] else []
        return _csv(f"job-{job.pk}-hourly.csv", columns, metrics["series"])
    return _render_job(request, job, metrics=metrics, charts=_job_charts(metrics))


# The time ranges the job page offers (hours), the first the default.
HOUR_RANGES = {24: "24 h", 6: "6 h", 72: "3 days", 168: "7 days"}


def _hours(request: HttpRequest) -> int:
    value = request.GET.get("hours", "")
    return int(value) if value.isdigit() and int(value) in HOUR_RANGES else 24


def _job_charts(metrics: dict) -> dict:
    sources = metrics["items"]["settled_by_source"]
    return {
        "hourly": {
            "labels": [h["hour"] for h in metrics["series"]],
            "time_zone": metrics["throughput"]["time_zone"],
            "series": {
                "Labels": [h["labels"] for h in metrics["series"]],
                "Reviews opened": [h["reviews_opened"] for h in metrics["series"]],
                "QC overrides": [h["qc_overrides"] for h in metrics["series"]],
            },
            "rates": {"Gold error rate": [h["gold_error_rate"] for h in metrics["series"]]},
        },
        "sources": {
            "labels": list(sources.keys()),
            "values": list(sources.values()),
        },
    }


def _can_write(request: HttpRequest, job_id: int) -> bool:
    """Whether the user may change the job: through a client or ops membership (QC reads)."""
    return job_list_for_user(user=request.user, roles=JOB_WRITER_ROLES).filter(pk=job_id).exists()


def _render_job(
    request: HttpRequest,
    job,
    *,
    metrics: dict | None = None,
    charts: dict | None = None,
    report: dict | None = None,
    message: str = "",
    error: str = "",
    status: int = 200,
) -> HttpResponse:
    if metrics is None:
        metrics = job_metrics(
            job=job, worker_vendor_ids=job_vendor_ids_for_user(user=request.user, job=job)
        )
        charts = _job_charts(metrics)
    estimate = job_cost_estimate(
        job=job, n_items=metrics["items"]["total"] - metrics["items"]["gold"]
    )
    return render(
        request,
        "reports/job.html",
        {
            "job": job,
            "m": metrics,
            "charts": charts,
            "can_write": _can_write(request, job.pk),
            "hours": _hours(request),
            "hour_ranges": sorted(HOUR_RANGES.items()),
            "estimate": estimate,
            "report": report,
            "message": message or request.GET.get("done", "")[:200],
            "error": error or request.GET.get("error", "")[:300],
        },
        status=status,
    )


LIFECYCLE = {
    "launch": job_launch,
    "pause": job_pause,
    "resume": job_resume,
    "cancel": job_cancel,
}


@login_required
@require_POST
def job_lifecycle(request: HttpRequest, job_id: int) -> HttpResponse:
    """Launch, pause, resume or cancel: the same services as the API's endpoints."""
    _require_writer(request)
    job = job_get_for_user(user=request.user, job_id=job_id, roles=JOB_WRITER_ROLES)
    action = request.POST.get("action", "")
    if action not in LIFECYCLE:
        return redirect(f"/dashboard/jobs/{job.pk}/?{urlencode({'error': 'Unknown action.'})}")
    try:
        job = LIFECYCLE[action](job=job)
    except ApplicationError as exc:
        return redirect(f"/dashboard/jobs/{job.pk}/?{urlencode({'error': exc.message})}")
    return redirect(f"/dashboard/jobs/{job.pk}/?{urlencode({'done': f'The job is {job.status}.'})}")


UPLOAD_FORMATS = {"json": "json", "jsonl": "jsonl", "ndjson": "jsonl", "csv": "csv"}


@login_required
@require_POST
def job_upload(request: HttpRequest, job_id: int) -> HttpResponse:
    """Upload items from a file (JSON list, JSON lines or CSV, by its name): the good rows
    are stored, the bad ones listed by row number with the reason, as the API does."""
    _require_writer(request)
    job = job_get_for_user(user=request.user, job_id=job_id, roles=JOB_WRITER_ROLES)
    upload = request.FILES.get("file")
    if upload is None:
        return _render_job(request, job, error="Choose a file to upload.", status=400)
    suffix = upload.name.rsplit(".", 1)[-1].lower() if "." in upload.name else ""
    fmt = UPLOAD_FORMATS.get(suffix)
    if fmt is None:
        message = "Name the file .json (a list), .jsonl (one row per line) or .csv."
        return _render_job(request, job, error=message, status=400)
    try:
        report = item_ingest(job=job, stream=upload, fmt=fmt)
        job_items_forget(job_id=job.pk)
    except UploadFormatError as exc:
        return _render_job(request, job, error=str(exc), status=400)
    except ApplicationError as exc:
        return _render_job(request, job, error=exc.message, status=exc.status_code)
    return _render_job(request, job, report=report.as_dict())


@login_required
@require_http_methods(["GET", "POST"])
def job_new(request: HttpRequest) -> HttpResponse:
    """A client creates a job: a form for the name, instructions, the answer kind and its
    parameters, policy, prices and routing; the job starts as a draft (upload, then launch,
    on its page)."""
    if Role.CLIENT not in user_roles(user=request.user):
        raise PermissionDenied
    form = job_form_read(request.POST)
    errors: list[str] = []
    field_errors: dict[str, list[str]] = {}
    if request.method == "POST":
        data = JobInputSerializer(data=job_form_body(form))
        org_ids = user_client_org_ids(user=request.user)
        if len(org_ids) != 1:
            errors.append("You are a client in several organizations: create the job by API.")
        elif data.is_valid():
            job = job_create(
                organization=Organization.objects.get(pk=org_ids[0]),
                created_by=request.user,
                **data.validated_data,
            )
            done = "Job created as a draft: upload items, then launch it."
            return redirect(f"/dashboard/jobs/{job.pk}/?{urlencode({'done': done})}")
        else:
            errors, field_errors = job_form_errors(data.errors)
    return render(
        request,
        "reports/job_new.html",
        {"form": form, "errors": errors, "field_errors": field_errors, "kinds": KIND_CHOICES},
        status=400 if errors else 200,
    )


@login_required
def pool_page(request: HttpRequest, pool_id: int) -> HttpResponse:
    _require_ops(request)
    pool = pool_get_for_ops(user=request.user, pool_id=pool_id)
    rows = pool_member_rows(pool=pool)
    if _wants_csv(request):
        return _csv(f"pool-{pool.pk}-members.csv", WORKER_COLUMNS, _worker_rows_for_csv(rows))
    # A big pool's page shows the flagged members, then the busiest (the CSV has them all).
    shown = sorted(rows, key=lambda r: (not r["flags"], -r["labels"], r["worker_id"]))
    shown = shown[:POOL_MEMBERS_SHOWN]
    charts = {
        "accuracy": {
            "labels": [r["username"] for r in shown],
            "values": [r["gold_accuracy"] for r in shown],
            "low": [r["gold_low"] for r in shown],
            "high": [r["gold_high"] for r in shown],
        }
    }
    return render(
        request,
        "reports/pool.html",
        {
            "pool": pool,
            "rows": shown,
            "members": len(rows),
            "jobs": pool.jobs.all(),
            "charts": charts,
        },
    )


POOL_MEMBERS_SHOWN = 100


def _confusion_rows(job_quality: dict) -> list[dict]:
    """A confusion matrix as rows of cells with a shade (0..1) for the heatmap."""
    classes = job_quality["classes"]
    matrix = job_quality["confusion"] or []
    rows = []
    for truth, row in zip(classes, matrix, strict=False):
        rows.append(
            {
                "truth": truth,
                "cells": [{"p": p, "shade": round(min(1.0, max(0.0, float(p))), 3)} for p in row],
            }
        )
    return rows


@login_required
def worker_page(request: HttpRequest, worker_id: int) -> HttpResponse:
    _require_ops(request)
    worker = worker_get_for_ops(user=request.user, worker_id=worker_id)
    history = worker_history(worker_id=worker.pk)
    if _wants_csv(request) and request.GET.get("table") == "confusion":
        rows = [
            {"job": j["job"], "true": truth, "answered": answered, "p": p}
            for j in worker_quality(worker=worker)["jobs"]
            for truth, row in zip(j["classes"], j["confusion"] or [], strict=False)
            for answered, p in zip(j["classes"], row, strict=False)
        ]
        columns = [("job", "job"), ("true", "true class"), ("answered", "answered"), ("p", "p")]
        return _csv(f"worker-{worker.pk}-confusion.csv", columns, rows)
    if _wants_csv(request):
        columns = [(k, k) for k in history[0]]
        return _csv(f"worker-{worker.pk}-history.csv", columns, history)
    summary = worker_summary(worker_id=worker.pk)
    quality = worker_quality(worker=worker)
    for job_quality in quality["jobs"]:
        job_quality["matrix"] = _confusion_rows(job_quality)
    own_pools = pool_list_for_ops(user=request.user)
    member_of = {p.pk for p in worker.pools.all()}
    labeled_jobs = job_list_for_ops(user=request.user).filter(pk__in=worker.labels.values("job_id"))
    charts = {
        "history": {
            "labels": [d["day"] for d in history],
            "series": {"Labels": [d["labels"] for d in history]},
            "rates": {
                "Gold error rate": [
                    (d["gold_errors"] / d["gold_answers"]) if d["gold_answers"] else None
                    for d in history
                ]
            },
        }
    }
    return render(
        request,
        "reports/worker.html",
        {
            "worker": worker,
            "summary": summary,
            "q": quality,
            "earnings": worker_earnings(worker=worker),
            "history": history,
            "charts": charts,
            "pools": [p for p in own_pools if p.pk not in member_of],
            "member_pools": [p for p in own_pools if p.pk in member_of],
            "labeled_jobs": labeled_jobs.only("id", "name"),
            "message": request.GET.get("done", "")[:200],
            "error": request.GET.get("error", "")[:300],
        },
    )


WORKER_ACTIONS = ("suspend", "ban", "unban", "bonus", "add_to_pool")


@login_required
@require_POST
def worker_action(request: HttpRequest, worker_id: int) -> HttpResponse:
    """Suspend, ban, unban, pay a bonus or add to a pool: the same services as the API."""
    _require_ops(request)
    worker = worker_get_for_ops(user=request.user, worker_id=worker_id)
    action = request.POST.get("action", "")
    reason = request.POST.get("reason", "").strip()[:500]
    try:
        if action == "suspend":
            worker_suspend(worker=worker, reason=reason)
            done = "Suspended."
        elif action == "ban":
            worker_ban(worker=worker, reason=reason)
            done = "Banned."
        elif action == "unban":
            worker_unban(worker=worker)
            done = "Active again."
        elif action == "bonus":
            try:
                amount = Decimal(request.POST.get("amount", "").strip())
            except InvalidOperation:
                raise ApplicationError("The amount must be a number, like 1.50.") from None
            job_id = request.POST.get("job", "")
            job = job_get_for_bonus(
                user=request.user, worker=worker, job_id=int(job_id) if job_id.isdigit() else 0
            )
            entry, _ = ledger_bonus(
                worker=worker,
                job=job,
                amount=amount,
                # One form, one bonus: the key comes with the form, so a resubmit is a retry.
                idempotency_key=request.POST.get("key") or uuid.uuid4().hex,
                note=request.POST.get("note", "").strip()[:500],
            )
            done = f"Bonus of {entry.amount:.2f} paid for job #{job.pk}."
        elif action == "add_to_pool":
            pool_id = request.POST.get("pool", "")
            pool = pool_get_for_ops(
                user=request.user, pool_id=int(pool_id) if pool_id.isdigit() else 0
            )
            pool_update(pool=pool, data={"members": [*pool.members.all(), worker]})
            done = f"Added to pool {pool.name}."
        else:
            raise ApplicationError(f"Unknown action; choose one of {', '.join(WORKER_ACTIONS)}.")
    except ApplicationError as exc:
        return redirect(f"/dashboard/workers/{worker.pk}/?{urlencode({'error': exc.message})}")
    return redirect(f"/dashboard/workers/{worker.pk}/?{urlencode({'done': done})}")
