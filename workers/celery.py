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
    "workers.tasks_webhooks",
    "workers.tasks_reports",
)
# `celery -A workers beat` runs these; every task is safe to run twice or concurrently.
app.conf.beat_schedule = {
    # Lapsed leases return their slots (the engine also sweeps lazily when work is asked for).
    "assignments-lease-sweep": {"task": "concord.assignments.lease_sweep", "schedule": 60.0},
    # Full warm-started re-aggregation of running jobs (also queued after every N labels).
    "quality-aggregate-running-jobs": {
        "task": "quality.aggregate_running_jobs",
        "schedule": 600.0,
    },
    # Old reviews rise in the QC queue; experts who sat on an item too long hand it to QC.
    "reviews-reprioritize": {"task": "concord.reviews.reprioritize", "schedule": 600.0},
    "reviews-expert-timeouts": {"task": "concord.reviews.expert_timeouts", "schedule": 3600.0},
    # Cheap check (two counts per model-routed job); retrains only when enough labels settled.
    "routing-check-jobs": {"task": "routing.check_jobs", "schedule": 300.0},
    # Webhook deliveries whose enqueue or retry timer was lost (broker down, killed worker).
    "webhooks-dispatch-due": {"task": "concord.webhooks.dispatch_due", "schedule": 60.0},
    # The dashboards' hourly rollups: the hours of the labels that came since the last run
    # (late ones included) are rolled again (apps.reports.rollups).
    "reports-rollup": {
        "task": "concord.reports.rollup",
        "schedule": float(os.environ.get("ROLLUP_EVERY_SECONDS", "60")),
    },
    # Newly settled items, batched into item.finalized for the endpoints that opted in.
    "webhooks-items-finalized": {
        "task": "concord.webhooks.items_finalized",
        "schedule": float(os.environ.get("WEBHOOK_FINALIZED_EVERY_SECONDS", "30")),
    },
}
