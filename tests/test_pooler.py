"""Concord behind a real PgBouncer in transaction pooling mode (Debian's `pgbouncer`, started
here): annotators lease and submit concurrently through it with the hot path's statements
sent unprepared (DATABASE_PREPARED_STATEMENTS off, as DATABASE_POOLER=transaction sets),
the pooler's server connections are killed under load, and the books still balance.

`make test` installs pgbouncer (Makefile target `services`); bench/soak.py --pgbouncer runs
the same set-up with gunicorn and Celery for minutes.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import psycopg2
import pytest
from django.db import connection, connections
from rest_framework.test import APIClient

from apps.assignments.models import Label
from apps.assignments.selectors import invariant_violations
from apps.jobs.models import Item
from apps.workforce.models import Worker
from tests.test_faults import _free_port
from tests.workforce.factories import JobFactory, make_items, make_pool

pytestmark = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="PgBouncer pools PostgreSQL connections"
)


@pytest.fixture
def pooler(settings):
    """A PgBouncer (transaction pooling) in front of the test database; Django's connections
    go through it for the test, with server-side prepared statements and cursors off.
    Yields the direct HOST and PORT."""
    binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    assert os.path.exists(binary), "pgbouncer is not installed: run `make services`"
    db = connection.settings_dict
    port = _free_port()
    folder = Path(tempfile.mkdtemp(prefix="concord-pgbouncer-"))
    config = folder / "pgbouncer.ini"
    config.write_text(
        f"[databases]\n{db['NAME']} = host={db['HOST'] or '127.0.0.1'} port={db['PORT'] or 5432}"
        f" dbname={db['NAME']} user={db['USER'] or 'postgres'}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        "auth_type = any\npool_mode = transaction\nmax_client_conn = 200\n"
        "default_pool_size = 4\nignore_startup_parameters = extra_float_digits,options\n"
    )
    folder.chmod(0o755)
    config.chmod(0o644)
    command = [binary, str(config)]
    if os.geteuid() == 0:
        command[1:1] = ["-u", "postgres"]  # PgBouncer refuses to run as root
    process = subprocess.Popen(
        command, stdout=(folder / "log").open("ab"), stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline, (folder / "log").read_text()
            time.sleep(0.1)
    real = {key: db.get(key) for key in ("HOST", "PORT", "DISABLE_SERVER_SIDE_CURSORS")}
    connections.close_all()
    settings.DATABASE_PREPARED_STATEMENTS = False
    db.update(HOST="127.0.0.1", PORT=str(port), DISABLE_SERVER_SIDE_CURSORS=True)
    try:
        yield real
    finally:
        connections.close_all()
        db.update(real)
        process.terminate()
        process.wait(timeout=10)


@pytest.mark.django_db(transaction=True)
def test_annotators_work_through_a_transaction_pooler_and_survive_killed_server_connections(
    pooler, make_actor
):
    job = JobFactory(policy={"min_labels": 2, "max_labels": 3, "gold_rate": 0.0})
    make_items(job, 40, labels_needed=2)
    actors = [make_actor("annotator") for _ in range(6)]
    make_pool(jobs=[job], workers=[Worker.objects.get(user=a.user) for a in actors])
    acknowledged: list[int] = []
    statuses: list[int] = []
    lock = threading.Lock()
    kill_at = threading.Event()

    def annotate(actor) -> None:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {actor.token}")
        try:
            for n in range(12):
                if n == 4:
                    kill_at.set()
                task = client.post("/api/v1/assignments/next/", {}, format="json")
                with lock:
                    statuses.append(task.status_code)
                if task.status_code != 200:
                    continue
                # A submit that failed (503) is sent again, as clients do: it is idempotent,
                # so a label whose commit the failure hid is acknowledged then.
                for _ in range(5):
                    answer = client.post(
                        f"/api/v1/assignments/{task.json()['id']}/submit/",
                        {"label": "cat"},
                        format="json",
                    )
                    with lock:
                        statuses.append(answer.status_code)
                    if answer.status_code != 503:
                        break
                    time.sleep(0.2)
                if answer.status_code == 200:
                    with lock:
                        acknowledged.append(answer.json()["assignment"])
        finally:
            connections.close_all()

    threads = [threading.Thread(target=annotate, args=(actor,)) for actor in actors]
    for thread in threads:
        thread.start()
    # Under load, the pooler's server connections are terminated (as by a database
    # restart): requests fail cleanly (503) or PgBouncer reconnects; none is a 500.
    kill_at.wait(timeout=60)
    killed = _terminate_pooler_backends(pooler)
    for thread in threads:
        thread.join(timeout=120)

    assert killed > 0
    assert 500 not in statuses
    assert set(statuses) <= {200, 204, 503}
    assert len(acknowledged) >= 30
    stored = Label.objects.filter(job=job).values_list("assignment_id", flat=True)
    assert sorted(stored) == sorted(acknowledged)
    assert invariant_violations(job_id=job.pk) == []
    assert not Item.objects.filter(job=job, n_labels__gt=3).exists()


def _terminate_pooler_backends(real: dict) -> int:
    """Terminate the server connections PgBouncer holds, from a session of our own that goes
    to PostgreSQL directly."""
    db = connection.settings_dict
    direct = psycopg2.connect(
        host=real["HOST"] or "127.0.0.1",
        port=int(real["PORT"] or 5432),
        dbname=db["NAME"],
        user=db["USER"] or "postgres",
    )
    direct.autocommit = True
    try:
        with direct.cursor() as cursor:
            cursor.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                "AND backend_type = 'client backend'"
            )
            return cursor.fetchone()[0]
    finally:
        direct.close()
