"""The tenancy matrix: every API endpoint and page × every role × own tenant / another client
tenant / another vendor, each cell a real request with its exact expected status.

The world (`World`): Concord Vendor serves Acme Client (an active `VendorContract`), Third
Vendor serves Initech Client, and Other Vendor has staff and workers but no contract at all.
Each served client has a running job open to its vendor's pool, labels by the vendor's
workers, an open review and leases. A cell's relation says who asks about what:

- own: Acme's client, Concord Vendor's ops / QC / annotator / expert, about Acme's job and
  Concord Vendor's workers, pools, leases and reviews;
- other_tenant: the same people, about Initech's job and Third Vendor's objects;
- other_vendor: Globex's client and Other Vendor's people, about Acme's objects.

The expected status of a cell: anonymous callers get 401 from the API and a redirect to the
login page from pages; a role the endpoint is not for gets 403; `own` gets the endpoint's
answer for that role; another tenant's object answers 404 (its id stays hidden), lists answer
200 without it. A new route that is not in MATRIX fails `test_every_route_is_in_the_matrix`.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.db import IntegrityError, transaction
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone
from rest_framework.test import APIClient

from apps.accounts.models import Organization, VendorContract
from apps.accounts.services import contract_set, membership_ensure, token_create
from apps.assignments.leasing import Task
from apps.assignments.models import Assignment
from apps.common.errors import ApplicationError
from apps.jobs.models import Item, Job
from apps.jobs.selectors import worker_pseudonym
from apps.pipeline.next import assignment_next
from apps.pipeline.submit import assignment_submit
from apps.reviews.models import Reason, Review
from apps.reviews.services import review_open
from apps.webhooks.models import WebhookDelivery, WebhookEndpoint
from apps.workforce.models import LedgerEntry, Pool, Worker
from apps.workforce.services import ledger_bonus, pool_job_open, worker_create

ROLES = ("client", "ops", "qc", "annotator", "expert", "anonymous")
RELATIONS = ("own", "other_tenant", "other_vendor")
CLASSES = ["cat", "dog", "bird"]

# --------------------------------------------------------------------------- the world


@dataclass
class Side:
    """One client's job, served by one vendor: the objects a cell may ask about."""

    client_org: Organization
    vendor_org: Organization
    job: Job
    pool: Pool
    annotator: Worker
    expert: Worker
    leases: dict[int, int]  # worker id -> a live assignment id
    gold_answers: dict[int, int]  # worker id -> their submitted assignment on the gold item
    review: Review
    labeled_item: str  # external id of an item with labels
    webhook: WebhookEndpoint
    delivery: WebhookDelivery


@dataclass
class World:
    acme: Side
    initech: Side
    users: dict[tuple[str, str], Any]  # (relation group, role) -> user
    worker_usernames: list[str]
    _tokens: dict[int, str] = field(default_factory=dict)


def _user(username: str, org: str, kind: str, role: str):
    return membership_ensure(username=username, org_name=org, org_kind=kind, role=role).user


def _side(*, client: str, vendor: str, prefix: str) -> Side:
    vendor_org, _ = Organization.objects.get_or_create(name=vendor, defaults={"kind": "vendor"})
    client_org, _ = Organization.objects.get_or_create(name=client, defaults={"kind": "client"})
    contract_set(client_name=client, vendor_name=vendor)
    job = Job.objects.create(
        organization=client_org,
        name=f"{prefix} job",
        status=Job.Status.RUNNING,
        label_schema={"kind": "single_choice", "classes": CLASSES},
        # Gold first (rate 1): each worker's first task is the gold item, then regular ones.
        policy={"min_labels": 3, "max_labels": 3, "gold_rate": 1.0, "aggregation": "mv"},
        pricing={"crowd_label": 0.05, "expert_label": 0.5},
    )
    Item.objects.bulk_create(
        [
            Item(job=job, external_id=f"it-{i}", payload={"text": f"{prefix} {i}"}, labels_needed=3)
            for i in range(4)
        ]
        + [Item(job=job, external_id="gold-0", payload={"text": "gold"}, gold_label="cat")]
    )
    annotator, _ = worker_create(organization=vendor_org, username=f"{prefix}-annotator")
    expert, _ = worker_create(
        organization=vendor_org, username=f"{prefix}-expert", tier=Worker.Tier.EXPERT
    )
    pool = Pool.objects.create(organization=vendor_org, name=f"{prefix} pool")
    pool.members.set([annotator, expert])
    pool_job_open(pool=pool, job=job)
    leases: dict[int, int] = {}
    gold_answers: dict[int, int] = {}
    labeled = ""
    for worker in (annotator, expert):
        gold = assignment_next(worker=worker, job_id=job.pk)
        assert isinstance(gold, Task), gold
        assignment_submit(worker=worker, assignment_id=gold.id, label="dog")
        gold_answers[worker.pk] = gold.id
        first = assignment_next(worker=worker, job_id=job.pk)
        assert isinstance(first, Task), first
        assignment_submit(worker=worker, assignment_id=first.id, label="cat")
        labeled = Assignment.objects.get(pk=first.id).item.external_id
        live = assignment_next(worker=worker, job_id=job.pk)
        assert isinstance(live, Task), live
        leases[worker.pk] = live.id
    # The labeled item has a delivered result (the client may dispute it).
    Item.objects.filter(job=job, external_id=labeled).update(
        state=Item.State.SETTLED,
        label="cat",
        confidence=0.9,
        source=Item.Source.CROWD,
        settled_at=timezone.now(),
        result_meta={
            "method": "posterior",
            "workers": [
                {"worker": annotator.pk, "label": "cat", "weight": 1.2},
                {"worker": expert.pk, "label": "cat", "weight": 2.5},
            ],
            "qc_user": annotator.user_id,
        },
    )
    disputed = Item.objects.get(job=job, external_id="it-3")
    review, _ = review_open(item=disputed, job=job, reason=Reason.CLIENT_DISPUTE, note="Hm.")
    LedgerEntry.objects.create(
        worker=annotator,
        job=job,
        kind=LedgerEntry.Kind.BONUS,
        amount=Decimal("1.00"),
        idempotency_key=f"{prefix}-bonus",
    )
    webhook = WebhookEndpoint.objects.create(
        organization=client_org,
        url=f"https://hooks.example.com/{prefix}",
        secret=f"{prefix}-secret",
        events=["job.completed"],
    )
    delivery = WebhookDelivery.objects.create(
        endpoint=webhook, event="job.completed", payload={"job": job.pk}
    )
    return Side(
        client_org=client_org,
        vendor_org=vendor_org,
        job=job,
        pool=pool,
        annotator=annotator,
        expert=expert,
        leases=leases,
        gold_answers=gold_answers,
        review=review,
        labeled_item=labeled,
        webhook=webhook,
        delivery=delivery,
    )


def build_world() -> World:
    acme = _side(client="Acme Client", vendor="Concord Vendor", prefix="acme")
    initech = _side(client="Initech Client", vendor="Third Vendor", prefix="initech")
    Organization.objects.get_or_create(name="Globex Client", defaults={"kind": "client"})
    contract_set(client_name="Globex Client", vendor_name="Concord Vendor")
    users = {
        ("home", "client"): _user("alice", "Acme Client", "client", "client"),
        ("home", "ops"): _user("olivia", "Concord Vendor", "vendor", "ops"),
        ("home", "qc"): _user("quinn", "Concord Vendor", "vendor", "qc"),
        ("home", "annotator"): acme.annotator.user,
        ("home", "expert"): acme.expert.user,
        ("away", "client"): _user("mallory", "Globex Client", "client", "client"),
        ("away", "ops"): _user("victor", "Other Vendor", "vendor", "ops"),
        ("away", "qc"): _user("vera", "Other Vendor", "vendor", "qc"),
    }
    other_vendor = Organization.objects.get(name="Other Vendor")
    users[("away", "annotator")] = worker_create(organization=other_vendor, username="wanda")[
        0
    ].user
    users[("away", "expert")] = worker_create(
        organization=other_vendor, username="xavier", tier=Worker.Tier.EXPERT
    )[0].user
    usernames = [w.user.username for w in Worker.objects.select_related("user")]
    return World(acme=acme, initech=initech, users=users, worker_usernames=usernames)


@dataclass
class Cell:
    """What one cell asks about: the side its objects come from, and who asks."""

    world: World
    role: str
    relation: str

    @property
    def side(self) -> Side:
        return self.world.initech if self.relation == "other_tenant" else self.world.acme

    @property
    def user(self):
        if self.role == "anonymous":
            return None
        group = "away" if self.relation == "other_vendor" else "home"
        return self.world.users[(group, self.role)]

    @property
    def actor_worker(self) -> Worker | None:
        user = self.user
        return getattr(user, "worker", None) if user is not None else None

    # Ids of the objects the endpoints take.
    def job(self) -> int:
        return self.side.job.pk

    def review(self) -> int:
        return self.side.review.pk

    def pool(self) -> int:
        return self.side.pool.pk

    def webhook(self) -> int:
        return self.side.webhook.pk

    def delivery(self) -> int:
        return self.side.delivery.pk

    def worker(self) -> int:
        return self.side.annotator.pk

    def lease(self) -> int:
        """The caller's own live lease when it has one on this side, else the annotator's."""
        leases = self.side.leases
        mine = self.actor_worker
        return (
            leases[mine.pk]
            if mine is not None and mine.pk in leases
            else leases[self.side.annotator.pk]
        )

    def gold_answer(self) -> int:
        answers = self.side.gold_answers
        mine = self.actor_worker
        if mine is not None and mine.pk in answers:
            return answers[mine.pk]
        return answers[self.side.annotator.pk]

    def own_pool(self) -> int:
        """A pool of the caller's vendor, when it has one (else the side's)."""
        user = self.user
        mine = Pool.objects.filter(organization__memberships__user=user).first() if user else None
        return (mine or self.side.pool).pk


# --------------------------------------------------------------------------- the matrix


@dataclass(frozen=True)
class Spec:
    """One endpoint and method: its path, body, and the status for each role on `own`.

    Roles missing from `own` are not the endpoint's (403). `other` overrides the answer on
    another tenant's objects (404 for object endpoints, the own answer for lists, whose
    `hidden` objects must be absent). `page` endpoints use a session and send anonymous
    callers to the login page; `public` ones answer everybody alike.
    """

    path: Callable[[Cell], str]
    own: dict[str, int]
    body: Callable[[Cell], dict] | None = None
    other: dict[str, int] = field(default_factory=dict)
    hidden: Callable[[Cell], int] | None = None  # a list endpoint: this id must not show
    # A page listing things: the side's job name shows on `own` only.
    hidden_text: Callable[[Cell], str] | None = None
    page: bool = False
    public: bool = False
    anonymous: int | None = None


READERS = {"client": 200, "ops": 200, "qc": 200}
WRITERS = {"client": 200, "ops": 200}
WORKERS_ = {"annotator": 200, "expert": 200}


def _list_ids(body: Any) -> list[int]:
    rows = body.get("results", body) if isinstance(body, dict) else body
    return [row["id"] for row in rows]


MATRIX: dict[tuple[str, str], Spec] = {
    # ---- client webhooks: a client organization's own endpoints and deliveries only
    ("webhook-list", "get"): Spec(
        lambda c: "/api/v1/webhooks/endpoints/", {"client": 200}, hidden=Cell.webhook
    ),
    ("webhook-list", "post"): Spec(
        lambda c: "/api/v1/webhooks/endpoints/",
        {"client": 201},
        body=lambda c: {"url": "https://hooks.example.com/new", "events": ["job.completed"]},
        other={"client": 201},
    ),
    ("webhook-detail", "get"): Spec(
        lambda c: f"/api/v1/webhooks/endpoints/{c.webhook()}/", {"client": 200}
    ),
    ("webhook-detail", "patch"): Spec(
        lambda c: f"/api/v1/webhooks/endpoints/{c.webhook()}/",
        {"client": 200},
        body=lambda c: {"description": "renamed"},
    ),
    ("webhook-detail", "delete"): Spec(
        lambda c: f"/api/v1/webhooks/endpoints/{c.webhook()}/", {"client": 204}
    ),
    ("webhook-ping", "post"): Spec(
        lambda c: f"/api/v1/webhooks/endpoints/{c.webhook()}/ping/", {"client": 202}
    ),
    ("webhook-deliveries", "get"): Spec(
        lambda c: "/api/v1/webhooks/deliveries/", {"client": 200}, hidden=Cell.delivery
    ),
    ("webhook-delivery", "get"): Spec(
        lambda c: f"/api/v1/webhooks/deliveries/{c.delivery()}/", {"client": 200}
    ),
    ("webhook-replay", "post"): Spec(
        lambda c: f"/api/v1/webhooks/deliveries/{c.delivery()}/replay/", {"client": 202}
    ),
    # ---- annotators
    ("assignment-next", "post"): Spec(
        lambda c: "/api/v1/assignments/next/",
        {"annotator": 200, "expert": 200},
        body=lambda c: {"job": c.job()},
        # A job not open to the caller's pools has no task for them.
        other={"annotator": 204, "expert": 204},
    ),
    # Someone else's lease is a 409 lease_not_yours, whoever's it is (the REST contract,
    # DESIGN section 4): the engine answers the same for a colleague's and another tenant's.
    ("assignment-submit", "post"): Spec(
        lambda c: f"/api/v1/assignments/{c.lease()}/submit/",
        WORKERS_,
        body=lambda c: {"label": "cat"},
        other={"annotator": 409, "expert": 409},
    ),
    ("assignment-release", "post"): Spec(
        lambda c: f"/api/v1/assignments/{c.lease()}/release/",
        WORKERS_,
        other={"annotator": 409, "expert": 409},
    ),
    ("assignment-skip", "post"): Spec(
        lambda c: f"/api/v1/assignments/{c.lease()}/skip/",
        WORKERS_,
        other={"annotator": 409, "expert": 409},
    ),
    ("assignment-dispute-gold", "post"): Spec(
        lambda c: f"/api/v1/assignments/{c.gold_answer()}/dispute-gold/",
        {"annotator": 202, "expert": 202},
        body=lambda c: {"note": "The gold answer is wrong."},
    ),
    ("feedback-list", "get"): Spec(lambda c: "/api/v1/feedback/", WORKERS_),
    ("me", "get"): Spec(
        lambda c: "/api/v1/me/",
        {"client": 200, "ops": 200, "qc": 200, "annotator": 200, "expert": 200},
    ),
    # ---- jobs
    ("job-list", "get"): Spec(lambda c: "/api/v1/jobs/", READERS, hidden=Cell.job),
    ("job-list", "post"): Spec(
        lambda c: "/api/v1/jobs/",
        {"client": 201, "ops": 201},
        body=lambda c: {
            "name": "New",
            "label_schema": {"kind": "single_choice", "classes": ["a", "b"]},
            "organization": c.side.client_org.name,
        },
        # A client may only create jobs for its own organization, ops only for the clients
        # their vendor serves: another tenant's organization is an invalid field.
        other={"client": 400, "ops": 400},
    ),
    ("job-detail", "get"): Spec(lambda c: f"/api/v1/jobs/{c.job()}/", READERS),
    ("job-detail", "patch"): Spec(
        lambda c: f"/api/v1/jobs/{c.job()}/", WRITERS, body=lambda c: {"name": "Renamed"}
    ),
    ("job-items", "get"): Spec(lambda c: f"/api/v1/jobs/{c.job()}/items/", READERS),
    ("job-items", "post"): Spec(
        lambda c: f"/api/v1/jobs/{c.job()}/items/",
        {"client": 201, "ops": 201},
        body=lambda c: [{"external_id": "new-1", "payload": {"text": "new"}}],
    ),
    # The job is running: launching it again is a state conflict.
    ("job-launch", "post"): Spec(
        lambda c: f"/api/v1/jobs/{c.job()}/launch/", {"client": 409, "ops": 409}
    ),
    ("job-pause", "post"): Spec(lambda c: f"/api/v1/jobs/{c.job()}/pause/", WRITERS),
    # The side's job is running: resuming it is a 409 (only a paused job resumes).
    ("job-resume", "post"): Spec(
        lambda c: f"/api/v1/jobs/{c.job()}/resume/", {"client": 409, "ops": 409}
    ),
    ("job-cancel", "post"): Spec(lambda c: f"/api/v1/jobs/{c.job()}/cancel/", WRITERS),
    ("job-results", "get"): Spec(lambda c: f"/api/v1/jobs/{c.job()}/results/", READERS),
    # ---- quality
    ("worker-quality", "get"): Spec(
        lambda c: f"/api/v1/workers/{c.worker()}/quality/",
        # The worker themself (the annotator), their vendor's ops and QC; not another worker.
        {"ops": 200, "qc": 200, "annotator": 200, "expert": 404},
    ),
    ("job-agreement", "get"): Spec(
        lambda c: f"/api/v1/jobs/{c.job()}/agreement/?n_boot=50", READERS
    ),
    ("job-gold", "get"): Spec(lambda c: f"/api/v1/jobs/{c.job()}/gold/", READERS),
    ("job-aggregate", "post"): Spec(
        lambda c: f"/api/v1/jobs/{c.job()}/aggregate/", {"client": 202, "ops": 202}
    ),
    # ---- reports
    ("job-metrics", "get"): Spec(lambda c: f"/api/v1/jobs/{c.job()}/metrics/", READERS),
    ("pool-metrics", "get"): Spec(lambda c: f"/api/v1/pools/{c.pool()}/metrics/", {"ops": 200}),
    # ---- reviews
    ("review-list", "get"): Spec(
        lambda c: "/api/v1/reviews/", {"ops": 200, "qc": 200}, hidden=Cell.review
    ),
    ("review-next", "post"): Spec(
        lambda c: "/api/v1/reviews/next/",
        {"qc": 200},
        body=lambda c: {"job": c.job()},
        other={"qc": 204},
    ),
    ("review-detail", "get"): Spec(
        lambda c: f"/api/v1/reviews/{c.review()}/", {"ops": 200, "qc": 200}
    ),
    ("review-claim", "post"): Spec(lambda c: f"/api/v1/reviews/{c.review()}/claim/", {"qc": 200}),
    ("review-release", "post"): Spec(
        lambda c: f"/api/v1/reviews/{c.review()}/release/", {"qc": 200}
    ),
    ("review-resolve", "post"): Spec(
        lambda c: f"/api/v1/reviews/{c.review()}/resolve/",
        {"qc": 200},
        body=lambda c: {"label": "dog"},
    ),
    ("review-reopen", "post"): Spec(lambda c: f"/api/v1/reviews/{c.review()}/reopen/", {"qc": 200}),
    ("job-item-dispute", "post"): Spec(
        lambda c: f"/api/v1/jobs/{c.job()}/items/{c.side.labeled_item}/dispute/",
        {"client": 201, "ops": 201},
        body=lambda c: {"note": "Looks wrong."},
    ),
    ("job-guideline-gaps", "get"): Spec(
        lambda c: f"/api/v1/jobs/{c.job()}/guideline-gaps/", READERS
    ),
    ("job-review-metrics", "get"): Spec(
        lambda c: f"/api/v1/jobs/{c.job()}/review-metrics/", READERS
    ),
    # ---- routing (the job's routing mode is off: retraining is a state conflict)
    ("job-models", "get"): Spec(lambda c: f"/api/v1/jobs/{c.job()}/models/", READERS),
    ("job-retrain", "post"): Spec(
        lambda c: f"/api/v1/jobs/{c.job()}/retrain/", {"client": 409, "ops": 409}
    ),
    ("item-similar", "get"): Spec(
        lambda c: f"/api/v1/jobs/{c.job()}/items/{c.side.labeled_item}/similar/",
        # No item has features: nothing to compare with.
        {"client": 400, "ops": 400, "qc": 400},
    ),
    ("job-evaluate-strategy", "post"): Spec(
        lambda c: f"/api/v1/jobs/{c.job()}/evaluate-strategy/",
        # Too few settled items with features to replay.
        {"client": 409, "ops": 409},
        body=lambda c: {},
    ),
    ("job-prelabel-effect", "get"): Spec(
        lambda c: f"/api/v1/jobs/{c.job()}/prelabel-effect/", READERS
    ),
    # ---- workforce (ops)
    ("pool-list", "get"): Spec(lambda c: "/api/v1/pools/", {"ops": 200}, hidden=Cell.pool),
    ("pool-list", "post"): Spec(
        lambda c: "/api/v1/pools/", {"ops": 201}, body=lambda c: {"name": "Fresh"}, other={}
    ),
    ("pool-detail", "get"): Spec(lambda c: f"/api/v1/pools/{c.pool()}/", {"ops": 200}),
    ("pool-detail", "patch"): Spec(
        lambda c: f"/api/v1/pools/{c.pool()}/", {"ops": 200}, body=lambda c: {"description": "x"}
    ),
    ("worker-list", "get"): Spec(lambda c: "/api/v1/workers/", {"ops": 200}, hidden=Cell.worker),
    ("worker-list", "post"): Spec(
        lambda c: "/api/v1/workers/", {"ops": 201}, body=lambda c: {"username": "newbie"}
    ),
    ("worker-detail", "get"): Spec(lambda c: f"/api/v1/workers/{c.worker()}/", {"ops": 200}),
    ("worker-detail", "patch"): Spec(
        lambda c: f"/api/v1/workers/{c.worker()}/", {"ops": 200}, body=lambda c: {"skills": ["en"]}
    ),
    ("worker-ban", "post"): Spec(lambda c: f"/api/v1/workers/{c.worker()}/ban/", {"ops": 200}),
    ("worker-suspend", "post"): Spec(
        lambda c: f"/api/v1/workers/{c.worker()}/suspend/", {"ops": 200}
    ),
    ("worker-unban", "post"): Spec(lambda c: f"/api/v1/workers/{c.worker()}/unban/", {"ops": 200}),
    ("worker-earnings", "get"): Spec(
        lambda c: f"/api/v1/workers/{c.worker()}/earnings/",
        {"ops": 200, "annotator": 200, "expert": 404},
    ),
    ("worker-bonuses", "post"): Spec(
        lambda c: f"/api/v1/workers/{c.worker()}/bonuses/",
        {"ops": 201},
        body=lambda c: {"job": c.job(), "amount": "1.50", "idempotency_key": "matrix"},
    ),
    ("job-pools", "get"): Spec(lambda c: f"/api/v1/jobs/{c.job()}/pools/", {"ops": 200}),
    ("job-pools", "post"): Spec(
        lambda c: f"/api/v1/jobs/{c.job()}/pools/",
        # Already open to the vendor's pool: idempotent.
        {"ops": 200},
        body=lambda c: {"pool": c.own_pool()},
    ),
    # ---- pages
    ("home", "get"): Spec(
        lambda c: "/",
        {"client": 302, "ops": 302, "qc": 302, "annotator": 302, "expert": 302},
        page=True,
    ),
    ("login", "get"): Spec(lambda c: "/login/", {}, page=True, public=True, anonymous=200),
    ("login", "post"): Spec(
        lambda c: "/login/",
        {},
        body=lambda c: {"token": "not-a-token"},
        page=True,
        public=True,
        anonymous=400,
    ),
    ("logout", "get"): Spec(lambda c: "/logout/", {}, page=True, public=True, anonymous=302),
    ("dashboard", "get"): Spec(
        lambda c: "/dashboard/", READERS, page=True, hidden_text=lambda c: c.side.job.name
    ),
    ("job-dashboard", "get"): Spec(lambda c: f"/dashboard/jobs/{c.job()}/", READERS, page=True),
    ("metrics-overview", "get"): Spec(lambda c: "/api/v1/metrics/", READERS, hidden=Cell.job),
    # Client pages: a client creates a job (a draft of their own organization); writers
    # (client, ops) upload items and launch / pause / resume / cancel from the job page.
    ("job-new", "get"): Spec(
        lambda c: "/dashboard/jobs/new/", {"client": 200}, page=True, other={"client": 200}
    ),
    ("job-new", "post"): Spec(
        lambda c: "/dashboard/jobs/new/",
        {"client": 302},
        body=lambda c: {"name": "From the page", "classes": "cat, dog"},
        page=True,
        other={"client": 302},
    ),
    # No file: the job page says so (400); another tenant's job is a 404 first.
    ("job-upload", "post"): Spec(
        lambda c: f"/dashboard/jobs/{c.job()}/upload/",
        {"client": 400, "ops": 400},
        body=lambda c: {},
        page=True,
    ),
    ("job-lifecycle", "post"): Spec(
        lambda c: f"/dashboard/jobs/{c.job()}/lifecycle/",
        {"client": 302, "ops": 302},
        body=lambda c: {"action": "pause"},
        page=True,
    ),
    # Ops pages: the ops user's own vendor's pools and workers only.
    ("ops-pool", "get"): Spec(lambda c: f"/dashboard/pools/{c.pool()}/", {"ops": 200}, page=True),
    ("ops-worker", "get"): Spec(
        lambda c: f"/dashboard/workers/{c.worker()}/", {"ops": 200}, page=True
    ),
    ("ops-worker-action", "post"): Spec(
        lambda c: f"/dashboard/workers/{c.worker()}/actions/",
        {"ops": 302},
        body=lambda c: {"action": "suspend", "reason": "Checking."},
        page=True,
    ),
    ("qc-queue", "get"): Spec(
        lambda c: "/qc/", {"qc": 200}, page=True, hidden_text=lambda c: c.side.job.name
    ),
    # Claims the side's review and goes there; on another tenant's job there is nothing to
    # claim, and the page goes back to the (empty) queue.
    ("qc-next", "post"): Spec(
        lambda c: "/qc/next/",
        {"qc": 302},
        body=lambda c: {"job": c.job()},
        page=True,
        other={"qc": 302},
    ),
    ("qc-review", "get"): Spec(lambda c: f"/qc/reviews/{c.review()}/", {"qc": 200}, page=True),
    # The decision form posts to the review page; it decides and goes to the next review.
    ("qc-review", "post"): Spec(
        lambda c: f"/qc/reviews/{c.review()}/",
        {"qc": 302},
        body=lambda c: {"label": "dog"},
        page=True,
    ),
    ("qc-resolve", "post"): Spec(
        lambda c: f"/qc/reviews/{c.review()}/resolve/",
        {"qc": 302},
        body=lambda c: {"label": "dog"},
        page=True,
    ),
    # A GET (a sign-in that came back here) goes to the review page: never a 405.
    ("qc-resolve", "get"): Spec(
        lambda c: f"/qc/reviews/{c.review()}/resolve/", {"qc": 302}, page=True
    ),
    # The side's review is open: reopening an open review is a no-op that goes back to it.
    ("qc-reopen", "post"): Spec(
        lambda c: f"/qc/reviews/{c.review()}/reopen/", {"qc": 302}, body=lambda c: {}, page=True
    ),
    ("qc-skip", "post"): Spec(
        lambda c: f"/qc/reviews/{c.review()}/skip/",
        {"qc": 302},
        body=lambda c: {},
        page=True,
        # Skipping releases a claim the caller holds (none on another tenant's review) and
        # moves on to the next review of the caller's own queue.
        other={"qc": 302},
    ),
    # ---- the annotator page (annotators and experts; a lease is the caller's own)
    ("annotate", "get"): Spec(lambda c: "/annotate/", WORKERS_, page=True, other=WORKERS_),
    # Leases the caller's next task (or says why there is none): a redirect either way.
    ("annotate-next", "post"): Spec(
        lambda c: "/annotate/next/",
        {"annotator": 302, "expert": 302},
        body=lambda c: {},
        page=True,
        other={"annotator": 302, "expert": 302},
    ),
    ("annotate-task", "get"): Spec(lambda c: f"/annotate/tasks/{c.lease()}/", WORKERS_, page=True),
    ("annotate-submit", "post"): Spec(
        lambda c: f"/annotate/tasks/{c.lease()}/submit/",
        {"annotator": 302, "expert": 302},
        body=lambda c: {"label": "cat"},
        page=True,
    ),
    ("annotate-skip", "post"): Spec(
        lambda c: f"/annotate/tasks/{c.lease()}/skip/",
        {"annotator": 302, "expert": 302},
        body=lambda c: {},
        page=True,
    ),
    ("annotate-release", "post"): Spec(
        lambda c: f"/annotate/tasks/{c.lease()}/release/",
        {"annotator": 302, "expert": 302},
        body=lambda c: {},
        page=True,
    ),
    # ---- public
    ("healthz", "get"): Spec(lambda c: "/healthz", {}, public=True, anonymous=200),
    ("schema", "get"): Spec(lambda c: "/api/schema/", {}, public=True, anonymous=200),
    ("docs", "get"): Spec(lambda c: "/api/docs/", {}, public=True, anonymous=200),
}

# Routes the matrix leaves to others: Django's admin has its own staff login and tests.
NOT_IN_MATRIX = {"admin", "admin-login"}

# Answers that are the same whatever the caller's tenant: who am I, my own feedback, and
# creating an object in the caller's own vendor.
SAME_FOR_EVERY_TENANT = {
    ("home", "get"),
    ("me", "get"),
    ("feedback-list", "get"),
    ("pool-list", "post"),
    ("worker-list", "post"),
}


def expected_status(spec: Spec, key: tuple[str, str], role: str, relation: str) -> int:
    if spec.public:
        return spec.anonymous  # type: ignore[return-value]
    if role == "anonymous":
        return 302 if spec.page else 401
    if role not in spec.own:
        return 403
    if relation == "own" or key in SAME_FOR_EVERY_TENANT:
        return spec.own[role]
    if role in spec.other:
        return spec.other[role]
    if spec.hidden is not None or spec.hidden_text is not None:
        return spec.own[role]
    return 404


# --------------------------------------------------------------------------- the URL walk


def _walk(patterns, prefix: str = "") -> list[tuple[str, str, Any]]:
    found = []
    for entry in patterns:
        if isinstance(entry, URLResolver):
            if entry.namespace == "admin":
                found.append(("admin", prefix + str(entry.pattern), None))
                continue
            found += _walk(entry.url_patterns, prefix + str(entry.pattern))
        elif isinstance(entry, URLPattern):
            found.append((entry.name, prefix + str(entry.pattern), entry.callback))
    return found


def _methods(callback: Any) -> set[str] | None:
    """The HTTP methods a class-based view implements (None for a function view)."""
    cls = getattr(callback, "cls", None) or getattr(callback, "view_class", None)
    if cls is None:
        return None
    return {m for m in ("get", "post", "put", "patch", "delete") if hasattr(cls, m)}


def test_every_route_is_in_the_matrix():
    routes = _walk(get_resolver().url_patterns)
    names = {name for name, _, _ in routes}
    unnamed = [route for name, route, _ in routes if not name]
    assert not unnamed, f"routes without a name cannot be in the matrix: {unnamed}"
    in_matrix = {name for name, _ in MATRIX}
    assert names - NOT_IN_MATRIX - in_matrix == set(), "routes missing from the matrix"
    assert in_matrix - names == set(), "matrix rows for routes that do not exist"
    for name, route, callback in routes:
        methods = _methods(callback)
        if methods is None:
            continue
        declared = {method for n, method in MATRIX if n == name}
        assert methods == declared, f"{route}: implements {methods}, matrix has {declared}"


# --------------------------------------------------------------------------- the cells


def _request(cell: Cell, key: tuple[str, str]):
    spec = MATRIX[key]
    method = key[1]
    path = spec.path(cell)
    body = spec.body(cell) if spec.body else None
    if spec.page:
        http = Client()
        if cell.user is not None:
            http.force_login(cell.user)
        if method == "get":
            return http.get(path)
        return http.post(path, body or {})
    api = APIClient()
    if cell.user is not None:
        api.credentials(HTTP_AUTHORIZATION=f"Token {token_create(user=cell.user)}")
    if method == "get":
        return api.get(path)
    return getattr(api, method)(path, body, format="json")


def _content(response) -> bytes:
    if getattr(response, "streaming", False):
        return b"".join(response.streaming_content)
    return response.content


def _assert_no_worker_identity(world: World, content: bytes) -> None:
    """Nothing in a client's answer names a worker, their pay or their quality."""
    text = content.decode(errors="replace")
    for username in world.worker_usernames:
        assert username not in text, f"worker {username} shown to a client"
    for key in ('"worker_id"', '"earnings"', '"qc_user"'):
        assert key not in text, f"{key} shown to a client"
    worker_ids = set(Worker.objects.values_list("pk", flat=True))
    try:
        body = json.loads(content)
    except ValueError:
        return
    rows = body if isinstance(body, list) else []
    for row in rows:
        meta = row.get("result_meta") or {} if isinstance(row, dict) else {}
        for entry in meta.get("workers", []):
            assert entry["worker"] not in worker_ids
            assert str(entry["worker"]).startswith("w-")


# Anonymous callers and public routes have no tenant: one relation is the whole row.
CELLS = [
    pytest.param(key, role, relation, id=f"{key[1]}:{key[0]}:{role}:{relation}")
    for key, spec in MATRIX.items()
    for role in ROLES
    for relation in RELATIONS
    if not (spec.public or role == "anonymous") or relation == "own"
]


@pytest.mark.django_db
class TestWorld:
    """The matrix, and two regressions that read the same world: client metrics and
    results that named workers, and a bonus on a job the worker never labeled."""

    @pytest.fixture(scope="class")
    def world(self, django_db_setup, django_db_blocker):
        """The world, built once for the class in a transaction that is rolled back at its
        end (tests outside the class never see it). Each test runs in a savepoint inside
        it (pytest-django's own per-test atomic), so whatever a cell changes is gone before
        the next."""
        with django_db_blocker.unblock(), transaction.atomic():
            yield build_world()
            transaction.set_rollback(True)

    @pytest.mark.parametrize(("key", "role", "relation"), CELLS)
    def test_cell(self, world: World, key: tuple[str, str], role: str, relation: str):
        spec = MATRIX[key]
        cell = Cell(world=world, role=role, relation=relation)

        response = _request(cell, key)

        expected = expected_status(spec, key, role, relation)
        assert response.status_code == expected, _content(response)[:500]
        if spec.hidden is not None and expected == 200:
            # Lists show the caller's own tenant's object and never another tenant's.
            assert (spec.hidden(cell) in _list_ids(response.json())) == (relation == "own")
        if spec.hidden_text is not None and expected == 200:
            shown = spec.hidden_text(cell).encode() in _content(response)
            assert shown == (relation == "own")
        if key == ("qc-next", "post") and role == "qc":
            claimed = response.url.startswith(f"/qc/reviews/{cell.review()}/")
            assert claimed == (relation == "own"), response.url
        if role == "client" and 200 <= response.status_code < 300:
            _assert_no_worker_identity(world, _content(response))

    def test_client_metrics_and_results_name_no_worker(self, world: World):
        client = Cell(world=world, role="client", relation="own")
        ops = Cell(world=world, role="ops", relation="own")

        metrics = _request(client, ("job-metrics", "get")).json()
        results = json.loads(_content(_request(client, ("job-results", "get"))))
        ops_metrics = _request(ops, ("job-metrics", "get")).json()
        ops_results = json.loads(_content(_request(ops, ("job-results", "get"))))

        assert "workers" not in metrics
        assert metrics["worker_count"] == 2
        _assert_no_worker_identity(world, json.dumps([metrics, *results]).encode())
        assert {w["username"] for w in ops_metrics["workers"]} == {"acme-annotator", "acme-expert"}
        settled = next(row for row in results if row["result_meta"])
        ops_settled = next(row for row in ops_results if row["result_meta"])
        names = [w["worker"] for w in settled["result_meta"]["workers"]]
        assert names == [
            worker_pseudonym(job_id=world.acme.job.pk, worker_id=w["worker"])
            for w in ops_settled["result_meta"]["workers"]
        ]
        assert [w["worker"] for w in ops_settled["result_meta"]["workers"]] == [
            world.acme.annotator.pk,
            world.acme.expert.pk,
        ]
        assert "qc_user" in ops_settled["result_meta"]
        # Pseudonyms are stable within a job and unlinkable across jobs.
        assert worker_pseudonym(job_id=1, worker_id=7) == worker_pseudonym(job_id=1, worker_id=7)
        assert worker_pseudonym(job_id=1, worker_id=7) != worker_pseudonym(job_id=2, worker_id=7)

    def test_a_bonus_needs_a_label_of_the_worker_in_a_job_of_the_vendor(self, world: World):
        ops = Cell(world=world, role="ops", relation="own")
        acme = world.acme
        fresh = Job.objects.create(
            organization=acme.client_org, name="Untouched", label_schema={"classes": CLASSES}
        )
        api = APIClient()
        api.credentials(HTTP_AUTHORIZATION=f"Token {token_create(user=ops.user)}")

        def bonus(job_id: int, key: str):
            return api.post(
                f"/api/v1/workers/{acme.annotator.pk}/bonuses/",
                {"job": job_id, "amount": "5.00", "idempotency_key": key},
                format="json",
            )

        never_labeled = bonus(fresh.pk, "k1")
        other_tenant = bonus(world.initech.job.pk, "k2")
        labeled = bonus(acme.job.pk, "k3")

        assert never_labeled.status_code == other_tenant.status_code == 400
        assert "job" in never_labeled.json()["error"]["details"]
        assert never_labeled.json() == other_tenant.json()  # nothing told about other tenants
        assert labeled.status_code == 201
        assert not LedgerEntry.objects.filter(job=fresh, kind="bonus").exists()


# --------------------------------------------------------------------------- regressions
# Each of these failed before the tenancy rule: every ops / QC user saw every job.


def _client_job(client_actor, name: str = "Secret") -> Job:
    response = client_actor.client.post(
        "/api/v1/jobs/",
        {"name": name, "label_schema": {"kind": "single_choice", "classes": CLASSES}},
        format="json",
    )
    assert response.status_code == 201, response.content
    return Job.objects.get(pk=response.json()["id"])


def test_a_second_vendor_cannot_read_change_upload_pause_or_cancel_a_client_job(
    client_actor, other_vendor_ops_actor
):
    job = _client_job(client_actor)
    upload = [{"external_id": "a", "payload": {"text": "a"}}]
    client_actor.client.post(f"/api/v1/jobs/{job.pk}/items/", upload, format="json")
    assert client_actor.client.post(f"/api/v1/jobs/{job.pk}/launch/").status_code == 200
    api = other_vendor_ops_actor.client
    base = f"/api/v1/jobs/{job.pk}"

    answers = [
        api.get(f"{base}/").status_code,
        api.patch(f"{base}/", {"name": "Mine now"}, format="json").status_code,
        api.post(
            f"{base}/items/", [{"external_id": "x", "payload": {}}], format="json"
        ).status_code,
        api.post(f"{base}/pause/").status_code,
        api.post(f"{base}/cancel/").status_code,
        api.get(f"{base}/results/").status_code,
        api.get(f"{base}/metrics/").status_code,
        api.get(f"{base}/pools/").status_code,
    ]

    assert answers == [404] * 8
    assert job.pk not in _list_ids(api.get("/api/v1/jobs/").json())
    job.refresh_from_db()
    assert (job.name, job.status, job.items.count()) == ("Secret", Job.Status.RUNNING, 1)


def test_a_second_vendor_qc_sees_none_of_a_clients_reviews(
    client_actor, qc_actor, other_vendor_qc_actor
):
    world_job = _client_job(client_actor)
    item = Item.objects.create(job=world_job, external_id="a", payload={})
    review, _ = review_open(item=item, job=world_job, reason=Reason.CLIENT_DISPUTE)
    api = other_vendor_qc_actor.client

    assert review.pk not in _list_ids(api.get("/api/v1/reviews/").json())
    assert api.get(f"/api/v1/reviews/{review.pk}/").status_code == 404
    assert api.post(f"/api/v1/reviews/{review.pk}/claim/").status_code == 404
    assert api.post(f"/api/v1/reviews/{review.pk}/resolve/", {"label": "cat"}).status_code == 404
    assert api.post("/api/v1/reviews/next/", {}, format="json").status_code == 204
    # The contracted vendor's QC does see it.
    assert review.pk in _list_ids(qc_actor.client.get("/api/v1/reviews/").json())


def test_ledger_bonus_refuses_a_job_the_worker_never_labeled(client_actor):
    job = _client_job(client_actor)
    worker, _ = worker_create(
        organization=Organization.objects.get(name="Concord Vendor"), username="idle"
    )
    with pytest.raises(ApplicationError) as caught:
        ledger_bonus(worker=worker, job=job, amount=Decimal("1"), idempotency_key="x")
    assert "job" in caught.value.details


def test_ops_create_jobs_only_for_the_clients_their_vendor_serves(
    ops_actor, other_vendor_ops_actor, make_actor
):
    make_actor("client", org="Initech Client")
    body = {"name": "J", "label_schema": {"kind": "single_choice", "classes": ["a", "b"]}}

    served = ops_actor.client.post(
        "/api/v1/jobs/", {**body, "organization": "Acme Client"}, format="json"
    )
    unserved = ops_actor.client.post(
        "/api/v1/jobs/", {**body, "organization": "Initech Client"}, format="json"
    )
    stranger = other_vendor_ops_actor.client.post(
        "/api/v1/jobs/", {**body, "organization": "Acme Client"}, format="json"
    )

    assert served.status_code == 201
    assert unserved.status_code == stranger.status_code == 400
    assert unserved.json()["error"]["details"] == {"organization": "unknown"}


def test_ending_a_contract_ends_access_and_closes_the_vendors_pools(
    client_actor, ops_actor, qc_actor
):
    job = _client_job(client_actor)
    vendor = Organization.objects.get(name="Concord Vendor")
    pool = Pool.objects.create(organization=vendor, name="P")
    pool_job_open(pool=pool, job=job)
    spare = Pool.objects.create(organization=vendor, name="Spare")
    contract_set(client_name="Acme Client", vendor_name="Concord Vendor", active=False)

    # Still open to the vendor's pool: ops keep sight of work their workers may still do,
    # but cannot open it to another pool without a contract.
    assert ops_actor.client.get(f"/api/v1/jobs/{job.pk}/").status_code == 200
    reopen = ops_actor.client.post(f"/api/v1/jobs/{job.pk}/pools/", {"pool": spare.pk})
    assert reopen.status_code == 400
    assert "pool" in reopen.json()["error"]["details"]

    out = io.StringIO()
    call_command(
        "contract",
        "--client",
        "Acme Client",
        "--vendor",
        "Concord Vendor",
        "--deactivate",
        stdout=out,
    )

    assert "inactive" in out.getvalue()
    assert not pool.jobs.filter(pk=job.pk).exists()
    assert ops_actor.client.get(f"/api/v1/jobs/{job.pk}/").status_code == 404
    assert qc_actor.client.get(f"/api/v1/jobs/{job.pk}/").status_code == 404
    assert client_actor.client.get(f"/api/v1/jobs/{job.pk}/").status_code == 200

    call_command("contract", "--client", "Acme Client", "--vendor", "Concord Vendor", stdout=out)
    assert ops_actor.client.get(f"/api/v1/jobs/{job.pk}/").status_code == 200


def test_a_vendor_sees_only_its_own_workers_in_a_shared_jobs_metrics(
    client_actor, ops_actor, qc_actor
):
    """Two vendors on one client's job: each one's ops see their own workers' rows only, and
    its QC see the other vendor's workers by pseudonym."""
    world_job = _client_job(client_actor)
    Organization.objects.get_or_create(name="Other Vendor", defaults={"kind": "vendor"})
    contract_set(client_name="Acme Client", vendor_name="Other Vendor")
    ours, _ = worker_create(
        organization=Organization.objects.get(name="Concord Vendor"), username="ours"
    )
    theirs, _ = worker_create(
        organization=Organization.objects.get(name="Other Vendor"), username="theirs"
    )
    Item.objects.bulk_create(
        [Item(job=world_job, external_id=f"i{i}", payload={}, labels_needed=2) for i in range(2)]
    )
    world_job.status = Job.Status.RUNNING
    world_job.save(update_fields=["status"])
    for worker in (ours, theirs):
        pool = Pool.objects.create(organization=worker.organization, name=f"p-{worker.pk}")
        pool.members.add(worker)
        pool_job_open(pool=pool, job=world_job)
        task = assignment_next(worker=worker, job_id=world_job.pk)
        assignment_submit(worker=worker, assignment_id=task.id, label="cat")

    shared = Item.objects.get(
        job=world_job, labels__worker=ours, pk__in=theirs.labels.values("item")
    )
    review, _ = review_open(item=shared, job=world_job, reason=Reason.CLIENT_DISPUTE)

    body = ops_actor.client.get(f"/api/v1/jobs/{world_job.pk}/metrics/").json()
    detail = qc_actor.client.get(f"/api/v1/reviews/{review.pk}/").json()

    assert body["worker_count"] == 2
    assert [w["username"] for w in body["workers"]] == ["ours"]
    assert sorted(row["username"] for row in detail["labels"]) == sorted(
        ["ours", worker_pseudonym(job_id=world_job.pk, worker_id=theirs.pk)]
    )


def test_vendor_contract_rules(db):
    client = Organization.objects.create(name="C", kind="client")
    vendor = Organization.objects.create(name="V", kind="vendor")
    VendorContract.objects.create(client=client, vendor=vendor)

    with pytest.raises(ValidationError):
        VendorContract(client=vendor, vendor=client).full_clean()
    with pytest.raises(IntegrityError), transaction.atomic():
        VendorContract.objects.create(client=client, vendor=vendor)
    with pytest.raises(IntegrityError), transaction.atomic():
        VendorContract.objects.create(client=client, vendor=client)


def test_a_role_acts_only_through_its_own_memberships(client_actor, make_actor):
    """QC of a vendor without a contract who is also a client of Acme reads Acme's jobs as
    their client, but cannot decide Acme's reviews: QC work goes through QC memberships."""
    job = _client_job(client_actor)
    item = Item.objects.create(job=job, external_id="a", payload={})
    review, _ = review_open(item=item, job=job, reason=Reason.CLIENT_DISPUTE)
    both = make_actor("qc", org="Other Vendor", username="janus")
    membership_ensure(username="janus", org_name="Acme Client", org_kind="client", role="client")

    assert both.client.get(f"/api/v1/jobs/{job.pk}/").status_code == 200
    assert review.pk not in _list_ids(both.client.get("/api/v1/reviews/").json())
    assert both.client.get(f"/api/v1/reviews/{review.pk}/").status_code == 404
    assert both.client.post(f"/api/v1/reviews/{review.pk}/claim/").status_code == 404
    resolved = both.client.post(f"/api/v1/reviews/{review.pk}/resolve/", {"label": "cat"})
    assert resolved.status_code == 404
    assert both.client.post("/api/v1/reviews/next/", {}, format="json").status_code == 204


def test_qc_at_one_vendor_and_ops_at_another_cannot_change_the_first_vendors_jobs(
    client_actor, make_actor
):
    job = _client_job(client_actor)
    both = make_actor("qc", username="dual")  # QC at Concord Vendor, which serves Acme
    membership_ensure(username="dual", org_name="Other Vendor", org_kind="vendor", role="ops")
    base = f"/api/v1/jobs/{job.pk}"

    assert both.client.get(f"{base}/").status_code == 200  # reading, as Concord's QC
    assert both.client.patch(f"{base}/", {"name": "x"}, format="json").status_code == 404
    assert both.client.post(f"{base}/cancel/").status_code == 404
    assert both.client.post(f"{base}/aggregate/").status_code == 404
    assert both.client.post(f"{base}/retrain/").status_code == 404
    job.refresh_from_db()
    assert (job.name, job.status) == ("Secret", Job.Status.DRAFT)
