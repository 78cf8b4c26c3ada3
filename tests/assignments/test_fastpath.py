"""The PostgreSQL submit statements: what they compute in SQL matches Python, a label
committed while a submit waited for the item's lock is part of that submit's decision, and
the two-statement submit writes only what its decision was made from."""

from __future__ import annotations

import threading

import pytest
from django.db import connection, connections, transaction

from apps.assignments import fastpath
from apps.assignments.leasing import Task
from apps.assignments.models import Assignment, Label
from apps.jobs.models import Item
from apps.pipeline import submit
from apps.pipeline.next import assignment_next
from apps.pipeline.submit import assignment_submit
from apps.quality.matrices import classes_key
from apps.reviews.models import Review
from apps.workforce.models import LedgerEntry, Worker
from tests.workforce.factories import JobFactory, make_items, make_pool, make_worker

pytestmark = pytest.mark.skipif(
    not fastpath.enabled(), reason="the statements are PostgreSQL's hot path (CONCORD_FASTPATH)"
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
    assert "string_agg(c.v, chr(31)" in fastpath._submit_read_sql()


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
    original = submit._follow_ups

    def slow_applied(**kwargs):
        # The first submit holds the item's lock (its label written) for a moment.
        if threading.current_thread().name == "first":
            holding.set()
            threading.Event().wait(0.5)
        return original(**kwargs)

    monkeypatch.setattr(submit, "_follow_ups", slow_applied)
    errors: list[BaseException] = []

    def submit_first():
        try:
            # In a transaction: the locking path (outside one, a plain label takes the
            # two-statement path, which holds no lock while it finishes).
            with transaction.atomic():
                assignment_submit(worker=first, assignment_id=a.id, label="cat")
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)
        finally:
            connections.close_all()

    thread = threading.Thread(target=submit_first, name="first")
    thread.start()
    assert holding.wait(10)
    with transaction.atomic():
        assignment_submit(worker=second, assignment_id=b.id, label="cat")
    thread.join(10)
    assert not errors
    item.refresh_from_db()
    assert item.n_labels == 2
    assert item.n_leases == 0
    assert item.state != Item.State.OPEN, "the second submit decided without the first label"
    assert item.vote_counts == {"cat": 2}


def _lock_calls(monkeypatch) -> list[int]:
    calls: list[int] = []
    original = fastpath.lock_for_submit

    def spy(**kwargs):
        calls.append(kwargs["assignment_id"])
        return original(**kwargs)

    monkeypatch.setattr(fastpath, "lock_for_submit", spy)
    return calls


@pytest.mark.django_db(transaction=True)
def test_a_plain_label_is_read_then_written_and_committed_by_one_statement(monkeypatch):
    locks = _lock_calls(monkeypatch)
    item, (first, a), _ = _two_leases_on_one_item()

    result = assignment_submit(worker=first, assignment_id=a.id, label="cat")

    assert locks == []
    assert not connection.in_atomic_block
    assert result.created
    assert Assignment.objects.get(pk=a.id).state == "submitted"
    assert Label.objects.get(assignment_id=a.id).value == "cat"
    assert LedgerEntry.objects.filter(label_id=result.label.pk).count() == 1
    item.refresh_from_db()
    assert (item.n_labels, item.n_leases, item.vote_counts) == (1, 1, {"cat": 1})
    # Again: the first answer, nothing stored.
    again = assignment_submit(worker=first, assignment_id=a.id, label="dog")
    assert (again.created, again.label.value) == (False, "cat")
    assert Label.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_label_landing_between_the_read_and_the_write_sends_the_submit_to_the_lock(
    monkeypatch,
):
    # The first submit reads the item with no label; before it writes, the second worker's
    # label lands. Its write must then store nothing, and the locking path decide again with
    # both answers (min = max = 2: it decides the item; two newcomers are not confident
    # enough, so QC reviews it, and the locking path opens that review).
    item, (first, a), (second, b) = _two_leases_on_one_item()
    locks = _lock_calls(monkeypatch)
    original = fastpath.read_for_submit

    def read_then_interleave(**kwargs):
        read = original(**kwargs)
        if kwargs["assignment_id"] == a.id:
            assignment_submit(worker=second, assignment_id=b.id, label="cat")
        return read

    monkeypatch.setattr(fastpath, "read_for_submit", read_then_interleave)

    result = assignment_submit(worker=first, assignment_id=a.id, label="cat")

    assert locks == [a.id]
    assert result.created
    item.refresh_from_db()
    assert (item.n_labels, item.n_leases, item.vote_counts) == (2, 0, {"cat": 2})
    assert item.state == Item.State.REVIEW, "decided without the label that came in between"

    assert Review.objects.filter(item=item).count() == 1

    assert Label.objects.filter(item=item).count() == 2
    assert LedgerEntry.objects.filter(job=item.job_id).count() == 2


@pytest.mark.django_db(transaction=True)
def test_labels_with_follow_up_writes_take_the_locking_path(monkeypatch):
    # A gold answer is counted (exposure, the worker's rules) in the label's transaction.
    job = JobFactory(policy={"min_labels": 1, "max_labels": 1, "gold_rate": 1.0})
    make_items(job, 1, gold=["cat"])
    worker = make_worker()
    make_pool(jobs=[job], workers=[worker])
    locks = _lock_calls(monkeypatch)
    task = assignment_next(worker=worker)
    assert isinstance(task, Task)

    assignment_submit(worker=worker, assignment_id=task.id, label="cat")

    assert locks == [task.id]


@pytest.mark.django_db(transaction=True)
def test_a_label_sending_its_item_to_review_is_escalated_once_under_the_lock(monkeypatch):
    # The two-statement path decides without the escalation policy: a label that sends the
    # item to review takes the locking path, which decides again and asks the policy once
    # (here an expert in the job's pool has not labeled the item: it goes to the expert).

    item, (first, a), (second, b) = _two_leases_on_one_item()
    expert = make_worker(tier=Worker.Tier.EXPERT)
    make_pool(jobs=[item.job], workers=[expert])
    asked: list[int | None] = []
    original = submit.expert_available

    def spy(**kwargs):
        asked.append(kwargs.get("item_id"))
        return original(**kwargs)

    monkeypatch.setattr(submit, "expert_available", spy)
    assignment_submit(worker=first, assignment_id=a.id, label="cat")
    locks = _lock_calls(monkeypatch)

    assignment_submit(worker=second, assignment_id=b.id, label="dog")

    assert locks == [b.id]
    assert asked == [item.pk]
    item.refresh_from_db()
    assert item.state == Item.State.EXPERT
    assert item.labels_needed == 3  # one more slot, for the expert
