"""Many annotators at once, each on its own thread and database connection."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter

import pytest
from django.core.management import call_command
from django.db import connection

from apps.assignments.leasing import Idle, IdleReason, Task
from apps.assignments.models import Assignment, Label
from apps.assignments.records import assignment_release
from apps.jobs.models import Item
from apps.pipeline.next import assignment_next
from apps.pipeline.submit import assignment_submit
from apps.quality.aggregation import job_aggregate
from tests.workforce.factories import JobFactory, make_items, make_pool, make_worker

N_WORKERS = 20
N_ITEMS = 300
REDUNDANCY = 3


_stats_lock = threading.Lock()


def _count(stats: Counter, key: str) -> None:
    with _stats_lock:
        stats[key] += 1


def _annotate(worker, seed: int, errors: list, stats: Counter, deadline: float) -> None:
    rng = random.Random(seed)
    try:
        while time.monotonic() < deadline:
            result = assignment_next(worker=worker, rng=rng)
            if isinstance(result, Idle):
                if result.reason == IdleReason.ALL_LEASED:
                    time.sleep(0.005)
                    continue
                _count(stats, result.reason.value)
                return
            assert isinstance(result, Task)
            # Every 15th task is handed back, so releases race with leases and submits.
            if rng.random() < 1 / 15:
                assignment_release(worker=worker, assignment_id=result.id)
                _count(stats, "released")
                continue
            assignment_submit(
                worker=worker, assignment_id=result.id, label=rng.choice(["yes", "no"])
            )
            _count(stats, "submitted")
        errors.append(f"worker {worker.pk} ran out of time")
    except Exception as exc:  # noqa: BLE001 - the main thread reports every thread's failure
        errors.append(f"worker {worker.pk}: {exc!r}")
    finally:
        connection.close()


@pytest.mark.django_db(transaction=True)
def test_concurrent_annotators_fill_every_item_exactly():
    job = JobFactory(
        label_schema={"kind": "single_choice", "classes": ["yes", "no"]},
        # Two classes and three labels never tie, so every item ends with exactly three.
        policy={
            "min_labels": REDUNDANCY,
            "max_labels": REDUNDANCY,
            "gold_rate": 0.0,
            "aggregation": "mv",
        },
    )
    make_items(job, N_ITEMS)
    workers = [make_worker() for _ in range(N_WORKERS)]
    make_pool(jobs=[job], workers=workers)
    errors: list[str] = []
    stats: Counter = Counter()
    deadline = time.monotonic() + 240
    threads = [
        threading.Thread(target=_annotate, args=(worker, i, errors, stats, deadline))
        for i, worker in enumerate(workers)
    ]

    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert stats["submitted"] == N_ITEMS * REDUNDANCY
    # Each annotator stops on its first real idle: nothing left for it, or the job completed.
    assert stats["exhausted"] + stats["no_open_job"] == N_WORKERS
    assert Label.objects.count() == N_ITEMS * REDUNDANCY
    per_item = Counter(Label.objects.values_list("item_id", flat=True))
    assert set(per_item.values()) == {REDUNDANCY}
    assert len(per_item) == N_ITEMS
    distinct_pairs = set(Label.objects.values_list("item_id", "worker_id"))
    assert len(distinct_pairs) == N_ITEMS * REDUNDANCY
    assert Assignment.objects.filter(state="leased").count() == 0
    assert Assignment.objects.filter(state="released").count() == stats["released"]
    assert list(
        Item.objects.order_by().values_list("state", "n_labels", "n_leases").distinct()
    ) == [("settled", REDUNDANCY, 0)]
    job.refresh_from_db()
    assert job.status == "completed"
    call_command("checkinvariants")


def _aggregate_until(job_id: int, done: threading.Event, errors: list, runs: Counter) -> None:
    try:
        while not done.is_set():
            job_aggregate(job_id=job_id, method="ds")
            _count(runs, "runs")
    except Exception as exc:  # noqa: BLE001 - reported by the main thread
        errors.append(f"aggregation: {exc!r}")
    finally:
        connection.close()


@pytest.mark.django_db(transaction=True)
def test_re_aggregation_racing_annotators_and_gold_leaves_no_empty_result_and_no_deadlock():
    """F7: job re-aggregation's write-back overwrote labels that submits had just written
    (settled items with label "") and deadlocked with submits and gold leases (500s). Here
    annotators with gold mixed in at rate 0.5 race a re-aggregation running back to back."""
    job = JobFactory(
        label_schema={"kind": "single_choice", "classes": ["yes", "no"]},
        policy={
            "min_labels": REDUNDANCY,
            "max_labels": REDUNDANCY,
            "gold_rate": 0.5,
            "gold_max_exposures": 1000,
            # Answers here are random: no worker is suspended for their gold accuracy.
            "gold_min_accuracy": 0.0,
            "aggregation": "ds",
            "reaggregate_every": 0,
        },
    )
    make_items(job, 120, gold=["yes", "no"] * 10)
    workers = [make_worker() for _ in range(8)]
    make_pool(jobs=[job], workers=workers)
    errors: list[str] = []
    stats: Counter = Counter()
    runs: Counter = Counter()
    done = threading.Event()
    deadline = time.monotonic() + 240
    aggregator = threading.Thread(target=_aggregate_until, args=(job.pk, done, errors, runs))
    threads = [
        threading.Thread(target=_annotate, args=(worker, i, errors, stats, deadline))
        for i, worker in enumerate(workers)
    ]

    aggregator.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    done.set()
    aggregator.join()

    assert errors == []
    assert runs["runs"] >= 2
    real = Item.objects.filter(job=job, gold_label__isnull=True)
    # Every item got its three labels and was decided: settled, or disputed and in review.
    assert set(real.values_list("state", flat=True)) <= {"settled", "review"}
    settled = real.filter(state="settled")
    assert settled.exists()
    assert not settled.filter(label__in=["", None]).exists()
    assert set(settled.values_list("label", flat=True)) <= {"yes", "no"}
    call_command("checkinvariants", job=job.pk)
