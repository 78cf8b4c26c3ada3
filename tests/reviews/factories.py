"""Helpers for review tests: jobs whose items get labeled through the real engine."""

from __future__ import annotations

from collections.abc import Sequence

from apps.assignments.leasing import Task
from apps.jobs.models import Item, Job
from apps.pipeline.next import assignment_next
from apps.pipeline.submit import assignment_submit
from apps.workforce.models import Worker
from tests.workforce.factories import JobFactory, make_items, make_pool, make_worker


def review_job(*, n_items: int = 1, organization=None, **policy) -> Job:
    """A running job decided by majority vote, two labels per item, no gold draws."""
    kwargs = {"organization": organization} if organization is not None else {}
    job = JobFactory(
        policy={
            "min_labels": 2,
            "max_labels": 2,
            "gold_rate": 0.0,
            "aggregation": "mv",
            **policy,
        },
        **kwargs,
    )
    make_items(job, n_items)
    return job


def crowd(job: Job, n: int, *, tier: str = Worker.Tier.CROWD) -> list[Worker]:
    workers = [make_worker(tier=tier) for _ in range(n)]
    make_pool(jobs=[job], workers=workers)
    return workers


def label(worker: Worker, value: str, *, job: Job | None = None):
    task = assignment_next(worker=worker, job_id=job.pk if job else None)
    assert isinstance(task, Task), task
    return assignment_submit(worker=worker, assignment_id=task.id, label=value).label


def label_items(job: Job, votes: Sequence[Sequence[str]]) -> list[Worker]:
    """Label the job's items in id order: votes[i] holds the values worker i gives, item by
    item (each worker takes the next item the engine hands it)."""
    workers = crowd(job, len(votes))
    for worker, values in zip(workers, votes, strict=True):
        for value in values:
            label(worker, value, job=job)
    return workers


def items(job: Job) -> list[Item]:
    return list(Item.objects.filter(job=job, gold_label__isnull=True).order_by("id"))
