"""Handing work to Celery by task name, so that services never import the task modules
(workers.tasks_* import the services: the dependency goes one way).

`enqueue("quality.aggregate_job", job_id)` runs the task registered under that name on the
Celery app of this process (workers.celery, loaded by config): queued to the broker, or run
in-process when CELERY_TASK_ALWAYS_EAGER is on (SQLite set-ups, some tests).
"""

from __future__ import annotations

import threading
from typing import Any

from celery import current_app
from django.db import transaction

_LOADED = threading.Event()


def _task(name: str) -> Any:
    if not _LOADED.is_set():
        # The task modules named in the app's `imports` (workers.celery) register the tasks.
        current_app.loader.import_default_modules()
        _LOADED.set()
    return current_app.tasks[name]


def enqueue(name: str, *args: Any, countdown: float | None = None) -> Any:
    """Queue the task `name` with `args` now (the broker, or in-process when eager)."""
    return _task(name).apply_async(args=args, countdown=countdown)


def enqueue_on_commit(name: str, *args: Any) -> None:
    """Queue the task `name` once the current transaction commits (at once outside one)."""
    transaction.on_commit(lambda: enqueue(name, *args))
