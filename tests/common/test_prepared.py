"""Prepared statements, and the same statements unprepared for a transaction pooler."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection

from apps.common.prepared import _PREPARED, Prepared
from apps.workforce.models import Worker
from tests.workforce.factories import JobFactory, make_items, make_pool

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_session():
    """No statement prepared in this session yet (earlier tests share the connection)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("DEALLOCATE ALL")
        _PREPARED.pop(connection.connection, None)


def _statement() -> Prepared:
    return Prepared(
        "concord_test_echo",
        "SELECT %(n)s + 1, %(when)s, %(ids)s, %(n)s",
        {"n": "bigint", "when": "timestamptz", "ids": "bigint[]"},
    )


def _session_statements() -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT name FROM pg_prepared_statements")
        return {row[0] for row in cursor.fetchall()}


@pytest.mark.parametrize("prepared", [True, False], ids=["prepared", "plain"])
def test_both_ways_give_the_same_rows(settings, prepared):
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL only")
    settings.DATABASE_PREPARED_STATEMENTS = prepared
    statement = _statement()
    when = "2026-12-04T08:00:00+00:00"
    with connection.cursor() as cursor:
        statement.execute(cursor, {"n": 41, "when": when, "ids": [3, 1]})
        row = cursor.fetchone()
    assert (row[0], row[1].isoformat(), row[2], row[3]) == (42, when, [3, 1], 41)
    assert ("concord_test_echo" in _session_statements()) is prepared


def test_a_transaction_pooler_setting_turns_them_off():
    code = (
        "import django, os; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'config.settings');"
        "django.setup(); from django.conf import settings as s;"
        "print(s.DATABASE_PREPARED_STATEMENTS, "
        "s.DATABASES['default'].get('DISABLE_SERVER_SIDE_CURSORS', False))"
    )
    env = {**os.environ, "DATABASE_POOLER": "transaction", "DEBUG": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out == ["False", "True"]


def test_annotators_label_with_plain_statements(settings, make_actor):
    """The hot path (token, lease, answers, record) runs unprepared too."""

    settings.DATABASE_PREPARED_STATEMENTS = False
    job = JobFactory(status="running", policy={"min_labels": 1, "max_labels": 1, "gold_rate": 0})
    make_items(job, 3)
    annotator = make_actor("annotator")
    make_pool(jobs=[job], workers=[Worker.objects.get(user=annotator.user)])
    for _ in range(3):
        task = annotator.client.post("/api/v1/assignments/next/", {}, format="json")
        assert task.status_code == 200, task.content
        done = annotator.client.post(
            f"/api/v1/assignments/{task.json()['id']}/submit/",
            {"label": task.json()["classes"][0]},
            format="json",
        )
        assert done.status_code == 200, done.content
    assert annotator.client.post("/api/v1/assignments/next/").status_code == 204
    if connection.vendor == "postgresql":
        assert not {s for s in _session_statements() if s.startswith("concord_")}
