"""seeddemo: a first run that shows something — users with tokens, a live demo job, a crowd.

Idempotent: users, organizations and the demo job are created only when missing; every run
prints fresh API tokens (tokens are stored hashed, so old ones cannot be shown again) and, if
the demo job still has open items, lets the simulated crowd label for a few more seconds.
"""

from __future__ import annotations

import io
import json

import numpy as np
from django.core.management import call_command
from django.core.management.base import BaseCommand

from apps.accounts.models import Membership, Organization, Role
from apps.accounts.services import contract_set, membership_ensure, token_create
from apps.jobs.models import Item, Job
from apps.jobs.services import item_ingest, job_create, job_launch, job_update
from apps.reports.rollups import rollup_run
from apps.reviews.models import Reason, Review
from apps.reviews.services import review_client_dispute
from apps.routing.services import job_retrain
from apps.workforce.models import Pool
from apps.workforce.services import pool_job_open, worker_ensure

CLIENT_ORG = "Demo Client"
VENDOR_ORG = "Concord Vendor"
JOB_NAME = "Demo: animal photos"
CLASSES = ["cat", "dog", "bird"]
USERS = [
    ("demo-client", CLIENT_ORG, Organization.Kind.CLIENT, Role.CLIENT),
    ("demo-ops", VENDOR_ORG, Organization.Kind.VENDOR, Role.OPS),
    ("demo-qc", VENDOR_ORG, Organization.Kind.VENDOR, Role.QC),
    ("demo-annotator", VENDOR_ORG, Organization.Kind.VENDOR, Role.ANNOTATOR),
    ("demo-expert", VENDOR_ORG, Organization.Kind.VENDOR, Role.EXPERT),
]


# What the demo's "photos" show, in words (a caption each, so the demo needs no network and
# no image files): the main subject, sometimes another animal in the background.
SUBJECTS = {
    "cat": [
        "a tabby curled up on a windowsill, whiskers twitching",
        "a kitten chasing a ball of wool across the carpet",
        "a grey animal with pointed ears purring on a lap",
        "a black cat stretching on a garden wall",
    ],
    "dog": [
        "a retriever fetching a stick from the lake",
        "a puppy chewing a slipper, tail wagging",
        "a sheepdog herding a flock across a field",
        "a small terrier barking at the postman",
    ],
    "bird": [
        "a robin perched on a snowy branch",
        "a parrot with bright green feathers on a swing",
        "a gull gliding over the harbour",
        "a sparrow pecking crumbs on a café table",
    ],
}
BACKGROUND = {"cat": "a cat dozing", "dog": "a dog sniffing", "bird": "a bird on a wire"}


def demo_caption(true_class: int, rng: np.random.Generator) -> str:
    """The demo item's caption: the true animal as the main subject, a third of the time
    with another animal in the background (the instructions say: the main subject)."""
    name = CLASSES[true_class]
    text = SUBJECTS[name][int(rng.integers(0, len(SUBJECTS[name])))]
    if rng.random() < 0.35:
        other = CLASSES[int(rng.integers(0, len(CLASSES)))]
        text += f"; in the background, {BACKGROUND[other]}"
    return text[0].upper() + text[1:] + "."


def demo_rows(n_items: int, n_gold: int, seed: int) -> tuple[list[dict], dict[str, str]]:
    """Items with 8-dimensional features clustered by class, a few of them gold, shuffled in
    among the others; and each item's true class by external id, for the simulated crowd.

    The truth stays out of the payload and the ids say nothing about gold: annotators are
    shown the payload, and nothing they see may tell a gold item from another.
    """
    rng = np.random.default_rng(seed)
    centers = rng.normal(0.0, 1.6, size=(len(CLASSES), 8))
    truth = rng.integers(0, len(CLASSES), size=n_items + n_gold)
    features = centers[truth] + rng.normal(0.0, 1.0, size=(len(truth), 8))
    gold = set(rng.choice(n_items + n_gold, size=n_gold, replace=False).tolist())
    rows = []
    for i, (t, x) in enumerate(zip(truth, features, strict=True)):
        row: dict = {
            "external_id": f"photo-{i:04d}",
            "payload": {"text": demo_caption(int(t), rng)},
            "features": [round(float(v), 4) for v in x],
        }
        if i in gold:
            row["gold_label"] = CLASSES[t]
        rows.append(row)
    return rows, {f"photo-{i:04d}": CLASSES[t] for i, t in enumerate(truth)}


class Command(BaseCommand):
    help = "Seed demo users (printing their API tokens) and a live demo job labeled by a crowd."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--items", type=int, default=300)
        parser.add_argument("--gold", type=int, default=20)
        parser.add_argument("--workers", type=int, default=12)
        parser.add_argument(
            "--seconds", type=float, default=5.0, help="How long the simulated crowd labels."
        )
        parser.add_argument("--seed", type=int, default=0)

    def handle(self, *args, **options) -> None:
        tokens: dict[str, str] = {}
        workers = []
        client_org = None
        for username, org, kind, role in USERS:
            membership = membership_ensure(
                username=username, org_name=org, org_kind=kind, role=role
            )
            if role in (Role.ANNOTATOR, Role.EXPERT):
                tier = "expert" if role == Role.EXPERT else "crowd"
                workers.append(worker_ensure(user=membership.user, tier=tier))
            if role == Role.CLIENT:
                client_org = membership.organization
            tokens[username] = token_create(user=membership.user, name="seeddemo")

        rows, truth = demo_rows(options["items"], options["gold"], options["seed"])
        job = Job.objects.filter(organization=client_org, name=JOB_NAME).first()
        if job is None:
            job = job_create(
                organization=client_org,
                created_by=None,
                name=JOB_NAME,
                instructions="Which animal is in the photo? Pick the main subject.",
                label_schema={"kind": "single_choice", "classes": CLASSES},
                # A share of settled items is audited by QC, so the QC queue has work.
                policy={"min_labels": 3, "max_labels": 5, "gold_rate": 0.1, "audit_rate": 0.05},
                pricing={"crowd_label": 0.05, "expert_label": 0.5},
            )
            body = json.dumps(rows)
            report = item_ingest(job=job, stream=io.BytesIO(body.encode()), fmt="json")
            self.stdout.write(f"job {job.pk}: {report.created} items uploaded")
            job = job_launch(job=job)
        # The demo vendor serves the demo client: its ops and QC see the job, its pool works on it.
        contract_set(client_name=CLIENT_ORG, vendor_name=VENDOR_ORG, active=True)
        vendor = Organization.objects.get(name=VENDOR_ORG)
        pool, _ = Pool.objects.get_or_create(organization=vendor, name="demo pool")
        pool.members.add(*workers)
        pool_job_open(pool=pool, job=job)

        open_items = Item.objects.filter(job=job).exclude(state=Item.State.SETTLED).count()
        if job.status == Job.Status.RUNNING and open_items and options["seconds"] > 0:
            self._simulate(job, options, truth, seconds=options["seconds"])
        if job.routing.get("mode") != "model" and job.status == Job.Status.RUNNING:
            # Then the job is routed: a model trained on what the crowd settled accepts the
            # open items it is sure of; the rest wait for the demo annotator. (Routing is
            # switched on after the crowd ran: on SQLite the cost-aware stopping rule of a
            # routed job stores -inf in result_meta, which SQLite refuses, on a disputed item.)
            job = job_update(
                job=job,
                changes={"routing": {"mode": "model", "target_accuracy": 0.9, "min_train": 30}},
            )
            result = job_retrain(job_id=job.pk, seed=options["seed"])
            self.stdout.write(f"routing: {result.reason} {result.routing}")
            job.refresh_from_db()
        self._dispute_one(job, client_org)
        # What Celery beat does every minute in a deployment (`make run` runs no beat): the
        # dashboards' hourly rollups and the redundancy curve behind the marginal cost.
        rolled = rollup_run()
        self.stdout.write(f"dashboards: {rolled.labels_read} labels rolled up")
        self.stdout.write("")
        self.stdout.write(f"Demo job {job.pk} ({job.name!r}) is {job.status}.")
        self.stdout.write("Sign in at http://127.0.0.1:8000/login/ with one of these API tokens:")
        for username, token in tokens.items():
            self.stdout.write(f"  {username:<16} {token}")
        self.stdout.write(
            "Try: curl -H 'Authorization: Token <demo-client token>' "
            f"http://127.0.0.1:8000/api/v1/jobs/{job.pk}/"
        )

    def _simulate(self, job: Job, options: dict, truth: dict[str, str], seconds: float) -> None:
        call_command(
            "simulate",
            str(job.pk),
            workers=options["workers"],
            seconds=seconds,
            seed=options["seed"],
            vendor=VENDOR_ORG,
            truth=truth,
            stdout=self.stdout,
        )

    def _dispute_one(self, job: Job, client_org: Organization) -> None:
        """The demo client disputes one delivered result, so the QC queue is never empty."""
        if Review.objects.filter(job=job, reason=Reason.CLIENT_DISPUTE).exists():
            return
        item = job.items.filter(state=Item.State.SETTLED, gold_label__isnull=True).first()
        client = Membership.objects.filter(organization=client_org, role=Role.CLIENT).first()
        if item is None or client is None:
            return
        review_client_dispute(
            user=client.user,
            job=job,
            external_id=item.external_id,
            note="This looks like a different animal to us.",
        )
