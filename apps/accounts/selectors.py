"""Reads for accounts: a user's roles and organizations, and which vendors serve which
clients (the tenancy rule)."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import QuerySet

from apps.accounts.models import Membership, Organization, Role, VendorContract

# Vendor staff: the roles that act on clients' jobs for their vendor (annotators and
# experts only ever see the tasks handed to them).
STAFF_ROLES = frozenset({Role.OPS.value, Role.QC.value})


def user_roles(*, user: AbstractBaseUser | AnonymousUser) -> frozenset[str]:
    """The set of roles the user holds in any organization (cached on the user object)."""
    if not user.is_authenticated:
        return frozenset()
    cached = getattr(user, "_concord_roles", None)
    if cached is None:
        cached = frozenset(Membership.objects.filter(user=user).values_list("role", flat=True))
        user._concord_roles = cached
    return cached


def user_client_org_ids(*, user: AbstractBaseUser) -> list[int]:
    """Ids of the client organizations in which the user is a client."""
    return list(
        Membership.objects.filter(
            user=user, role=Role.CLIENT, organization__kind=Organization.Kind.CLIENT
        ).values_list("organization_id", flat=True)
    )


def user_vendor_org_ids(
    *, user: AbstractBaseUser, roles: frozenset[str] = STAFF_ROLES
) -> QuerySet[Membership]:
    """Ids of the vendor organizations in which the user holds one of `roles` (staff: ops or
    QC, by default), as a subquery (`.values("organization_id")`) so that callers fold it
    into their own query."""
    return Membership.objects.filter(
        user=user, role__in=roles, organization__kind=Organization.Kind.VENDOR
    ).values("organization_id")


def contract_client_ids(*, vendor_ids: QuerySet | list[int]) -> QuerySet[VendorContract]:
    """Ids of the client organizations with an active contract with any of these vendors,
    as a subquery."""
    return VendorContract.objects.filter(vendor_id__in=vendor_ids, active=True).values("client_id")


def contract_vendor_ids(*, client_id: int, vendor_ids: QuerySet | list[int]) -> list[int]:
    """Those of these vendors that have an active contract with the client."""
    return list(
        VendorContract.objects.filter(
            client_id=client_id, vendor_id__in=vendor_ids, active=True
        ).values_list("vendor_id", flat=True)
    )
