"""Server-rendered pages: token login and the dashboards."""

from __future__ import annotations

from django import forms
from django.contrib.auth import login, logout
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from apps.accounts.models import ApiToken
from apps.accounts.selectors import user_roles
from apps.accounts.services import token_digest
from apps.jobs.selectors import job_get_for_user, job_list_for_user, job_vendor_ids_for_user
from apps.reports.selectors import job_metrics, overview_metrics, worker_list_metrics
from apps.workforce.selectors import ops_organization_ids


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
    if "qc" in roles:
        return redirect("/qc/")
    if roles & {"ops", "client"}:
        return redirect("/dashboard/")
    if roles & {"annotator", "expert"}:
        return redirect("/annotate/")
    return redirect("/dashboard/")


def _require_reader(request: HttpRequest) -> None:
    if not user_roles(user=request.user) & {"ops", "qc", "client"}:
        raise PermissionDenied


@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    _require_reader(request)
    rows = overview_metrics(jobs=job_list_for_user(user=request.user))
    ops_vendor_ids = ops_organization_ids(user=request.user)
    workers = worker_list_metrics(vendor_ids=ops_vendor_ids, limit=20) if ops_vendor_ids else []
    return render(request, "reports/dashboard.html", {"rows": rows, "workers": workers})


@login_required
def job_dashboard(request: HttpRequest, job_id: int) -> HttpResponse:
    _require_reader(request)
    job = job_get_for_user(user=request.user, job_id=job_id)
    vendor_ids = job_vendor_ids_for_user(user=request.user, job=job)
    metrics = job_metrics(job=job, worker_vendor_ids=vendor_ids)
    return render(request, "reports/job.html", {"job": job, "m": metrics})
