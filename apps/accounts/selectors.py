"""Reads for accounts: a user's roles and organizations."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

from apps.accounts.models import Membership, Organization


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
            user=user, role="client", organization__kind=Organization.Kind.CLIENT
        ).values_list("organization_id", flat=True)
    )
