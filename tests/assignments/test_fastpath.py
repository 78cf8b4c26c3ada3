"""The PostgreSQL submit statements: what they compute in SQL matches Python, and a label
committed while a submit waited for the item's lock is part of that submit's decision."""

from __future__ import annotations

import threading

import pytest
from django.db import connection, connections

from apps.assignments import fastpath, services
from apps.assignments.services import Task, assignment_next, assignment_submit
from apps.jobs.models import Item
from apps.quality.services import classes_key
from tests.workforce.factories import JobFactory, make_items, make_pool, make_worker

pytestmark = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="the statements are PostgreSQL's hot path"
)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "classes", [["cat", "dog"], ["a, b", "ç'est", "日本", 'x"y'], ["only"], []]
)
def test_the_lock_statement_computes_the_classes_key_as_python_does(classes):
    job = JobFactory(label_schema={"kind": "single_choice", "classes": classes})
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT left(encode(sha256(convert_to(coalesce(string_agg(c.v, chr(31) "
            "ORDER BY c.n), ''), 'UTF8')), 'hex'), 32) FROM jobs_job j, "
            "jsonb_array_elements_text(j.label_schema -> 'classes') WITH ORDINALITY c(v, n) "
            "WHERE j.id = %s",
            [job.pk],
        )
        (key,) = cursor.fetchone()
    assert key == classes_key(classes)
    # The statement itself carries the same expression.
    assert "string_agg(c.v, chr(31)" in fastpath._lock_sql()


def _two_leases_on_one_item():
    """An item needing exactly 2 labels (min = max = 2), leased to two workers."""
    job = JobFactory(policy={"min_labels": 2, "max_labels": 2, "gold_rate": 0.0})
    (item,) = make_items(job, 1, labels_needed=2)
    leases = []
    for worker in (make_worker(), make_worker()):
        make_pool(jobs=[job], workers=[worker])
        task = assignment_next(worker=worker)
        assert isinstance(task, Task)
        leases.append((worker, task))
    return item, leases[0], leases[1]


@pytest.mark.django_db
def test_answers_read_with_the_lock_are_re_read_when_they_lag_the_item():
    item, (first, a), (second, b) = _two_leases_on_one_item()
    assignment_submit(worker=first, assignment_id=a.id, label="cat")
    # A count that disagrees with the answers the statement read forces the re-read.
    Item.objects.filter(pk=item.pk).update(n_labels=5, labels_needed=10)
    locked = fastpath.lock_for_submit(
        assignment_id=b.id, worker_id=second.pk, classes_key=classes_key
    )
    assert locked is not None
    assert [(w, v) for w, v, _ in locked.answers.answers] == [(first.pk, "cat")]


@pytest.mark.django_db(transaction=True)
def test_a_label_committed_while_a_submit_waits_for_the_item_lock_is_counted(monkeypatch):
    # With both answers the second submit decides the item; had it missed the first (its
    # statement's snapshot predates that commit) it would keep it open.
    item, (first, a), (second, b) = _two_leases_on_one_item()

    holding = threading.Event()
    original = services.item_label_applied

    def slow_applied(**kwargs):
        # The first submit holds the item's lock (its label written) for a moment.
        if threading.current_thread().name == "first":
            holding.set()
            threading.Event().wait(0.5)
        return original(**kwargs)

    monkeypatch.setattr(services, "item_label_applied", slow_applied)
    errors: list[BaseException] = []

    def submit_first():
        try:
            assignment_submit(worker=first, assignment_id=a.id, label="cat")
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)
        finally:
            connections.close_all()

    thread = threading.Thread(target=submit_first, name="first")
    thread.start()
    assert holding.wait(10)
    assignment_submit(worker=second, assignment_id=b.id, label="cat")
    thread.join(10)
    assert not errors
    item.refresh_from_db()
    assert item.n_labels == 2
    assert item.n_leases == 0
    assert item.state != Item.State.OPEN, "the second submit decided without the first label"
    assert item.vote_counts == {"cat": 2}
