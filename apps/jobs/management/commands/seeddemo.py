"""seeddemo: a first run that shows something — users with tokens, a live demo job, a crowd,
and a small demo job of each other answer kind (tags, levels, numbers, boxes).

Idempotent: users, organizations and the demo job are created only when missing; every run
prints fresh API tokens (tokens are stored hashed, so old ones cannot be shown again) and, if
the demo job still has open items, lets the simulated crowd label for a few more seconds.
"""

from __future__ import annotations

from django.core.management import call_command
from django.core.management.base import BaseCommand

from apps.accounts.models import Membership, Organization, Role
from apps.accounts.services import contract_set, membership_ensure, token_create
from apps.jobs.demo import CLASSES, KIND_JOBS, demo_job_launch, demo_rows, kind_demo_rows
from apps.jobs.models import Item, Job
from apps.jobs.services import job_update
from apps.reports.rollups import rollup_run
from apps.reviews.models import Reason, Review
from apps.reviews.services import review_client_dispute
from apps.routing.services import job_retrain
from apps.workforce.models import Pool
from apps.workforce.services import pool_job_open, worker_ensure

CLIENT_ORG = "Demo Client"
VENDOR_ORG = "Concord Vendor"
JOB_NAME = "Demo: animal photos"
USERS = [
    ("demo-client", CLIENT_ORG, Organization.Kind.CLIENT, Role.CLIENT),
    ("demo-ops", VENDOR_ORG, Organization.Kind.VENDOR, Role.OPS),
    ("demo-qc", VENDOR_ORG, Organization.Kind.VENDOR, Role.QC),
    ("demo-annotator", VENDOR_ORG, Organization.Kind.VENDOR, Role.ANNOTATOR),
    ("demo-expert", VENDOR_ORG, Organization.Kind.VENDOR, Role.EXPERT),
]


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
        parser.add_argument(
            "--kind-seconds",
            type=float,
            default=0.6,
            help="How long the simulated crowd labels each demo job of another answer kind "
            "(a short while: some items stay open for the demo annotator).",
        )

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
        job = self._job(
            client_org,
            JOB_NAME,
            "Which animal is in the photo? Pick the main subject.",
            {"kind": "single_choice", "classes": CLASSES},
            rows,
            # A share of settled items is audited by QC, so the QC queue has work.
            audit_rate=0.05,
        )
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
        for kind in KIND_JOBS:
            self._kind_job(kind, client_org, pool, options)
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

    def _job(
        self,
        client_org: Organization,
        name: str,
        instructions: str,
        schema: dict,
        rows: list[dict],
        **policy: float,
    ) -> Job:
        """The client's demo job of this name; when missing, created, uploaded, launched."""
        job = Job.objects.filter(organization=client_org, name=name).first()
        if job is not None:
            return job
        job, created = demo_job_launch(
            organization=client_org,
            name=name,
            instructions=instructions,
            schema=schema,
            rows=rows,
            **policy,
        )
        self.stdout.write(f"job {job.pk} ({schema['kind']}): {created} items uploaded")
        return job

    def _kind_job(self, kind: str, client_org: Organization, pool: Pool, options: dict) -> None:
        """The demo job of an answer kind: created, uploaded and launched when missing, then
        labeled by the simulated crowd while it has open items."""
        name, instructions, schema = KIND_JOBS[kind]
        rows, truth = kind_demo_rows(kind, 30, 3, options["seed"])
        job = self._job(client_org, name, instructions, schema, rows)
        pool_job_open(pool=pool, job=job)
        open_items = Item.objects.filter(job=job).exclude(state=Item.State.SETTLED).count()
        if job.status == Job.Status.RUNNING and open_items and options["kind_seconds"] > 0:
            self._simulate(job, options, truth, seconds=options["kind_seconds"])

    def _simulate(self, job: Job, options: dict, truth: dict, seconds: float) -> None:
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
