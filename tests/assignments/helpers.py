"""Helpers of the assignment and pipeline tests: a running job with its crowd, a lease."""

from __future__ import annotations

from apps.assignments.leasing import Task
from apps.jobs.models import Job
from apps.pipeline.next import assignment_next
from apps.pipeline.submit import assignment_submit
from apps.workforce.models import Worker
from tests.workforce.factories import JobFactory, make_items, make_pool, make_worker


def setup_job(n_items=3, *, workers=1, policy=None, tier="crowd", **item_kwargs):
    job = JobFactory(
        policy={
            "min_labels": 3,
            "max_labels": 5,
            "gold_rate": 0.0,
            "aggregation": "mv",
            **(policy or {}),
        }
    )
    items = make_items(job, n_items, **item_kwargs)
    crowd = [make_worker(tier=tier) for _ in range(workers)]
    make_pool(jobs=[job], workers=crowd)
    return job, items, crowd


def lease(worker, **kwargs) -> Task:
    task = assignment_next(worker=worker, **kwargs)
    assert isinstance(task, Task), task
    return task


def all_gold_job(n_items: int) -> tuple[Job, Worker]:
    """A job that serves only gold (rate 1.0, one label per item), with `n_items` plain items
    and one gold item answered "cat", and one worker in its pool."""
    job = JobFactory(
        policy={"min_labels": 1, "max_labels": 1, "gold_rate": 1.0, "aggregation": "mv"}
    )
    make_items(job, n_items, gold=["cat"])
    worker = make_worker()
    make_pool(jobs=[job], workers=[worker])
    return job, worker


def lease_and_label(worker, *, job, label) -> int:
    """Lease the worker an item of `job` and answer it; the item's id."""
    task = lease(worker, job_id=job.pk)
    assignment_submit(worker=worker, assignment_id=task.id, label=label)
    return task.item
