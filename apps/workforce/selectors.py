"""Reads for the workforce: what an ops user may see, a worker's earnings."""

from __future__ import annotations

from decimal import Decimal

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Count, QuerySet, Sum
from django.http import Http404

from apps.accounts.authentication import WORKER_ATTR
from apps.accounts.models import Membership, Organization, Role
from apps.accounts.selectors import user_roles, user_vendor_org_ids
from apps.common.errors import ApplicationError
from apps.jobs.models import Job
from apps.jobs.selectors import job_list_for_vendors
from apps.workforce.models import LedgerEntry, Pool, Worker


def ops_organization_ids(*, user: AbstractBaseUser) -> list[int]:
    """Vendor organizations in which the user is ops (cached on the user object)."""
    cached = getattr(user, "_concord_ops_orgs", None)
    if cached is None:
        cached = list(
            Membership.objects.filter(
                user=user, role=Role.OPS, organization__kind=Organization.Kind.VENDOR
            )
            .order_by("organization_id")
            .values_list("organization_id", flat=True)
        )
        user._concord_ops_orgs = cached
    return cached


def ops_organization_for(*, user: AbstractBaseUser) -> Organization:
    """The vendor organization new workers and pools of this ops user belong to."""
    org_ids = ops_organization_ids(user=user)
    if not org_ids:
        raise Http404("No vendor organization.")
    return Organization.objects.get(pk=org_ids[0])


def worker_list_for_ops(*, user: AbstractBaseUser) -> QuerySet[Worker]:
    return (
        Worker.objects.filter(organization_id__in=ops_organization_ids(user=user))
        .select_related("user")
        .prefetch_related("pools")
        .order_by("id")
    )


def worker_get_for_ops(*, user: AbstractBaseUser, worker_id: int) -> Worker:
    """The worker, if it belongs to one of the ops user's organizations; else 404."""
    worker = worker_list_for_ops(user=user).filter(pk=worker_id).first()
    if worker is None:
        raise Http404("No such worker.")
    return worker


def worker_get_for_earnings(*, user: AbstractBaseUser, worker_id: int) -> Worker:
    """The worker whose earnings the user may read: their own, or as ops of its vendor."""
    worker = Worker.objects.select_related("user").filter(pk=worker_id).first()
    if worker is None:
        raise Http404("No such worker.")
    if worker.user_id == user.pk:
        return worker
    if Role.OPS in user_roles(user=user) and worker.organization_id in ops_organization_ids(
        user=user
    ):
        return worker
    raise Http404("No such worker.")


def worker_get_for_quality(*, user: AbstractBaseUser, worker_id: int) -> Worker:
    """The worker whose quality record the user may read: their own, or as staff (ops or
    QC) of its vendor; 404 otherwise."""
    worker = Worker.objects.select_related("user").filter(pk=worker_id).first()
    if worker is None:
        raise Http404("No such worker.")
    if worker.user_id == user.pk:
        return worker
    if worker.organization_id is not None and (
        user_vendor_org_ids(user=user).filter(organization_id=worker.organization_id).exists()
    ):
        return worker
    raise Http404("No such worker.")


def worker_for_user(*, user: AbstractBaseUser) -> Worker | None:
    """The user's worker record, with only the columns the assignment engine reads.

    Token authentication loads it with the token (no query here); otherwise one query.
    """

    if hasattr(user, WORKER_ATTR):
        return getattr(user, WORKER_ATTR)
    return Worker.objects.only("id", "tier", "status", "user_id").filter(user_id=user.pk).first()


def pool_list_for_ops(*, user: AbstractBaseUser) -> QuerySet[Pool]:
    return (
        Pool.objects.filter(organization_id__in=ops_organization_ids(user=user))
        .prefetch_related("members", "jobs")
        .order_by("id")
    )


def pool_get_for_ops(*, user: AbstractBaseUser, pool_id: int) -> Pool:
    pool = pool_list_for_ops(user=user).filter(pk=pool_id).first()
    if pool is None:
        raise Http404("No such pool.")
    return pool


def job_list_for_ops(*, user: AbstractBaseUser) -> QuerySet[Job]:
    """Jobs the ops user's vendors may act on: the tenancy rule of
    `apps.jobs.selectors.job_list_for_user`, through the user's ops memberships only."""
    vendor_ids = ops_organization_ids(user=user)
    if not vendor_ids:
        return Job.objects.none()
    return job_list_for_vendors(vendor_ids=vendor_ids)


def job_get_for_pool_ops(*, user: AbstractBaseUser, job_id: int) -> Job:
    """A job whose pools the ops user may list and open; 404 for a job their vendor may not
    act on, so other tenants' ids stay hidden."""
    job = job_list_for_ops(user=user).filter(pk=job_id).first()
    if job is None:
        raise Http404("No such job.")
    return job


BONUS_JOB_ERROR = "The worker has no labels in a job of yours with this id."


def job_get_for_bonus(*, user: AbstractBaseUser, worker: Worker, job_id: int) -> Job:
    """The job a bonus to the worker may be charged to: one the ops user's vendor may act on
    and in which the worker has a label. Otherwise a 400 naming the `job` field, with the same
    message whether the job is another tenant's or the worker never labeled it."""
    job = (
        job_list_for_ops(user=user)
        .filter(pk=job_id, pk__in=worker.labels.filter(job_id=job_id).values("job_id"))
        .first()
    )
    if job is None:
        raise ApplicationError(BONUS_JOB_ERROR, details={"job": [BONUS_JOB_ERROR]})
    return job


def worker_earnings(*, worker: Worker, job_id: int | None = None) -> dict:
    """Totals of the worker's ledger, overall and per job."""
    entries = LedgerEntry.objects.filter(worker=worker)
    if job_id is not None:
        entries = entries.filter(job_id=job_id)
    rows = (
        entries.values("job_id", "kind")
        .annotate(n=Count("id"), total=Sum("amount"))
        .order_by("job_id", "kind")
    )
    by_job: dict[int, dict] = {}
    for row in rows:
        entry = by_job.setdefault(
            row["job_id"],
            {
                "job": row["job_id"],
                "labels": 0,
                "label_amount": Decimal("0"),
                "bonuses": 0,
                "bonus_amount": Decimal("0"),
            },
        )
        if row["kind"] == LedgerEntry.Kind.LABEL:
            entry["labels"] = row["n"]
            entry["label_amount"] = row["total"]
        else:
            entry["bonuses"] = row["n"]
            entry["bonus_amount"] = row["total"]
    jobs = list(by_job.values())
    label_total = sum((j["label_amount"] for j in jobs), Decimal("0"))
    bonus_total = sum((j["bonus_amount"] for j in jobs), Decimal("0"))
    return {
        "worker": worker.pk,
        "labels": sum(j["labels"] for j in jobs),
        "label_amount": label_total,
        "bonus_amount": bonus_total,
        "total": label_total + bonus_total,
        "jobs": jobs,
    }
