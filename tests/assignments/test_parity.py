"""The fast path (PostgreSQL statements) and the ORM path leave the same rows.

Property-based (hypothesis): the lease rule and the matrix choice the statements carry in
SQL against the ORM rules on the same random data; then random sequences of leases,
submits, releases, skips, lapsed leases and gold answers run through both paths on twin
jobs, and the items, assignments, labels and ledger must come out the same.
"""

from __future__ import annotations

import random
from datetime import timedelta
from decimal import Decimal

import numpy as np
import pytest
from django.db import connection
from django.test import override_settings
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apps.accounts.services import membership_ensure
from apps.assignments import fastpath
from apps.assignments.leasing import Task, eligible_items
from apps.assignments.models import Assignment, Label
from apps.assignments.records import assignment_release, assignment_skip
from apps.assignments.sweeps import lease_sweep
from apps.common.caches import clear_all_local
from apps.common.errors import ApplicationError
from apps.jobs.kinds import answer_text
from apps.jobs.models import Item
from apps.pipeline.next import assignment_next
from apps.pipeline.submit import assignment_submit
from apps.quality.aggregation import local_caches_clear
from apps.quality.matrices import classes_key, worker_confusions
from apps.quality.models import WorkerJobQuality
from apps.reviews.models import Review
from apps.reviews.services import review_resolve
from apps.workforce.models import LedgerEntry, Worker
from tests.workforce.factories import (
    VENDOR,
    JobFactory,
    make_items,
    make_pool,
    make_worker,
)

pytestmark = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="the fast path is PostgreSQL's"
)
CLASSES = ["cat", "dog", "bird"]
EXAMPLES = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


# --------------------------------------------------------------------------- the lease rule

_item_rows = st.lists(
    st.fixed_dictionaries(
        {
            "state": st.sampled_from(["open", "expert", "settled", "review"]),
            "n_labels": st.integers(0, 3),
            "n_leases": st.integers(0, 2),
            "labels_needed": st.integers(1, 4),
            "gold": st.booleans(),
            "priority": st.sampled_from([0.0, 0.5, 1.0]),
            "seen": st.booleans(),
        }
    ),
    min_size=1,
    max_size=12,
)


@pytest.mark.django_db
@EXAMPLES
@given(rows=_item_rows)
def test_the_lease_statement_picks_from_the_items_the_orm_rule_allows(rows):
    job = JobFactory()
    worker, other = make_worker(), make_worker()
    items = Item.objects.bulk_create(
        [
            Item(
                job=job,
                external_id=f"x-{i}",
                payload={},
                state=row["state"],
                n_labels=row["n_labels"],
                n_leases=row["n_leases"],
                # The database's label budget holds for every non-gold item.
                labels_needed=max(row["labels_needed"], row["n_labels"] + row["n_leases"]),
                gold_label="cat" if row["gold"] else None,
                priority=row["priority"],
            )
            for i, row in enumerate(rows)
        ]
    )
    now = timezone.now()
    later = now + timedelta(minutes=10)
    for item, row in zip(items, rows, strict=True):
        if row["seen"]:
            Assignment.objects.create(
                item=item, job=job, worker=worker, leased_at=now, expires_at=later
            )
        else:  # someone else's assignment must not matter
            Assignment.objects.create(
                item=item, job=job, worker=other, leased_at=now, expires_at=later
            )

    for state in ("open", "expert"):
        for spread in (True, False):
            orm = list(
                eligible_items(
                    job_id=job.pk, worker_id=worker.pk, state=state, spread=spread
                ).values_list("id", flat=True)
            )
            sql = fastpath.eligible_ids(
                job_id=job.pk, worker_id=worker.pk, state=state, spread=spread
            )
            assert sql == orm, (state, spread)


# --------------------------------------------------------------------------- the matrix choice

_quality_rows = st.lists(
    st.fixed_dictionaries(
        {
            "which": st.sampled_from(["this", "same_classes", "other_classes"]),
            "source": st.sampled_from(["aggregation", "history"]),
            "age": st.integers(0, 1000),
            "accuracy": st.floats(0.34, 0.99),
        }
    ),
    max_size=4,
)


def _matrix(accuracy: float) -> list[list[float]]:
    off = (1 - accuracy) / 2
    return [[accuracy if i == j else off for j in range(3)] for i in range(3)]


@pytest.mark.django_db
@EXAMPLES
@given(rows=_quality_rows)
def test_the_submit_statement_reads_the_matrix_the_orm_rule_chooses(rows):
    job = JobFactory(label_schema={"kind": "single_choice", "classes": CLASSES})
    same = JobFactory(label_schema={"kind": "single_choice", "classes": CLASSES})
    other = JobFactory(label_schema={"kind": "single_choice", "classes": ["yes", "no", "x"]})
    worker = make_worker()
    now = timezone.now()
    used = set()
    for row in rows:
        target = {"this": job, "same_classes": same, "other_classes": other}[row["which"]]
        if target.pk in used:  # one row per (worker, job)
            target = JobFactory(label_schema=target.label_schema)
        used.add(target.pk)
        quality = WorkerJobQuality.objects.create(
            worker=worker,
            job=target,
            classes_key=classes_key(target.classes),
            confusion=_matrix(row["accuracy"]),
            skill=row["accuracy"],
            source=row["source"],
        )
        # Distinct times (auto_now set one on create): the order must not rest on a tie.
        stamp = now - timedelta(seconds=row["age"], microseconds=quality.pk)
        WorkerJobQuality.objects.filter(pk=quality.pk).update(updated_at=stamp)

    sql = fastpath.stored_matrix(worker_id=worker.pk, job_id=job.pk, key=classes_key(job.classes))
    orm = worker_confusions(job=job, worker_ids=[worker.pk])[worker.pk]
    newcomer = worker_confusions(job=job, worker_ids=[-1])[-1]

    if sql is None:
        np.testing.assert_allclose(orm, newcomer)
    else:
        np.testing.assert_allclose(orm, np.asarray(sql))


# --------------------------------------------------------------------------- whole sequences

_steps = st.lists(
    st.tuples(
        st.integers(0, 4),  # which worker (4: the expert)
        st.sampled_from(
            ["submit", "submit", "submit", "hold", "release", "skip", "lapse", "resolve"]
        ),
        st.sampled_from(CLASSES),
    ),
    min_size=4,
    max_size=30,
)


def _world(tag: str, aggregation: str, kind: str = "single_choice"):
    """A job of 4 items and 3 gold items (gold rate 0.3, every settled item audited: the
    audit draw hashes the job id, which differs between the twins), 4 crowd workers and an expert in
    one pool, and a QC reviewer of the same vendor (items[-1] of the workers list is the
    expert; the reviewer is returned apart). `kind` "ordinal" makes the classes the levels
    of an ordered scale (answers and gold stored as canonical JSON, apps.jobs.kinds)."""
    schema = (
        {"kind": "single_choice", "classes": CLASSES}
        if kind == "single_choice"
        else {"kind": "ordinal", "levels": CLASSES}
    )
    job = JobFactory(
        name=f"parity {tag}",
        label_schema=schema,
        policy={
            "min_labels": 2,
            "max_labels": 3,
            "gold_rate": 0.3,
            "target_confidence": 0.9,
            "aggregation": aggregation,
            "reaggregate_every": 0,
            "audit_rate": 1.0,
        },
    )
    gold = ["cat", "dog", "bird"]
    make_items(job, 4, gold=gold if kind == "single_choice" else [answer_text(g) for g in gold])
    workers = [make_worker() for _ in range(4)] + [make_worker(tier=Worker.Tier.EXPERT)]
    make_pool(jobs=[job], workers=workers)
    reviewer = membership_ensure(
        username=f"qc {tag}", org_name=VENDOR, org_kind="vendor", role="qc"
    ).user
    return job, workers, reviewer


def _play(job, workers, reviewer, steps, seed: int) -> list[str]:
    """Run the steps; return what each step answered (the same on both paths)."""
    rng = random.Random(seed)
    now = timezone.now()
    held: dict[int, Task] = {}
    outcomes = []
    for index, (who, action, label) in enumerate(steps):
        worker = workers[who]
        moment = now + timedelta(seconds=index)
        if action == "resolve":  # QC decides the oldest open review of the job
            review = Review.objects.filter(job=job, status=Review.Status.OPEN).order_by("id")
            review = review.first()
            if review is None:
                outcomes.append("no review")
                continue
            try:
                review_resolve(user=reviewer, review_id=review.pk, label=label, now=moment)
                outcomes.append(f"resolved {review.reason}")
            except ApplicationError as error:
                outcomes.append(f"error {error.code}")
            continue
        task = held.pop(who, None)
        if task is None:
            task = assignment_next(worker=worker, now=moment, rng=rng)
            if not isinstance(task, Task):
                outcomes.append(f"idle {task.reason.value}")
                continue
        try:
            if action == "hold":  # keep the lease while others work
                held[who] = task
                outcomes.append(f"holding {task.external_id}")
            elif action == "submit":
                stored = assignment_submit(
                    worker=worker, assignment_id=task.id, label=label, now=moment
                )
                outcomes.append(f"submitted {stored.label.value}")
            elif action == "release":
                assignment_release(worker=worker, assignment_id=task.id, now=moment)
                outcomes.append("released")
            elif action == "skip":
                assignment_skip(worker=worker, assignment_id=task.id, now=moment)
                outcomes.append("skipped")
            else:  # the lease lapses and a sweep returns its slot
                lease_sweep(job_id=job.pk, now=task.expires_at + timedelta(seconds=1))
                outcomes.append("lapsed")
        except ApplicationError as error:
            outcomes.append(f"error {error.code}")
    return outcomes


def _comparable(meta: dict | None) -> dict | None:
    """result_meta without what names rows (worker ids differ between the twin jobs)."""
    if meta is None:
        return None
    names = ("workers", "expert_worker", "qc_user", "qc_decision")
    meta = {k: v for k, v in meta.items() if k not in names}
    return meta


def _state(job, workers) -> dict:
    """The job's rows with database ids replaced by positions (items, workers)."""
    items = list(Item.objects.filter(job=job).order_by("id"))
    item_at = {item.pk: i for i, item in enumerate(items)}
    worker_at = {worker.pk: i for i, worker in enumerate(workers)}
    return {
        "items": [
            (
                item.state,
                item.n_labels,
                item.n_leases,
                item.labels_needed,
                item.vote_counts,
                item.label,
                None if item.confidence is None else round(item.confidence, 9),
                item.source,
                item.posterior,
                None if item.agreement is None else round(item.agreement, 9),
                _comparable(item.result_meta),
            )
            for item in items
        ],
        "reviews": sorted(
            (item_at[r.item_id], r.reason, r.status) for r in Review.objects.filter(job=job)
        ),
        "assignments": sorted(
            (item_at[a.item_id], worker_at[a.worker_id], a.state, a.is_gold)
            for a in Assignment.objects.filter(job=job)
        ),
        "labels": sorted(
            (item_at[x.item_id], worker_at[x.worker_id], x.value, x.is_gold, x.is_correct)
            for x in Label.objects.filter(job=job)
        ),
        "ledger": sorted(
            (worker_at[e.worker_id], e.kind, Decimal(e.amount))
            for e in LedgerEntry.objects.filter(job=job)
        ),
    }


@pytest.mark.django_db(transaction=True)
@EXAMPLES
@given(
    steps=_steps,
    seed=st.integers(0, 2**16),
    aggregation=st.sampled_from(["mv", "default"]),
    kind=st.sampled_from(["single_choice", "single_choice", "ordinal"]),
)
def test_random_sequences_leave_the_same_rows_on_both_paths(steps, seed, aggregation, kind):
    """Autocommit, as in production: the fast path's two-statement submit and single
    statement lease, against the ORM path with CONCORD_FASTPATH off; majority vote and the
    posterior decision, escalations to the expert, QC reviews and audits included, and a
    job of another kind (an ordinal scale) deciding by its kind."""
    results = {}
    for path, on in (("fast", True), ("orm", False)):
        clear_all_local()
        local_caches_clear()
        with override_settings(CONCORD_FASTPATH=on):
            job, workers, reviewer = _world(f"{path} {seed}", aggregation, kind)
            outcomes = _play(job, workers, reviewer, steps, seed)
            results[path] = (outcomes, _state(job, workers))
    assert results["fast"][0] == results["orm"][0]
    fast, orm = results["fast"][1], results["orm"][1]
    assert fast == orm, _first_difference(fast, orm)


def _first_difference(fast: dict, orm: dict) -> str:
    for table in fast:
        for i, (a, b) in enumerate(zip(fast[table], orm[table], strict=False)):
            if a != b:
                return f"{table}[{i}]: fast {a!r} != orm {b!r}"
        if len(fast[table]) != len(orm[table]):
            return f"{table}: {len(fast[table])} rows (fast) != {len(orm[table])} (orm)"
    return ""
