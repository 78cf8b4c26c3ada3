"""Writes for accounts: organizations, memberships and API tokens."""

from __future__ import annotations

import hashlib
import secrets

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from apps.accounts.models import (
    ROLE_ORG_KIND,
    ApiToken,
    Membership,
    Organization,
    Role,
    VendorContract,
)
from apps.common.errors import ApplicationError


def token_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def token_create(*, user: AbstractBaseUser, name: str = "default") -> str:
    """Create an API token for the user and return its key (only its digest is stored)."""
    key = secrets.token_hex(20)
    ApiToken.objects.create(user=user, name=name, prefix=key[:8], digest=token_digest(key))
    return key


def token_revoke(*, token: ApiToken) -> ApiToken:
    """Revoke the token: refused from the very next request, in every process."""
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])  # post_save invalidates cached credentials
    return token


@transaction.atomic
def membership_ensure(
    *, username: str, org_name: str, org_kind: str, role: str, email: str = ""
) -> Membership:
    """Create whatever is missing of user, organization and membership; return the membership."""
    if role not in Role.values:
        raise ApplicationError(f"Unknown role {role!r}; one of {', '.join(Role.values)}.")
    if org_kind not in Organization.Kind.values:
        raise ApplicationError(f"Unknown organization kind {org_kind!r}.")
    if ROLE_ORG_KIND[Role(role)] != org_kind:
        raise ApplicationError(
            f"Role {role!r} belongs to a {ROLE_ORG_KIND[Role(role)]} organization, not {org_kind!r}."
        )
    org, created = Organization.objects.get_or_create(name=org_name, defaults={"kind": org_kind})
    if not created and org.kind != org_kind:
        raise ApplicationError(f"Organization {org_name!r} exists and is a {org.kind}.")
    user_model = get_user_model()
    user, _ = user_model.objects.get_or_create(username=username, defaults={"email": email})
    membership, _ = Membership.objects.get_or_create(user=user, organization=org, role=role)
    return membership


@transaction.atomic
def contract_set(
    *, client_name: str, vendor_name: str, active: bool = True, note: str | None = None
) -> tuple[VendorContract, bool]:
    """Create or update the contract between a client and a vendor organization (both must
    exist, with those kinds); return it and whether it was created.

    Deactivating ends the vendor staff's access to the client's jobs, except jobs still open
    to one of the vendor's pools: the caller that deactivates closes those (see the
    `contract` command).
    """
    orgs = {
        org.name: org for org in Organization.objects.filter(name__in=[client_name, vendor_name])
    }
    client, vendor = orgs.get(client_name), orgs.get(vendor_name)
    details = {}
    if client is None or client.kind != Organization.Kind.CLIENT:
        details["client"] = f"No client organization named {client_name!r}."
    if vendor is None or vendor.kind != Organization.Kind.VENDOR:
        details["vendor"] = f"No vendor organization named {vendor_name!r}."
    if details:
        raise ApplicationError(" ".join(details.values()), details=details)
    contract, created = VendorContract.objects.select_for_update().get_or_create(
        client=client, vendor=vendor, defaults={"active": active, "note": note or ""}
    )
    if not created:
        fields = []
        if contract.active != active:
            contract.active = active
            fields.append("active")
        if note is not None and contract.note != note:
            contract.note = note
            fields.append("note")
        if fields:
            contract.save(update_fields=[*fields, "updated_at"])
    return contract, created
