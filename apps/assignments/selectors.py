"""Reads for assignments: a worker's own assignment, the jobs a worker may choose from, and
the engine's invariant check."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal

from django.db.models import Count, IntegerField, OuterRef, Q, QuerySet, Subquery, Sum, Value
from django.db.models.functions import Coalesce
from django.http import Http404

from apps.assignments.leasing import LIVE_STATES, items_left_for, worker_open_jobs
from apps.assignments.models import Assignment, Label
from apps.common.errors import ApplicationError
from apps.jobs.kinds import KIND_TITLES, SINGLE_CHOICE, schema_kind_name
from apps.jobs.models import Item, Job
from apps.workforce.models import LedgerEntry, Worker
from apps.workforce.services import CENT, label_price


def assignment_get_for_worker(*, worker: Worker, assignment_id: int) -> Assignment:
    """The worker's own assignment; another worker's is a 404, not a hint that it exists."""
    assignment = Assignment.objects.filter(pk=assignment_id, worker=worker).first()
    if assignment is None:
        raise Http404("No such assignment.")
    return assignment


@dataclass(frozen=True)
class JobChoice:
    """A running job open to the worker, as their job list shows it."""

    id: int
    name: str
    kind: str
    # The credit of one label of theirs (their tier's price); None when the job's stored
    # price cannot be paid (apps.workforce.services.label_price refuses it).
    pay: Decimal | None
    # Items the worker could still be handed (within the job's per-worker cap, if any).
    left: int
    # The worker holds the job's per-worker cap of items already.
    capped: bool

    @property
    def kind_title(self) -> str:
        return KIND_TITLES.get(self.kind, self.kind)

    @property
    def available(self) -> bool:
        return self.left > 0

    @property
    def pay_text(self) -> str:
        """The price with two decimals, or up to the ledger's four when it has them."""
        if self.pay is None:
            return ""
        whole, _, fraction = f"{self.pay:.4f}".partition(".")
        return f"{whole}.{fraction.rstrip('0').ljust(2, '0')}"


def _count(queryset: QuerySet) -> Coalesce:
    """COUNT(*) of a queryset correlated to the outer job, as a subquery (0 for none)."""
    counted = queryset.order_by().values("job_id").annotate(n=Count("id")).values("n")
    return Coalesce(Subquery(counted, output_field=IntegerField()), Value(0))


def job_choices_for_worker(*, worker: Worker) -> list[JobChoice]:
    """The running jobs open to the worker's pools, in the engine's order (id), with what is
    left for them in each: the list an annotator picks a job from.

    "Open" is the engine's own rule (apps.assignments.leasing.worker_open_jobs, cached
    briefly on PostgreSQL); "left" is items_left_for, the rule behind EXHAUSTED, capped by
    the job's max_items_per_worker. A worker who is not active is handed nothing, so gets no
    list. Two queries however many jobs: the open jobs, then names and counts together.
    """
    if worker.status != Worker.Status.ACTIVE:
        return []
    jobs = worker_open_jobs(worker=worker)
    if not jobs:
        return []
    rows = {
        pk: (name, left, taken)
        for pk, name, left, taken in Job.objects.filter(pk__in=[job.pk for job in jobs])
        .annotate(
            left=_count(items_left_for(worker=worker, job_id=OuterRef("pk"))),
            taken=_count(
                Assignment.objects.filter(
                    job_id=OuterRef("pk"), worker_id=worker.pk, state__in=LIVE_STATES
                )
            ),
        )
        .values_list("id", "name", "left", "taken")
    }
    choices = []
    for job in jobs:
        if job.pk not in rows:
            continue  # deleted between the two reads
        name, left, taken = rows[job.pk]
        cap = job.spec.policy.max_items_per_worker
        room = max(0, int(cap) - taken) if cap else left
        try:
            pay: Decimal | None = label_price(pricing=job.spec.pricing, tier=worker.tier)
        except ApplicationError:
            pay = None
        choices.append(
            JobChoice(
                id=job.pk,
                name=name,
                kind=job.kind,
                pay=pay,
                left=min(left, room),
                capped=bool(cap) and room == 0,
            )
        )
    return choices


def invariant_violations(*, job_id: int | None = None) -> list[str]:
    """Every broken engine invariant, as one human-readable line each ([] when all hold).

    Checks: label budgets, one assignment and one label per (item, worker), lease and label
    counters against the rows they count (single_choice votes too), no live lease on a job that is not running, one
    submitted assignment per label, and a ledger equal to labels times prices.
    """
    items = Item.objects.all()
    assignments = Assignment.objects.all()
    labels = Label.objects.all()
    ledger = LedgerEntry.objects.all()
    if job_id is not None:
        items = items.filter(job_id=job_id)
        assignments = assignments.filter(job_id=job_id)
        labels = labels.filter(job_id=job_id)
        ledger = ledger.filter(job_id=job_id)
    problems: list[str] = []

    over = (
        items.filter(gold_label__isnull=True)
        .filter(Q(n_labels__gt=0) | Q(n_leases__gt=0))
        .values_list("id", "n_labels", "n_leases", "labels_needed")
    )
    for item_id, n_labels, n_leases, needed in over:
        if n_labels + n_leases > needed:
            problems.append(
                f"item {item_id}: over budget ({n_labels} labels + {n_leases} leases > {needed})"
            )

    for model, what in ((assignments, "assignments"), (labels, "labels")):
        dupes = (
            model.values("item_id", "worker_id")
            .annotate(n=Count("id"))
            .filter(n__gt=1)
            .values_list("item_id", "worker_id", "n")
        )
        for item_id, worker_id, n in dupes:
            problems.append(f"item {item_id}: worker {worker_id} has {n} {what}")

    live = dict(
        assignments.filter(state=Assignment.State.LEASED)
        .values("item_id")
        .annotate(n=Count("id"))
        .values_list("item_id", "n")
    )
    counted = dict(labels.values("item_id").annotate(n=Count("id")).values_list("item_id", "n"))
    # Votes per class are kept for single_choice only; another kind's answers are JSON, read
    # from the labels, and its items keep no votes.
    jobs = Job.objects.all() if job_id is None else Job.objects.filter(pk=job_id)
    other_kinds = {
        pk
        for pk, schema in jobs.values_list("id", "label_schema")
        if schema_kind_name(schema) != SINGLE_CHOICE
    }
    for item_id, job, n_leases, n_labels, votes in items.values_list(
        "id", "job_id", "n_leases", "n_labels", "vote_counts"
    ).iterator(chunk_size=5000):
        if n_leases != live.get(item_id, 0):
            problems.append(
                f"item {item_id}: n_leases={n_leases} but {live.get(item_id, 0)} live leases"
            )
        if n_labels != counted.get(item_id, 0):
            problems.append(
                f"item {item_id}: n_labels={n_labels} but {counted.get(item_id, 0)} labels"
            )
        if job in other_kinds:
            if votes:
                problems.append(f"item {item_id}: votes {votes} kept for an answer kind")
        elif sum((votes or {}).values()) != n_labels:
            problems.append(f"item {item_id}: votes {votes} do not sum to n_labels={n_labels}")

    stale = (
        assignments.filter(state=Assignment.State.LEASED)
        .exclude(job__status=Job.Status.RUNNING)
        .values_list("id", "job_id", "job__status")
    )
    for assignment_id, stale_job, job_status in stale:
        problems.append(f"assignment {assignment_id}: live lease on {job_status} job {stale_job}")

    unlabeled = assignments.filter(state=Assignment.State.SUBMITTED, label__isnull=True)
    for assignment_id in unlabeled.values_list("id", flat=True):
        problems.append(f"assignment {assignment_id}: submitted without a label")
    mislabeled = labels.exclude(assignment__state=Assignment.State.SUBMITTED)
    for label_id in mislabeled.values_list("id", flat=True):
        problems.append(f"label {label_id}: its assignment is not submitted")

    problems.extend(_ledger_violations(labels=labels, ledger=ledger))
    return problems


def _ledger_violations(*, labels, ledger) -> list[str]:
    problems: list[str] = []
    unpaid = labels.filter(ledger_entry__isnull=True).values_list("id", flat=True)
    for label_id in unpaid:
        problems.append(f"label {label_id}: no ledger entry")
    # Labels times prices, per job and tier, against the label credits of the ledger.
    expected: dict[tuple[int, str], int] = {
        (job, tier): n
        for job, tier, n in labels.values("job_id", "tier")
        .annotate(n=Count("id"))
        .values_list("job_id", "tier", "n")
    }
    paid: dict[tuple[int, str], Decimal] = defaultdict(Decimal)
    for job, tier, total in (
        ledger.filter(kind=LedgerEntry.Kind.LABEL)
        .values("job_id", "label__tier")
        .annotate(total=Sum("amount"))
        .values_list("job_id", "label__tier", "total")
    ):
        # SQLite sums decimals as floats; the ledger's own precision is 4 places.
        paid[(job, tier)] += Decimal(str(total or 0)).quantize(CENT)
    jobs = {
        job.pk: job
        for job in Job.objects.filter(pk__in={job for job, _ in expected | paid}).only(
            "id", "pricing"
        )
    }
    for key in sorted(set(expected) | set(paid)):
        job_id, tier = key
        want = label_price(pricing=jobs[job_id].spec.pricing, tier=tier) * expected.get(key, 0)
        if paid.get(key, Decimal("0")) != want:
            problems.append(
                f"job {job_id}: {tier} label credits {paid.get(key, Decimal('0'))} != "
                f"{expected.get(key, 0)} labels x price = {want}"
            )
    return problems
