"""Writes for the workforce: workers, pools, opening jobs to pools, bans, and the earnings ledger."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from rest_framework import status

from apps.accounts.authentication import credentials_changed
from apps.accounts.models import Membership, Organization, Role
from apps.accounts.selectors import contract_vendor_ids
from apps.accounts.services import membership_ensure, token_create
from apps.common import caches
from apps.common.errors import ApplicationError, ErrorCode
from apps.common.fields import PRICE_MAX
from apps.jobs.models import Job
from apps.jobs.policy import Pricing
from apps.workforce.models import LedgerEntry, Pool, Worker

CENT = Decimal("0.0001")


def _vendor_org_id_for(user: AbstractBaseUser) -> int | None:
    """The vendor organization in which the user annotates (or any vendor they belong to)."""
    memberships = list(
        Membership.objects.filter(user=user, organization__kind=Organization.Kind.VENDOR)
        .order_by("id")
        .values_list("organization_id", "role")
    )
    for org_id, role in memberships:
        if role in (Role.ANNOTATOR, Role.EXPERT):
            return org_id
    return memberships[0][0] if memberships else None


def worker_ensure(*, user: AbstractBaseUser, tier: str = Worker.Tier.CROWD) -> Worker:
    """Return the user's Worker, creating it (in the user's vendor organization) if missing.

    An existing worker keeps its tier unless it is asked to become an expert: promotion is
    what `createtoken --role expert` means, demotion is an explicit ops update.
    """
    if tier not in Worker.Tier.values:
        raise ApplicationError(f"Unknown tier {tier!r}; one of {', '.join(Worker.Tier.values)}.")
    worker, created = Worker.objects.get_or_create(
        user=user, defaults={"tier": tier, "organization_id": _vendor_org_id_for(user)}
    )
    if not created and tier == Worker.Tier.EXPERT and worker.tier != tier:
        worker.tier = tier
        worker.save(update_fields=["tier", "updated_at"])
    return worker


@transaction.atomic
def worker_create(
    *,
    organization: Organization,
    username: str,
    tier: str = Worker.Tier.CROWD,
    email: str = "",
    pay_rate: Decimal | None = None,
    skills: list[str] | None = None,
    pools: Iterable[Pool] = (),
) -> tuple[Worker, str]:
    """Create a worker of the vendor organization with its user and membership; return it
    with a new API token key (shown once: only its digest is stored)."""
    if tier not in Worker.Tier.values:
        raise ApplicationError(f"Unknown tier {tier!r}.", details={"tier": ["invalid"]})

    if get_user_model().objects.filter(username=username).exists():
        raise ApplicationError(
            f"User {username!r} already exists.",
            code=ErrorCode.CONFLICT,
            status_code=status.HTTP_409_CONFLICT,
            details={"username": ["taken"]},
        )
    role = Role.EXPERT if tier == Worker.Tier.EXPERT else Role.ANNOTATOR
    membership = membership_ensure(
        username=username,
        org_name=organization.name,
        org_kind=Organization.Kind.VENDOR,
        role=role,
        email=email,
    )
    worker = Worker.objects.create(
        user=membership.user,
        organization=organization,
        tier=tier,
        pay_rate=pay_rate if pay_rate is not None else Decimal("0.00"),
        skills=list(skills or []),
    )
    for pool in pools:
        pool.members.add(worker)
    return worker, token_create(user=membership.user, name="worker")


@transaction.atomic
def worker_update(*, worker: Worker, data: dict[str, Any]) -> Worker:
    """Update tier, pay rate and skills (status changes go through ban / suspend / unban)."""
    fields: list[str] = []
    for name in ("tier", "pay_rate", "skills"):
        if name in data:
            setattr(worker, name, data[name])
            fields.append(name)
    if "tier" in fields:
        # The role follows the tier, so permissions and the worker record never disagree.
        role = Role.EXPERT if worker.tier == Worker.Tier.EXPERT else Role.ANNOTATOR
        if worker.organization_id is not None:
            Membership.objects.get_or_create(
                user_id=worker.user_id, organization_id=worker.organization_id, role=role
            )
    if fields:
        worker.save(update_fields=[*fields, "updated_at"])
    return worker


def _worker_set_status(*, worker: Worker, status_value: str, reason: str) -> Worker:
    with transaction.atomic():
        worker = Worker.objects.select_for_update().get(pk=worker.pk)
        worker.status = status_value
        worker.status_reason = reason
        worker.save(update_fields=["status", "status_reason", "updated_at"])
        credentials_changed()
    return worker


def worker_ban(*, worker: Worker, reason: str = "") -> Worker:
    """Ban the worker: no more tasks or submits (their live leases are returned by
    apps.pipeline.crowd.worker_ban, which callers use)."""
    return _worker_set_status(worker=worker, status_value=Worker.Status.BANNED, reason=reason)


def worker_suspend(*, worker: Worker, reason: str = "") -> Worker:
    """Suspend the worker (a temporary stop): no more tasks or submits (leases: as worker_ban)."""
    return _worker_set_status(worker=worker, status_value=Worker.Status.SUSPENDED, reason=reason)


def worker_unban(*, worker: Worker) -> Worker:
    """Make a banned or suspended worker active again."""
    return _worker_set_status(worker=worker, status_value=Worker.Status.ACTIVE, reason="")


@transaction.atomic
def pool_create(
    *,
    organization: Organization,
    name: str,
    description: str = "",
    members: Iterable[Worker] = (),
) -> Pool:
    if Pool.objects.filter(organization=organization, name=name).exists():
        raise ApplicationError(
            f"A pool named {name!r} exists.",
            code=ErrorCode.CONFLICT,
            status_code=status.HTTP_409_CONFLICT,
            details={"name": ["taken"]},
        )
    pool = Pool.objects.create(organization=organization, name=name, description=description)
    _pool_check_members(pool=pool, members=members)
    pool.members.set(list(members))
    return pool


def _pool_check_members(*, pool: Pool, members: Iterable[Worker]) -> None:
    foreign = [w.pk for w in members if w.organization_id != pool.organization_id]
    if foreign:
        raise ApplicationError(
            "Workers must belong to the pool's organization.", details={"members": foreign}
        )


@transaction.atomic
def pool_update(*, pool: Pool, data: dict[str, Any]) -> Pool:
    """Rename, describe, or replace the member list of a pool."""
    fields = [name for name in ("name", "description") if name in data]
    for name in fields:
        setattr(pool, name, data[name])
    if "name" in fields and (
        Pool.objects.filter(organization_id=pool.organization_id, name=pool.name)
        .exclude(pk=pool.pk)
        .exists()
    ):
        raise ApplicationError(
            f"A pool named {pool.name!r} exists.",
            code=ErrorCode.CONFLICT,
            status_code=status.HTTP_409_CONFLICT,
        )
    if fields:
        pool.save(update_fields=fields)
    if "members" in data:
        members = list(data["members"])
        _pool_check_members(pool=pool, members=members)
        pool.members.set(members)
    return pool


def pool_job_open(*, pool: Pool, job: Job) -> bool:
    """Open the job to the pool's workers; True if it was not open yet (idempotent).

    The pool's vendor needs an active contract with the job's client (400 on `pool`
    otherwise): the contract is what lets a vendor work for a client.
    """
    if not contract_vendor_ids(client_id=job.organization_id, vendor_ids=[pool.organization_id]):
        message = "The pool's vendor has no active contract with the job's client."
        raise ApplicationError(message, details={"pool": [message]})
    through = Pool.jobs.through
    try:
        with transaction.atomic():
            _, created = through.objects.get_or_create(pool_id=pool.pk, job_id=job.pk)
    except IntegrityError:
        # A concurrent open won the race; the job is open either way.
        created = False
    _forget_open_jobs()
    return created


def _forget_open_jobs() -> None:
    """Through-table rows written directly send no signals: tell the engine's cache
    (apps.assignments.fastpath registers it)."""
    caches.invalidate("open_jobs")


def pool_job_close(*, pool: Pool, job: Job) -> bool:
    """Close the job to the pool; live leases run out normally. True if it was open."""
    deleted, _ = Pool.jobs.through.objects.filter(pool_id=pool.pk, job_id=job.pk).delete()
    _forget_open_jobs()
    return deleted > 0


def label_price(*, pricing: Pricing, tier: str) -> Decimal:
    """The job's price of one label from a worker of the given tier.

    A price stored before prices were bounded (e.g. 1e308, which no ledger entry can hold)
    is a 409 naming it, so that nothing is stored unpaid: ops correct the job's pricing."""
    key = "expert_label" if tier == Worker.Tier.EXPERT else "crowd_label"
    value = getattr(pricing, key)
    try:
        price = Decimal(str(value))
    except (InvalidOperation, TypeError) as exc:
        raise _bad_price(key, value) from exc
    if not price.is_finite() or not Decimal(0) <= price <= PRICE_MAX:
        raise _bad_price(key, value)
    return price.quantize(CENT, rounding=ROUND_HALF_UP)


def _bad_price(key: str, value: object) -> ApplicationError:
    return ApplicationError(
        f"The job's price {key}={value!r} is outside 0..{PRICE_MAX}; its pricing must be "
        "corrected before labels can be paid.",
        code=ErrorCode.INVALID_STATE,
        status_code=status.HTTP_409_CONFLICT,
        details={f"pricing.{key}": ["Out of bounds."]},
    )


def ledger_credit_label(
    *, worker_id: int, job_id: int, label_id: int, tier: str, pricing: Pricing
) -> LedgerEntry:
    """Credit one accepted label at the job's price for the tier.

    Precondition: runs inside the transaction that stores the label, so the label and its
    credit commit together; the idempotency key makes a second credit impossible.
    """
    return LedgerEntry.objects.create(
        worker_id=worker_id,
        job_id=job_id,
        label_id=label_id,
        kind=LedgerEntry.Kind.LABEL,
        amount=label_price(pricing=pricing, tier=tier),
        idempotency_key=f"label:{label_id}",
    )


def ledger_bonus(
    *, worker: Worker, job: Job, amount: Decimal, idempotency_key: str, note: str = ""
) -> tuple[LedgerEntry, bool]:
    """Credit a bonus once per idempotency key; a retry returns the first entry (created False).

    A bonus pays for work: the worker must have a label in the job (400 on `job` otherwise),
    since the bonus lands in that job's cost, which its client pays. Reusing a key for a
    different worker, job or amount is a conflict, not a retry. Precondition: the caller
    checked that its vendor may act on the job (`selectors.job_get_for_bonus`).
    """
    amount = Decimal(amount).quantize(CENT, rounding=ROUND_HALF_UP)
    if amount <= 0:
        raise ApplicationError("A bonus must be positive.", details={"amount": ["positive"]})
    if not worker.labels.filter(job_id=job.pk).exists():
        message = "The worker has no labels in this job."
        raise ApplicationError(message, details={"job": [message]})
    key = f"bonus:{idempotency_key}"
    try:
        with transaction.atomic():
            entry = LedgerEntry.objects.create(
                worker=worker,
                job=job,
                kind=LedgerEntry.Kind.BONUS,
                amount=amount,
                idempotency_key=key,
                note=note,
            )
            return entry, True
    except IntegrityError:
        entry = LedgerEntry.objects.get(idempotency_key=key)
    if (entry.worker_id, entry.job_id, entry.amount) != (worker.pk, job.pk, amount):
        raise ApplicationError(
            "This idempotency key was used for a different bonus.",
            code=ErrorCode.CONFLICT,
            status_code=status.HTTP_409_CONFLICT,
        )
    return entry, False
