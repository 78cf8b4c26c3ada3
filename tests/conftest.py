"""Shared fixtures: users with roles and their token-authenticated API clients."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient

from apps.accounts.models import Organization
from apps.accounts.services import contract_set, membership_ensure, token_create
from apps.common.caches import REGISTRY, clear_all_local
from apps.quality.aggregation import local_caches_clear
from apps.workforce.services import worker_ensure
from workers.celery import app

VENDOR = "Concord Vendor"
# The default tenants: Concord Vendor serves both client organizations (an active contract
# each); "Other Vendor" has staff of its own and no contract with anyone.
CLIENT_ORGS = ("Acme Client", "Globex Client")
OTHER_VENDOR = "Other Vendor"


def ensure_default_contracts() -> None:
    """Concord Vendor under contract with Acme Client and Globex Client (idempotent)."""

    Organization.objects.get_or_create(name=VENDOR, defaults={"kind": "vendor"})
    for name in CLIENT_ORGS:
        Organization.objects.get_or_create(name=name, defaults={"kind": "client"})
        contract_set(client_name=name, vendor_name=VENDOR)


@dataclass
class Actor:
    """A user with one role, a raw API token and a client that sends it."""

    user: object
    token: str
    client: APIClient
    org_name: str
    role: str


@pytest.fixture
def make_actor(db) -> Callable[..., Actor]:
    counter = {"n": 0}

    def make(role: str, *, org: str | None = None, username: str | None = None) -> Actor:
        counter["n"] += 1
        kind = "client" if role == "client" else "vendor"
        org_name = org or ("Acme Client" if kind == "client" else VENDOR)
        name = username or f"{role}{counter['n']}"
        if not counter.get("contracts"):
            ensure_default_contracts()
            counter["contracts"] = 1
        membership = membership_ensure(username=name, org_name=org_name, org_kind=kind, role=role)
        if role in ("annotator", "expert"):
            worker_ensure(user=membership.user, tier="expert" if role == "expert" else "crowd")
        token = token_create(user=membership.user)
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
        return Actor(user=membership.user, token=token, client=client, org_name=org_name, role=role)

    return make


@pytest.fixture
def client_actor(make_actor) -> Actor:
    return make_actor("client", username="alice")


@pytest.fixture
def other_client_actor(make_actor) -> Actor:
    return make_actor("client", org="Globex Client", username="mallory")


@pytest.fixture
def ops_actor(make_actor) -> Actor:
    return make_actor("ops", username="olivia")


@pytest.fixture
def qc_actor(make_actor) -> Actor:
    return make_actor("qc", username="quinn")


@pytest.fixture
def other_vendor_ops_actor(make_actor) -> Actor:
    """Ops of a second vendor that has no contract with any client."""
    return make_actor("ops", org=OTHER_VENDOR, username="victor")


@pytest.fixture
def other_vendor_qc_actor(make_actor) -> Actor:
    """QC of a second vendor that has no contract with any client."""
    return make_actor("qc", org=OTHER_VENDOR, username="vera")


@pytest.fixture(autouse=True, scope="session")
def _celery_eager():
    """Tasks run in-process in tests; the real-worker test switches this off for itself."""

    app.conf.task_always_eager = True
    app.conf.task_eager_propagates = True
    return


@pytest.fixture(autouse=True)
def _fresh_cache():
    """Cached per-job values (class priors, counters, locks) must not leak between tests:
    rolled-back tests reuse ids on SQLite."""

    def forget() -> None:
        # The per-process caches' versions outlive the flush, as a deploy's outlive a test:
        # a vanished version reads as "everything may have changed" to every listener.
        versions = cache.get_many([c.version_key for c in REGISTRY.values()])
        cache.clear()
        cache.set_many(versions, timeout=None)
        local_caches_clear()
        clear_all_local()

    forget()
    yield
    forget()
