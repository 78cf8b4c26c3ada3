"""simulate: drive a crowd of simulated annotators through a running job, printing progress;
with `--kind` and no job, through a fresh job of that answer kind made from the demo's items.

Every answer kind is simulated from each item's truth (its gold answer, a truth the caller
passes, a payload "truth", else a seeded draw) by workers of three profiles: a class or level
right with the profile's accuracy (a wrong level mostly one off), tags each flipped with the
profile's error, a number with the worker's bias and noise, boxes jittered in proportion to
their size, sometimes missed, sometimes with a stray one; spammers answer at random.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from django.core.management.base import BaseCommand, CommandError
from django.db.models import Count

from apps.accounts.models import Organization
from apps.accounts.services import contract_set
from apps.assignments.leasing import Idle, IdleReason
from apps.assignments.records import assignment_skip
from apps.common.errors import ApplicationError
from apps.jobs.demo import CLASSES, KIND_JOBS, demo_job_launch, demo_rows, kind_demo_rows
from apps.jobs.kinds import KIND_NAMES, SINGLE_CHOICE, answer_value, schema_kind_name
from apps.jobs.models import Item, Job
from apps.pipeline.next import assignment_next
from apps.pipeline.submit import assignment_submit
from apps.quality.algorithms.kinds.bbox import iou
from apps.workforce.models import Pool, Worker
from apps.workforce.services import pool_job_open, worker_create

# (share of the crowd, probability of the right answer); a spammer answers at random.
PROFILES = [("good", 0.6, 0.92), ("mediocre", 0.3, 0.72), ("spammer", 0.1, None)]
EXPERT_ACCURACY = 0.98


@dataclass
class SimWorker:
    worker: Worker
    profile: str
    confusion: list[list[float]]  # row: true class, column: answered class
    accuracy: float | None = None  # None: a spammer
    bias: float = 0.0  # numbers: the worker's offset, in tolerances
    rng: random.Random = field(default_factory=random.Random)


def _confusion(rng: random.Random, n: int, accuracy: float | None) -> list[list[float]]:
    if accuracy is None:
        # A spammer favours one class whatever the item shows.
        favourite = rng.randrange(n)
        row = [0.5 / n] * n
        row[favourite] += 0.5
        return [list(row) for _ in range(n)]
    rows = []
    for true in range(n):
        # The errors are unevenly spread, as real confusions are.
        weights = [rng.random() + 0.1 if k != true else 0.0 for k in range(n)]
        total = sum(weights) or 1.0
        rows.append(
            [accuracy if k == true else (1 - accuracy) * w / total for k, w in enumerate(weights)]
        )
    return rows


def _clip(value: float, low: float, high: float) -> float:
    return min(max(value, low), high)


def _iou(a: list[float], b: list[float]) -> float:
    """Intersection over union of two [x, y, w, h] boxes (the box kernel's `iou`)."""
    corners = np.array([[x, y, x + w, y + h] for x, y, w, h in (a, b)], dtype=np.float64)
    return float(iou(corners[0], corners[1]))


class Answers:
    """A job's simulated truths and answers, by its kind (`label_schema`)."""

    def __init__(self, label_schema: dict) -> None:
        self.schema = label_schema
        self.kind = schema_kind_name(label_schema)

    def truth(self, rng: random.Random) -> Any:
        s = self.schema
        if self.kind == "multi_choice":
            tags = s["tags"]
            low = max(1, s.get("min_tags", 0))
            high = min(len(tags), s.get("max_tags") or len(tags), max(low, 2))
            return sorted(rng.sample(tags, rng.randint(low, high)), key=tags.index)
        if self.kind == "ordinal":
            return rng.choice(s["levels"])
        if self.kind == "numeric":
            return round(rng.uniform(float(s["minimum"]), float(s["maximum"])), 1)
        if self.kind == "bbox":
            return [self._box(rng) for _ in range(rng.randint(1, 2))]
        return rng.choice(s["classes"])

    def stored(self, text: str | None) -> Any:
        """An answer as stored (a class name; another kind's canonical JSON text) as a value."""
        if text is None or self.kind == SINGLE_CHOICE:
            return text
        return answer_value(text)

    def known(self, value: Any) -> Any:
        """A truth given as a value, if it is one of this kind's; else None."""
        if self.kind == SINGLE_CHOICE and value not in self.schema["classes"]:
            return None
        if self.kind == "ordinal" and value not in self.schema["levels"]:
            return None
        return value

    def answer(self, sim: SimWorker, true: Any) -> Any:
        rng, a = sim.rng, sim.accuracy
        s = self.schema
        if self.kind == SINGLE_CHOICE:
            row = sim.confusion[s["classes"].index(true)]
            return rng.choices(s["classes"], weights=row)[0]
        if self.kind == "ordinal":
            levels = s["levels"]
            if a is None:
                return rng.choice(levels)
            if rng.random() < a:
                return true
            i = levels.index(true) + rng.choice((-1, 1)) * (1 if rng.random() < 0.8 else 2)
            return levels[min(max(i, 0), len(levels) - 1)]
        if self.kind == "multi_choice":
            tags = s["tags"]
            if a is None:
                chosen = [t for t in tags if rng.random() < 0.5]
            else:
                flip = (1.0 - a) / 2
                chosen = [t for t in tags if (t in true) != (rng.random() < flip)]
            low, high = s.get("min_tags", 0), s.get("max_tags") or len(tags)
            while len(chosen) < low:
                chosen.append(rng.choice([t for t in tags if t not in chosen]))
            return sorted(chosen[:high], key=tags.index)
        if self.kind == "numeric":
            low, high = float(s["minimum"]), float(s["maximum"])
            if a is None:
                return round(rng.uniform(low, high), 1)
            tolerance = float(s["tolerance"])
            # A good worker's noise is a third of the tolerance, a mediocre one's 0.8x: three
            # good answers pin an item within it (Student's t on three answers is wide).
            noise = tolerance * (0.2 + 2.0 * (1.0 - a))
            value = true + sim.bias * tolerance + rng.gauss(0.0, noise)
            return round(_clip(value, low, high), 1)
        if self.kind == "bbox":
            if a is None:
                return [self._box(rng) for _ in range(rng.randint(0, 2))]
            boxes = []
            for b in true:
                if rng.random() < (1.0 - a) / 2:
                    continue  # missed
                boxes.append(self._jitter(b, (1.0 - a) * 0.5, rng))
            if rng.random() < (1.0 - a) / 3:
                boxes.append(self._box(rng))  # a stray box
            return boxes
        raise ValueError(f"cannot simulate kind {self.kind!r}")

    def right(self, answer: Any, true: Any) -> bool:
        """The answer counted right for the progress line: a number within the tolerance,
        boxes one for one with the truth's (same class, IoU at least 0.5)."""
        if self.kind == "numeric":
            return abs(answer - true) <= float(self.schema["tolerance"])
        if self.kind == "bbox":
            return len(answer) == len(true) and all(
                any(b["class"] == t["class"] and _iou(b["box"], t["box"]) >= 0.5 for b in answer)
                for t in true
            )
        return answer == true

    def _box(self, rng: random.Random) -> dict:
        width, height = float(self.schema["width"]), float(self.schema["height"])
        w = rng.uniform(0.1, 0.4) * width
        h = rng.uniform(0.1, 0.4) * height
        x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
        box = [round(x, 1), round(y, 1), round(w, 1), round(h, 1)]
        return {"box": box, "class": rng.choice(self.schema["classes"])}

    def _jitter(self, b: dict, spread: float, rng: random.Random) -> dict:
        width, height = float(self.schema["width"]), float(self.schema["height"])
        x, y, w, h = b["box"]
        x = _clip(x + rng.gauss(0, spread * w / 2 + 1), 0, width - 2)
        y = _clip(y + rng.gauss(0, spread * h / 2 + 1), 0, height - 2)
        w = _clip(w * (1 + rng.gauss(0, spread / 2)), 1, width - x)
        h = _clip(h * (1 + rng.gauss(0, spread / 2)), 1, height - y)
        return {"box": [round(x, 1), round(y, 1), round(w, 1), round(h, 1)], "class": b["class"]}


class Command(BaseCommand):
    help = (
        "Drive simulated annotators (good, mediocre, spammers; experts better) through the same "
        "services the API uses, on a running job, for a bounded time."
    )

    # seeddemo passes the demo's true classes ({external_id: class}) here, so that no truth
    # needs to sit in a payload that annotators are shown.
    stealth_options = ("truth",)

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "job", type=int, nargs="?", help="A running job; leave out with --kind for a new one."
        )
        parser.add_argument(
            "--kind",
            choices=KIND_NAMES,
            help="Make a new job of this answer kind (the demo's items of the kind, a few of "
            "them gold), launch it and simulate on it; with a job, the job must be of this kind.",
        )
        parser.add_argument(
            "--items", type=int, default=60, help="With --kind: the new job's item count."
        )
        parser.add_argument(
            "--client",
            default="Simulated Client",
            help="With --kind: the client organization the new job belongs to.",
        )
        parser.add_argument("--workers", type=int, default=10)
        parser.add_argument(
            "--experts", type=int, default=None, help="Default: one per 10 workers."
        )
        parser.add_argument("--seconds", type=float, default=30.0)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--vendor", default="Concord Vendor", help="Vendor organization name.")
        parser.add_argument("--skip-rate", type=float, default=0.02)

    def handle(self, *args, **options) -> None:
        if options["job"] is None:
            if options["kind"] is None:
                raise CommandError("Name a running job, or a --kind to make a new job of.")
            job = self._new_job(options["kind"], options)
        else:
            job = Job.objects.filter(pk=options["job"]).first()
            if job is None:
                raise CommandError(f"No job {options['job']}.")
            if options["kind"] and schema_kind_name(job.label_schema) != options["kind"]:
                raise CommandError(
                    f"Job {job.pk} is {schema_kind_name(job.label_schema)}, not {options['kind']}."
                )
        if job.status != Job.Status.RUNNING:
            raise CommandError(f"Job {job.pk} is {job.status}; launch it first.")
        answers = Answers(job.label_schema or {})
        if answers.kind == SINGLE_CHOICE and not job.classes:
            raise CommandError(f"Job {job.pk} has no classes in its label schema.")
        seed = options["seed"]
        rng = random.Random(seed)
        crowd = self._crowd(job, options, rng)
        truth = self._truth(job, answers, seed, known=options.get("truth") or {})
        deadline = time.monotonic() + options["seconds"]
        started = time.monotonic()
        last_report = started
        submitted = skipped = idle = 0
        correct = 0
        active = list(crowd)

        while active and time.monotonic() < deadline:
            sim = rng.choice(active)
            result = assignment_next(worker=sim.worker, job_id=job.pk, rng=rng)
            if isinstance(result, Idle):
                idle += 1
                if result.reason in (IdleReason.EXHAUSTED, IdleReason.CAP_REACHED):
                    active.remove(sim)
                elif result.reason == IdleReason.NO_OPEN_JOB:
                    break
                else:
                    time.sleep(0.01)
                continue
            if rng.random() < options["skip_rate"]:
                assignment_skip(worker=sim.worker, assignment_id=result.id)
                skipped += 1
                continue
            true = truth.get(result.item)
            if true is None:
                true = truth[result.item] = answers.truth(rng)
            answer = answers.answer(sim, true)
            correct += answers.right(answer, true)
            assignment_submit(
                worker=sim.worker,
                assignment_id=result.id,
                label=answer,
                duration_ms=int(rng.lognormvariate(8.5, 0.5)),
            )
            submitted += 1
            if time.monotonic() - last_report >= 1.0:
                last_report = time.monotonic()
                elapsed = last_report - started
                self._report(job, answers, truth, submitted, skipped, idle, correct, elapsed)

        elapsed = time.monotonic() - started
        self._report(job, answers, truth, submitted, skipped, idle, correct, elapsed)
        job.refresh_from_db(fields=["status"])
        self.stdout.write(f"done: job {job.pk} is {job.status}")

    def _new_job(self, kind: str, options: dict) -> Job:
        """A running job of `kind` for the client organization, made of the demo's items of
        the kind (a tenth of them gold, at least one), the vendor under contract with the
        client; the items' truths go to the simulated crowd in `options["truth"]`."""
        if options["items"] < 2:
            raise CommandError("--items: at least 2.")
        client, _ = Organization.objects.get_or_create(
            name=options["client"], defaults={"kind": Organization.Kind.CLIENT}
        )
        if client.kind != Organization.Kind.CLIENT:
            raise CommandError(f"{client.name} is not a client organization.")
        Organization.objects.get_or_create(
            name=options["vendor"], defaults={"kind": Organization.Kind.VENDOR}
        )
        try:
            contract_set(client_name=client.name, vendor_name=options["vendor"])
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        n_gold = max(1, options["items"] // 10)
        if kind == SINGLE_CHOICE:
            name, instructions = "Demo: animal photos", "Which animal is in the photo?"
            schema: dict = {"kind": SINGLE_CHOICE, "classes": CLASSES}
            rows, truth = demo_rows(options["items"] - n_gold, n_gold, options["seed"])
        else:
            name, instructions, schema = KIND_JOBS[kind]
            rows, truth = kind_demo_rows(kind, options["items"], n_gold, options["seed"])
        job, _ = demo_job_launch(
            organization=client,
            name=f"Simulated {name[len('Demo: ') :]}",
            instructions=instructions,
            schema=schema,
            rows=rows,
        )
        options["truth"] = {**truth, **(options.get("truth") or {})}
        self.stdout.write(f"job {job.pk} ({kind}): {len(rows)} items, {n_gold} of them gold")
        return job

    def _crowd(self, job: Job, options: dict, rng: random.Random) -> list[SimWorker]:
        vendor, _ = Organization.objects.get_or_create(
            name=options["vendor"], defaults={"kind": Organization.Kind.VENDOR}
        )
        if vendor.kind != Organization.Kind.VENDOR:
            raise CommandError(f"{vendor.name} is not a vendor organization.")
        pool, _ = Pool.objects.get_or_create(
            organization=vendor, name=f"simulated crowd (job {job.pk})"
        )
        try:
            pool_job_open(pool=pool, job=job)
        except ApplicationError as exc:
            raise CommandError(
                f"{exc.message} Start one with: manage.py contract "
                f"--client {job.organization.name!r} --vendor {vendor.name!r}"
            ) from exc
        n_experts = (
            options["experts"] if options["experts"] is not None else options["workers"] // 10
        )
        n = len(job.classes) or 1
        crowd: list[SimWorker] = []
        plan = [("expert", EXPERT_ACCURACY)] * n_experts
        for i in range(options["workers"]):
            # Deterministic profile mix: the first 60% good, then 30% mediocre, then spammers.
            share = (i + 0.5) / options["workers"]
            cumulative = 0.0
            for name, fraction, accuracy in PROFILES:
                cumulative += fraction
                if share <= cumulative:
                    plan.append((name, accuracy))
                    break
        for i, (profile, accuracy) in enumerate(plan):
            tier = Worker.Tier.EXPERT if profile == "expert" else Worker.Tier.CROWD
            username = f"sim-{profile}-{i}"
            worker = Worker.objects.filter(user__username=username).first()
            if worker is None:
                worker, _ = worker_create(organization=vendor, username=username, tier=tier)
            pool.members.add(worker)
            crowd.append(
                SimWorker(
                    worker,
                    profile,
                    _confusion(rng, n, accuracy),
                    accuracy=accuracy,
                    bias=rng.gauss(0.0, 0.5) if profile == "mediocre" else 0.0,
                    rng=random.Random(rng.random()),
                )
            )
        counts = {
            p: sum(1 for s in crowd if s.profile == p)
            for p in ("good", "mediocre", "spammer", "expert")
        }
        self.stdout.write(f"crowd: {counts} in pool {pool.name!r}")
        return crowd

    def _truth(self, job: Job, answers: Answers, seed: int, known: dict[str, Any]) -> dict:
        """Each item's true answer: gold label, else the caller's `known` answer for its
        external id, else payload "truth", else a seeded draw."""
        truth: dict[int, Any] = {}
        for item_id, external_id, gold, payload in (
            Item.objects.filter(job=job)
            .values_list("id", "external_id", "gold_label", "payload")
            .iterator(chunk_size=5000)
        ):
            value = answers.stored(gold)
            if value is None:
                value = answers.known(known.get(external_id))
            if value is None and isinstance(payload, dict):
                value = answers.known(payload.get("truth"))
            if value is None:
                value = answers.truth(random.Random(seed * 1_000_003 + item_id))
            truth[item_id] = value
        return truth

    def _report(self, job, answers, truth, submitted, skipped, idle, correct, elapsed) -> None:
        states = dict(
            Item.objects.filter(job=job, gold_label__isnull=True)
            .values("state")
            .annotate(n=Count("id"))
            .values_list("state", "n")
        )
        settled = Item.objects.filter(job=job, gold_label__isnull=True, state=Item.State.SETTLED)
        right = sum(
            1
            for item_id, label in settled.values_list("id", "label")
            if label is not None and answers.right(answers.stored(label), truth[item_id])
        )
        n_settled = states.get("settled", 0)
        accuracy = f"{right / n_settled:.3f}" if n_settled else "-"
        label_accuracy = f"{correct / submitted:.3f}" if submitted else "-"
        # Right: the class, tag set or level; a number within the tolerance; as many boxes.
        total = sum(states.values())
        self.stdout.write(
            f"[{elapsed:6.1f}s] labels {submitted} ({submitted / max(elapsed, 1e-9):.0f}/s, "
            f"raw accuracy {label_accuracy}) skips {skipped} idle {idle} | items {total}: "
            f"settled {n_settled} open {states.get('open', 0)} expert {states.get('expert', 0)} "
            f"review {states.get('review', 0)} | settled accuracy {accuracy}"
        )
