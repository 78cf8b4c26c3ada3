"""Faults the deployment must survive: Redis away (cache and broker), PostgreSQL away, an
interrupted upload, a Celery worker killed in the middle of an aggregation.

Nothing shared is stopped: Redis and PostgreSQL "going away" are a throwaway redis-server of
the test's own, stopped and started again, and a database connection pointed at a port
nothing listens on.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import redis
from django.core.management import call_command
from django.db import connection

from apps.accounts.models import Organization
from apps.assignments.models import Label
from apps.assignments.selectors import invariant_violations
from apps.jobs.models import Item, Job
from apps.quality.models import AggregationRun
from apps.webhooks.models import WebhookDelivery
from apps.webhooks.services import webhook_endpoint_create
from apps.workforce.models import Worker
from tests.reviews.factories import label_items
from tests.test_celery_worker import REDIS_URL, _test_database_url
from tests.webhooks.receiver import Receiver
from tests.workforce.factories import JobFactory, make_items, make_pool
from workers.celery import app
from workers.tasks_quality import aggregate_job, aggregate_running_jobs
from workers.tasks_webhooks import dispatch_due

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class OwnRedis:
    """A redis-server of this test alone, on a free loopback port: stop() and start() it."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
            + ["--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1)
        for _ in range(100):
            try:
                client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("own redis-server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None


@pytest.fixture
def own_redis(settings):
    server = OwnRedis()
    server.start()
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": server.url,
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
    }
    settings.REDIS_URL = server.url
    yield server
    server.stop()


@pytest.fixture
def celery_broker():
    """Point the Celery app at a broker for real (not eager); restored afterwards."""

    app._pool = None

    def use(url: str) -> None:
        # The Django settings' names (CELERY_*) win over app.conf's own once both are set.
        app.conf.CELERY_TASK_ALWAYS_EAGER = False
        app.conf.broker_write_url = url
        app._pool = None

    def eager() -> None:
        app.conf.CELERY_TASK_ALWAYS_EAGER = True

    yield type("Broker", (), {"use": staticmethod(use), "eager": staticmethod(eager)})
    app.conf.CELERY_TASK_ALWAYS_EAGER = True
    app.conf.broker_write_url = None
    app._pool = None


def _label_once(annotator) -> int:
    task = annotator.client.post("/api/v1/assignments/next/", {}, format="json")
    assert task.status_code == 200, task.content
    body = task.json()
    done = annotator.client.post(
        f"/api/v1/assignments/{body['id']}/submit/", {"label": body["classes"][0]}, format="json"
    )
    assert done.status_code == 200, done.content
    return body["id"]


@pytest.mark.django_db(transaction=True)
def test_annotators_keep_working_while_redis_is_away_and_queued_work_catches_up(
    own_redis, celery_broker, settings, make_actor, client
):
    # Given a running job, four annotators, and a client with a webhook endpoint
    settings.WEBHOOK_ALLOW_PRIVATE_URLS = True
    receiver = Receiver().start()
    client_actor = make_actor("client")
    org = Organization.objects.get(name=client_actor.org_name)
    job = JobFactory(
        organization=org,
        status=Job.Status.RUNNING,
        policy={"min_labels": 2, "max_labels": 2, "gold_rate": 0.0, "reaggregate_every": 2},
    )
    make_items(job, 5)  # 10 label slots: the 9 labels below complete 4 items
    annotators = [make_actor("annotator") for _ in range(4)]
    make_pool(jobs=[job], workers=[Worker.objects.get(user=a.user) for a in annotators])
    endpoint = webhook_endpoint_create(
        organization=org, created_by=None, url=receiver.url, events=["job.paused"]
    )
    celery_broker.use(own_redis.url)
    try:
        _label_once(annotators[0])  # warm: caches filled while Redis is up

        # When Redis (cache and broker) goes away
        own_redis.stop()
        health = client.get("/healthz")
        assert health.status_code == 200
        assert health.json()["status"] == "degraded"
        assert health.json()["checks"]["database"] == "ok"
        assert health.json()["checks"]["cache"].startswith("error")
        assert health.json()["checks"]["broker"].startswith("error")

        # Then annotators still pull and submit
        for annotator in annotators:
            for _ in range(2):
                _label_once(annotator)
        # and a client's change is recorded, its webhook left pending for later
        paused = client_actor.client.post(f"/api/v1/jobs/{job.pk}/pause/")
        assert paused.status_code == 200, paused.content
        delivery = WebhookDelivery.objects.get(endpoint=endpoint)
        assert (delivery.status, delivery.attempts) == ("pending", 0)
        assert client_actor.client.post(f"/api/v1/jobs/{job.pk}/launch/").status_code == 200

        # When Redis returns, the beat's sweeps catch up
        own_redis.start()
        assert client.get("/healthz").json()["status"] == "ok"
        celery_broker.eager()

        assert dispatch_due() == 1
        assert aggregate_running_jobs() == 1
    finally:
        receiver.stop()

    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("delivered", 1)
    assert [r.headers["Concord-Event"] for r in receiver.requests] == ["job.paused"]
    assert Label.objects.filter(item__job=job).count() == 9
    run = AggregationRun.objects.filter(job=job).latest("id")
    assert run.n_labels == 9
    assert invariant_violations(job_id=job.pk) == []
    assert Item.objects.filter(job=job, n_labels=2).exclude(state=Item.State.OPEN).count() == 4


# --------------------------------------------------------------------------- uploads


def _jsonl(n: int) -> bytes:
    return b"".join(
        b'{"external_id": "u-%d", "payload": {"text": "item %d"}}\n' % (i, i) for i in range(n)
    )


@pytest.mark.parametrize("how", ["body-ends-early", "connection-reset"])
@pytest.mark.django_db(transaction=True)
def test_an_interrupted_upload_stores_nothing(live_server, make_actor, how):
    # Given a client's job and an upload of 6,000 rows (three write batches)
    client_actor = make_actor("client")
    job = JobFactory(organization=Organization.objects.get(name=client_actor.org_name))
    body = _jsonl(6000)
    host, port = live_server.url.removeprefix("http://").split(":")
    head = (
        f"POST /api/v1/jobs/{job.pk}/items/ HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: Token {client_actor.token}\r\n"
        f"Content-Type: application/x-ndjson\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()

    # When the client goes away after sending two thirds of it
    sock = socket.create_connection((host, int(port)))
    sock.sendall(head + body[: len(body) * 2 // 3])
    time.sleep(0.3)  # the server is reading and writing rows by now
    if how == "connection-reset":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()
    else:
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(30)
        answer = b""
        while chunk := sock.recv(65536):  # the whole answer: the server closes after it
            answer += chunk
        sock.close()
        assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
        assert b'"parse_error"' in answer

    # Then no row of it was stored
    time.sleep(0.5)
    assert Item.objects.filter(job=job).count() == 0
    # and the whole upload, sent again, is stored once
    response = client_actor.client.post(
        f"{live_server.url}/api/v1/jobs/{job.pk}/items/",
        body,
        content_type="application/x-ndjson",
    )
    assert response.status_code == 201, response.content
    assert response.json()["created"] == 6000
    assert Item.objects.filter(job=job).count() == 6000


# --------------------------------------------------------------------------- PostgreSQL


@pytest.mark.django_db(transaction=True)
def test_requests_answer_503_while_the_database_is_away_and_succeed_after(make_actor, client):
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL only: SQLite cannot go away")
    client_actor = make_actor("client")
    annotator = make_actor("annotator")
    assert client_actor.client.get("/api/v1/jobs/").status_code == 200
    real_port = connection.settings_dict["PORT"]

    # The server restarts under the open connection: it is terminated from another session
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (pid,) = cursor.fetchone()
    other = connection.copy()
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
    finally:
        other.close()
    response = client_actor.client.get("/api/v1/jobs/")
    assert response.status_code == 503, response.content
    assert response.json()["error"]["code"] == "retry"
    assert response["Retry-After"] == "5"
    # The broken connection was closed: the next request reconnects
    assert client_actor.client.get("/api/v1/jobs/").status_code == 200

    # Nothing listens where the database was: every kind of request fails cleanly
    connection.close()
    connection.settings_dict["PORT"] = str(_free_port())
    try:
        for response in (
            client_actor.client.get("/api/v1/jobs/"),
            client_actor.client.post("/api/v1/jobs/", {"name": "x"}, format="json"),
            annotator.client.post("/api/v1/assignments/next/", {}, format="json"),
            annotator.client.post("/api/v1/assignments/1/submit/", {"label": "a"}, format="json"),
        ):
            assert response.status_code == 503, response.content
            assert response.json()["error"]["code"] == "retry"
        page = client.post("/login/", {"token": "x"})
        assert page.status_code == 503
        assert page["Content-Type"].startswith("text/plain")
        health = client.get("/healthz")
        assert health.status_code == 503
        assert health.json()["status"] == "unavailable"
    finally:
        connection.close()
        connection.settings_dict["PORT"] = real_port

    # When it is back, requests succeed
    assert client_actor.client.get("/api/v1/jobs/").status_code == 200
    assert client.get("/healthz").status_code == 200


# --------------------------------------------------------------------------- Celery


def _celery_worker(queue: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "workers", "worker", "--pool=solo"]
        + ["--without-gossip", "--without-mingle", "--loglevel=WARNING", "-Q", queue],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def _wait_for(what: str, check, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.celery_worker
@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_aggregation_leaves_the_task_to_run_again(celery_broker):
    """SIGKILL of the Celery worker while it writes a job's results: the message was not
    acknowledged (acks_late), so once the visibility timeout passes another worker runs the
    aggregation again, and the results equal a fresh aggregation of the same labels."""

    if connection.vendor != "postgresql":
        pytest.skip("the lock that holds the worker mid-write is PostgreSQL's")
    redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()
    # Given a job with labels from five workers, some of them disagreeing
    job = JobFactory(
        label_schema={"kind": "single_choice", "classes": ["cat", "dog"]},
        policy={
            "min_labels": 5,
            "max_labels": 5,
            "gold_rate": 0.0,
            "aggregation": "ds",
            "reaggregate_every": 0,
            "target_confidence": 0.6,
        },
    )
    make_items(job, 12)
    votes = [["cat", "dog", "cat"] * 4, ["cat"] * 12, ["dog", "cat"] * 6]
    label_items(job, [*votes, ["cat", "dog", "dog"] * 4, ["cat"] * 12])
    n_labels = Label.objects.filter(item__job=job).count()
    assert n_labels == 60
    # Results the run must rewrite (a stale posterior on every item)
    Item.objects.filter(job=job).update(posterior=[0.5, 0.5])

    queue = f"test-kill-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "REDIS_URL": REDIS_URL,
        "DATABASE_URL": _test_database_url(),
        "CELERY_QUEUE": queue,
        "CELERY_VISIBILITY_TIMEOUT": "3",
        "SECRET_KEY": "worker-test",
    }
    # A session of the test holds the item table so the run blocks writing its results
    blocker = connection.copy()
    blocker.connect()
    blocker.set_autocommit(False)
    with blocker.cursor() as cursor:
        cursor.execute("LOCK TABLE jobs_item IN SHARE MODE")
    first = _celery_worker(queue, env)
    second = None
    try:
        celery_broker.use(REDIS_URL)
        aggregate_job.apply_async(args=[job.pk], queue=queue)

        def blocked_backend():
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock' AND query ILIKE 'WITH v AS (SELECT * FROM unnest%%'"
                )
                row = cursor.fetchone()
            return row[0] if row else None

        # When the worker is killed while it is writing the results
        backend = _wait_for("the run to block on its result write", blocked_backend, 120)
        assert AggregationRun.objects.filter(job=job).count() == 1  # committed before
        first.kill()
        first.wait(timeout=10)
        # PostgreSQL notices a dead client only when it next talks to it: end its session
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [backend])
        blocker.rollback()
        assert Item.objects.filter(job=job, posterior=[0.5, 0.5]).count() == 12  # none written

        # Then a worker started once the visibility timeout (3 s here) has passed takes the
        # unacknowledged task back (kombu restores such messages when a worker starts, and
        # every 100 s after) and runs it again
        time.sleep(3.5)
        second = _celery_worker(queue, env)
        _wait_for(
            "the task to run again",
            lambda: AggregationRun.objects.filter(job=job, seconds__gt=0).exists(),
            90,
        )
    finally:
        blocker.close()
        for worker in (first, second):
            if worker is not None and worker.poll() is None:
                worker.terminate()
                try:
                    worker.communicate(timeout=20)
                except subprocess.TimeoutExpired:
                    worker.kill()

    runs = list(AggregationRun.objects.filter(job=job).order_by("id"))
    assert len(runs) == 2
    assert runs[-1].n_labels == n_labels
    # The results equal a fresh aggregation of the same labels, and every invariant holds
    call_command("checkinvariants", job=job.pk)
