"""A real Celery worker process, on the real Redis, runs a task against the test database."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import redis
from celery.result import EagerResult
from django.db import connection

from apps.jobs.models import Item, Job
from workers.celery import app
from workers.tasks_core import job_summary

ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/15"


def _test_database_url() -> str:
    """The URL of the database this test session created, for the worker process."""
    s = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{s['NAME']}"
    user = s.get("USER") or "postgres"
    password = f":{s['PASSWORD']}" if s.get("PASSWORD") else ""
    return f"postgres://{user}{password}@{s.get('HOST') or '127.0.0.1'}:{s.get('PORT') or 5432}/{s['NAME']}"


@pytest.mark.celery_worker
@pytest.mark.django_db(transaction=True)
def test_real_worker_runs_a_task_against_redis(make_actor):
    # Fail, never skip, when Redis is missing: CI must run this test for real.
    redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()
    org = make_actor("client").user.memberships.get().organization
    job = Job.objects.create(organization=org, name="w", label_schema={"classes": ["a", "b"]})
    Item.objects.bulk_create(Item(job=job, external_id=str(i)) for i in range(7))
    queue = f"test-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "REDIS_URL": REDIS_URL,
        "DATABASE_URL": _test_database_url(),
        "CELERY_QUEUE": queue,
        "SECRET_KEY": "worker-test",
    }
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "workers",
            "worker",
            "--pool=solo",
            "--without-gossip",
            "--without-mingle",
            "--loglevel=WARNING",
            "-Q",
            queue,
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )

    # The Django settings' namespaced names win over Celery's own: set those (and the
    # broker the producer writes to), or the task quietly runs in this process.
    app.conf.CELERY_TASK_ALWAYS_EAGER = False
    app.conf.broker_write_url = REDIS_URL
    app.conf.result_backend = REDIS_URL
    try:
        result = job_summary.apply_async(args=[job.pk], queue=queue)
        # Earlier in-process (eager) tasks leave Celery thinking it runs inside a task.
        summary = result.get(timeout=90, disable_sync_subtasks=False)
        # Proof that the worker process ran it: an eager (in-process) run has no worker.
        assert not isinstance(result, EagerResult)
        assert result.state == "SUCCESS"
    finally:
        app.conf.CELERY_TASK_ALWAYS_EAGER = True
        app.conf.broker_write_url = None
        worker.terminate()
        try:
            output = worker.communicate(timeout=20)[0].decode(errors="replace")
        except subprocess.TimeoutExpired:
            worker.kill()
            output = ""
    assert summary == {
        "job": job.pk,
        "status": "draft",
        "items": {"open": 7, "expert": 0, "review": 0, "settled": 0},
    }, output
