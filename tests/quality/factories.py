"""A job with a crowd in a pool, and one label through the engine (next, then submit)."""

from __future__ import annotations

from apps.assignments.leasing import Task
from apps.pipeline.next import assignment_next
from apps.pipeline.submit import assignment_submit
from apps.workforce.models import Worker
from tests.workforce.factories import JobFactory, make_items, make_pool, make_worker

CLASSES = ["cat", "dog", "bird"]


def crowd_job(n_items=3, *, workers=3, policy=None, gold=()):
    job = JobFactory(
        policy={
            "min_labels": 2,
            "max_labels": 4,
            "gold_rate": 0.0,
            "target_confidence": 0.9,
            **(policy or {}),
        }
    )
    items = make_items(job, n_items, gold=gold)
    crowd = [make_worker() for _ in range(workers)]
    make_pool(jobs=[job], workers=crowd)
    return job, items, crowd


def crowd_label(worker: Worker, value: str, **kwargs) -> Task:
    task = assignment_next(worker=worker, **kwargs)
    assert isinstance(task, Task), task
    assignment_submit(worker=worker, assignment_id=task.id, label=value)
    return task
