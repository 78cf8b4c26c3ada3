"""The Celery application, configured from Django settings (CELERY_* names)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("concord")
app.config_from_object("django.conf:settings", namespace="CELERY")
# Task modules live beside this one (workers/tasks_*.py); list them explicitly so a worker
# never starts without them.
app.conf.imports = (
    "workers.tasks_core",
    "workers.tasks_assignments",
    "workers.tasks_quality",
    "workers.tasks_routing",
    "workers.tasks_reviews",
)
app.conf.beat_schedule = {
    # Cheap check (two counts per model-routed job); retrains only when enough labels settled.
    "routing-check-jobs": {"task": "routing.check_jobs", "schedule": 300.0},
}
