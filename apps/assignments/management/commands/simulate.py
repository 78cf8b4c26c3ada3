"""simulate: drive a crowd of simulated annotators through a running job, printing progress."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from django.core.management.base import BaseCommand, CommandError
from django.db.models import Count

from apps.accounts.models import Organization
from apps.assignments.leasing import Idle, IdleReason
from apps.assignments.records import assignment_skip
from apps.common.errors import ApplicationError
from apps.jobs.models import Item, Job
from apps.pipeline.next import assignment_next
from apps.pipeline.submit import assignment_submit
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


class Command(BaseCommand):
    help = (
        "Drive simulated annotators (good, mediocre, spammers; experts better) through the same "
        "services the API uses, on a running job, for a bounded time."
    )

    # seeddemo passes the demo's true classes ({external_id: class}) here, so that no truth
    # needs to sit in a payload that annotators are shown.
    stealth_options = ("truth",)

    def add_arguments(self, parser) -> None:
        parser.add_argument("job", type=int)
        parser.add_argument("--workers", type=int, default=10)
        parser.add_argument(
            "--experts", type=int, default=None, help="Default: one per 10 workers."
        )
        parser.add_argument("--seconds", type=float, default=30.0)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--vendor", default="Concord Vendor", help="Vendor organization name.")
        parser.add_argument("--skip-rate", type=float, default=0.02)

    def handle(self, *args, **options) -> None:
        job = Job.objects.filter(pk=options["job"]).first()
        if job is None:
            raise CommandError(f"No job {options['job']}.")
        if job.status != Job.Status.RUNNING:
            raise CommandError(f"Job {job.pk} is {job.status}; launch it first.")
        classes = job.classes
        if not classes:
            raise CommandError(f"Job {job.pk} has no classes in its label schema.")
        seed = options["seed"]
        rng = random.Random(seed)
        crowd = self._crowd(job, options, rng)
        truth = self._truth(job, classes, seed, known=options.get("truth") or {})
        index = {c: i for i, c in enumerate(classes)}
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
                true = truth[result.item] = rng.choice(classes)
            row = sim.confusion[index[true]]
            answer = rng.choices(classes, weights=row)[0]
            correct += answer == true
            assignment_submit(
                worker=sim.worker,
                assignment_id=result.id,
                label=answer,
                duration_ms=int(rng.lognormvariate(8.5, 0.5)),
            )
            submitted += 1
            if time.monotonic() - last_report >= 1.0:
                last_report = time.monotonic()
                self._report(job, truth, submitted, skipped, idle, correct, last_report - started)

        self._report(job, truth, submitted, skipped, idle, correct, time.monotonic() - started)
        job.refresh_from_db(fields=["status"])
        self.stdout.write(f"done: job {job.pk} is {job.status}")

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
        n = len(job.classes)
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
            crowd.append(SimWorker(worker, profile, _confusion(rng, n, accuracy)))
        counts = {
            p: sum(1 for s in crowd if s.profile == p)
            for p in ("good", "mediocre", "spammer", "expert")
        }
        self.stdout.write(f"crowd: {counts} in pool {pool.name!r}")
        return crowd

    def _truth(
        self, job: Job, classes: list[str], seed: int, known: dict[str, str]
    ) -> dict[int, str]:
        """Each item's true class: gold label, else the caller's `known` class for its
        external id, else payload "truth", else a seeded draw."""
        truth: dict[int, str] = {}
        for item_id, external_id, gold, payload in (
            Item.objects.filter(job=job)
            .values_list("id", "external_id", "gold_label", "payload")
            .iterator(chunk_size=5000)
        ):
            value = gold or known.get(external_id)
            if value is None and isinstance(payload, dict):
                value = payload.get("truth")
            if value not in classes:
                value = random.Random(seed * 1_000_003 + item_id).choice(classes)
            truth[item_id] = value
        return truth

    def _report(self, job, truth, submitted, skipped, idle, correct, elapsed) -> None:
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
            if truth.get(item_id) == label
        )
        n_settled = states.get("settled", 0)
        accuracy = f"{right / n_settled:.3f}" if n_settled else "-"
        label_accuracy = f"{correct / submitted:.3f}" if submitted else "-"
        total = sum(states.values())
        self.stdout.write(
            f"[{elapsed:6.1f}s] labels {submitted} ({submitted / max(elapsed, 1e-9):.0f}/s, "
            f"raw accuracy {label_accuracy}) skips {skipped} idle {idle} | items {total}: "
            f"settled {n_settled} open {states.get('open', 0)} expert {states.get('expert', 0)} "
            f"review {states.get('review', 0)} | settled accuracy {accuracy}"
        )
