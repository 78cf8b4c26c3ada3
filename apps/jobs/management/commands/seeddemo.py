"""seeddemo: a first run that shows something — users with tokens, a live demo job, a crowd,
and a small demo job of each other answer kind (tags, levels, numbers, boxes).

Idempotent: users, organizations and the demo job are created only when missing; every run
prints fresh API tokens (tokens are stored hashed, so old ones cannot be shown again) and, if
the demo job still has open items, lets the simulated crowd label for a few more seconds.
"""

from __future__ import annotations

import base64
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


# One small demo job of each other answer kind, so every page shows every kind:
# (name, instructions, label_schema).
KIND_JOBS = {
    "multi_choice": (
        "Demo: scene tags",
        "Tick every tag that applies to the scene.",
        {"kind": "multi_choice", "tags": ["indoor", "outdoor", "people", "animal", "vehicle"]},
    ),
    "ordinal": (
        "Demo: search relevance",
        "How well does the result answer the query?",
        {"kind": "ordinal", "levels": ["irrelevant", "marginal", "relevant", "perfect"]},
    ),
    "numeric": (
        "Demo: thermometer readings",
        "Read the temperature the description gives, in degrees Celsius.",
        {"kind": "numeric", "minimum": 0, "maximum": 40, "unit": "°C", "tolerance": 1.5},
    ),
    "bbox": (
        "Demo: cars and people",
        "Draw a box around every car (wide, blue) and every person (tall, red).",
        {"kind": "bbox", "classes": ["car", "person"], "width": 320, "height": 240},
    ),
}
SCENE = {
    "indoor": "inside a room",
    "outdoor": "out in the open air",
    "people": "a few people chatting",
    "animal": "a dog at their feet",
    "vehicle": "a parked car",
}
# (query, result, how relevant); the demo items cycle through them.
SEARCHES = [
    ("cheap flights to Lisbon", "Lisbon flights from 29 EUR: compare airlines", "perfect"),
    ("cheap flights to Lisbon", "Lisbon travel guide: ten things to see", "marginal"),
    ("cheap flights to Lisbon", "How to make Portuguese custard tarts", "irrelevant"),
    ("cheap flights to Lisbon", "Budget airlines flying from your city", "relevant"),
    ("how to repot a cactus", "Repotting cacti without getting pricked, step by step", "perfect"),
    ("how to repot a cactus", "Choosing soil for succulents", "relevant"),
    ("how to repot a cactus", "Desert landscapes of Arizona", "marginal"),
    ("how to repot a cactus", "Cheap flights to Phoenix", "irrelevant"),
]
COLOURS = {"car": "#2563eb", "person": "#dc2626"}


def _scene_tags(rng: np.random.Generator) -> list[str]:
    tags = KIND_JOBS["multi_choice"][2]["tags"]
    chosen = {str(rng.choice(["indoor", "outdoor"]))}
    chosen |= {t for t in ("people", "animal", "vehicle") if rng.random() < 0.45}
    return [t for t in tags if t in chosen]


def _reading(value: float) -> str:
    low = int(value // 5 * 5)
    closer = "lower" if value - low < 2.5 else "upper"
    return (
        f"The mercury sits between the {low} and {low + 5} marks, closer to the {closer} one "
        f"({value - low:.1f} above {low}, if you read it closely)."
    )


def _boxes(rng: np.random.Generator) -> list[dict]:
    boxes = []
    for _ in range(int(rng.integers(1, 3))):
        name = str(rng.choice(["car", "person"]))
        w, h = (float(rng.uniform(70, 110)), float(rng.uniform(35, 55)))
        if name == "person":
            w, h = h * 0.6, w
        x, y = float(rng.uniform(0, 320 - w)), float(rng.uniform(0, 240 - h))
        boxes.append({"box": [round(x, 1), round(y, 1), round(w, 1), round(h, 1)], "class": name})
    return boxes


def _picture(boxes: list[dict]) -> str:
    """The boxes drawn as an SVG picture (a data URL: the demo needs no image files)."""
    shapes = "".join(
        f'<rect x="{x}" y="{y}" width="{w}" height="{h}" fill="{COLOURS[b["class"]]}"/>'
        for b in boxes
        for x, y, w, h in [b["box"]]
    )
    svg = (
        '<svg xmlns="http://www.w3.org/2000/svg" width="320" height="240">'
        f'<rect width="320" height="240" fill="#e5e7eb"/>{shapes}</svg>'
    )
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode()


def kind_demo_rows(
    kind: str, n_items: int, n_gold: int, seed: int
) -> tuple[list[dict], dict[str, object]]:
    """A kind's demo items (the truth shown in the payload's words or picture, a few of
    them gold) and each item's true answer by external id, for the simulated crowd."""
    rng = np.random.default_rng(seed + len(kind))
    gold = set(rng.choice(n_items, size=n_gold, replace=False).tolist())
    rows, truth = [], {}
    for i in range(n_items):
        external_id = f"{kind}-{i:03d}"
        payload: dict
        if kind == "multi_choice":
            true: object = _scene_tags(rng)
            payload = {"text": "A photo " + ", ".join(SCENE[t] for t in true) + "."}
        elif kind == "ordinal":
            query, result, true = SEARCHES[i % len(SEARCHES)]
            payload = {"text": result, "query": query}
        elif kind == "numeric":
            true = round(float(rng.uniform(2, 38)), 1)
            payload = {"text": _reading(float(true))}
        else:
            true = _boxes(rng)
            payload = {"text": "Box every car and every person.", "image": _picture(true)}
        row = {"external_id": external_id, "payload": payload}
        if i in gold:
            row["gold_label"] = true
        rows.append(row)
        truth[external_id] = true
    return rows, truth


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
        job = job_create(
            organization=client_org,
            created_by=None,
            name=name,
            instructions=instructions,
            label_schema=schema,
            policy={"min_labels": 3, "max_labels": 5, "gold_rate": 0.1, **policy},
            pricing={"crowd_label": 0.05, "expert_label": 0.5},
        )
        report = item_ingest(job=job, stream=io.BytesIO(json.dumps(rows).encode()), fmt="json")
        self.stdout.write(f"job {job.pk} ({schema['kind']}): {report.created} items uploaded")
        return job_launch(job=job)

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
