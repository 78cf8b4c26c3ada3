"""The gold lifecycle: picking gold per worker, retirement, the adaptive rate, the gold API."""

from __future__ import annotations

import random
import threading
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from apps.assignments.leasing import Task
from apps.assignments.models import Assignment, Label
from apps.jobs.models import Item, Job
from apps.pipeline.next import assignment_next
from apps.pipeline.submit import assignment_submit
from apps.quality.gold import (
    gold_pick,
    gold_rate_ceiling,
    gold_rate_for,
    gold_record_answer,
    gold_record_shown,
)
from apps.quality.models import GoldExposure
from apps.workforce.models import Worker
from tests.quality.factories import crowd_job
from tests.workforce.factories import make_worker

pytestmark = pytest.mark.django_db
CLASSES = ["cat", "dog", "bird"]


def _job(n_items=2, *, workers=1, policy=None, gold=()):
    """The quality tests' job, with some gold mixed in by default."""
    return crowd_job(
        n_items, workers=workers, policy={"gold_rate": 0.1, **(policy or {})}, gold=gold
    )


def _gold(items: list[Item]) -> list[Item]:
    return [item for item in items if item.gold_label is not None]


def _assign(worker: Worker, item: Item) -> Assignment:
    now = timezone.now()
    return Assignment.objects.create(
        item_id=item.pk,
        job_id=item.job_id,
        worker=worker,
        is_gold=item.gold_label is not None,
        leased_at=now,
        expires_at=now + timedelta(minutes=10),
    )


def _answer(worker: Worker, item: Item, value: str | None = None) -> Label:
    """A submitted answer on a gold item (correct unless another value is given)."""
    assignment = _assign(worker, item)
    Assignment.objects.filter(pk=assignment.pk).update(
        state=Assignment.State.SUBMITTED, finished_at=timezone.now()
    )
    value = value or item.gold_label
    return Label.objects.create(
        assignment=assignment,
        item_id=item.pk,
        job_id=item.job_id,
        worker=worker,
        value=value,
        tier=worker.tier,
        is_gold=True,
        is_correct=value == item.gold_label,
    )


# --------------------------------------------------------------------------- gold_pick


def test_gold_pick_hands_each_gold_item_to_a_worker_once_then_none():
    job, items, (worker,) = _job(2, gold=["cat", "dog", "bird"])
    rng = random.Random(0)

    picked = []
    for _ in range(3):
        item = gold_pick(job=job, worker=worker, rng=rng)
        assert item is not None
        _assign(worker, item)
        picked.append(item.pk)

    assert sorted(picked) == sorted(i.pk for i in _gold(items))
    assert gold_pick(job=job, worker=worker, rng=rng) is None


def test_gold_pick_loads_only_what_a_task_needs_in_three_queries(django_assert_num_queries):
    job, _, (worker,) = _job(2, gold=["cat", "dog"])

    with django_assert_num_queries(3):
        item = gold_pick(job=job, worker=worker, rng=random.Random(1))

    assert item.gold_label in ("cat", "dog")
    loaded = {"id", "external_id", "payload", "prediction", "gold_label"}
    assert item.get_deferred_fields() == {
        f.attname for f in Item._meta.concrete_fields if f.attname not in loaded
    }


def test_gold_pick_ignores_a_job_without_gold():
    job, _, (worker,) = _job(3)

    assert gold_pick(job=job, worker=worker, rng=random.Random(0)) is None


def test_gold_shown_max_exposures_times_is_retired_and_no_longer_picked():
    job, items, (worker,) = _job(1, gold=["cat"], policy={"gold_max_exposures": 3})
    (gold,) = _gold(items)

    gold_record_shown(item_id=gold.pk, job_id=job.pk, max_exposures=3)
    gold_record_shown(item_id=gold.pk, job_id=job.pk, max_exposures=3)
    assert GoldExposure.objects.get(item=gold).retired_at is None
    assert gold_pick(job=job, worker=worker, rng=random.Random(0)) == gold

    gold_record_shown(item_id=gold.pk, job_id=job.pk, max_exposures=3)
    exposure = GoldExposure.objects.get(item=gold)
    retired_at = exposure.retired_at
    assert (exposure.shown, retired_at is not None) == (3, True)
    assert gold_pick(job=job, worker=worker, rng=random.Random(0)) is None

    # Later showings (leases granted before retirement) count but keep the retirement time.
    gold_record_shown(item_id=gold.pk, job_id=job.pk, max_exposures=3)
    exposure.refresh_from_db()
    assert (exposure.shown, exposure.retired_at) == (4, retired_at)


def test_a_worker_who_answered_two_cat_gold_gets_another_class_next():
    job, items, (worker,) = _job(0, gold=["cat", "cat", "cat", "cat", "dog", "bird"])
    cats = [i for i in items if i.gold_label == "cat"]
    _answer(worker, cats[0])
    _answer(worker, cats[1], "dog")  # a wrong answer is still a cat gold answered

    classes = {
        gold_pick(job=job, worker=worker, rng=random.Random(seed)).gold_label for seed in range(20)
    }

    # Dog and bird tie at zero answers: the tie is broken at random, never towards cat.
    assert classes == {"dog", "bird"}


def test_class_balance_falls_back_to_the_classes_still_available():
    job, items, (worker,) = _job(0, gold=["cat", "cat", "cat", "dog", "bird"])
    by_class = {}
    for item in items:
        by_class.setdefault(item.gold_label, []).append(item)
    _answer(worker, by_class["dog"][0])
    _answer(worker, by_class["bird"][0])

    picks = {gold_pick(job=job, worker=worker, rng=random.Random(seed)) for seed in range(10)}

    # Dog and bird (one answer each) are exhausted; cat (none answered) is what is left.
    assert {p.gold_label for p in picks} == {"cat"}


def test_retired_gold_is_not_counted_as_available_but_its_answers_still_count():
    job, items, (worker,) = _job(0, gold=["cat", "cat", "dog", "dog"])
    cat_a, cat_b, dog_a, dog_b = items
    _answer(worker, dog_a)
    GoldExposure.objects.create(item=cat_a, job=job, shown=9, retired_at=timezone.now())
    GoldExposure.objects.create(item=cat_b, job=job, shown=9, retired_at=timezone.now())

    picks = {gold_pick(job=job, worker=worker, rng=random.Random(seed)) for seed in range(10)}

    assert picks == {dog_b}


def test_gold_pick_spreads_workers_over_the_candidates():
    job, items, _ = _job(0, gold=["cat"] * 30)

    picks = {
        gold_pick(job=job, worker=make_worker(), rng=random.Random(seed)) for seed in range(40)
    }

    assert len(picks) >= 15
    assert picks <= set(items)


# --------------------------------------------------------------------------- adaptive rate


@pytest.mark.parametrize(
    ("answers", "correct", "expected"),
    [
        pytest.param(0, 0, 0.2, id="new-no-gold-yet"),
        pytest.param(4, 4, 0.2, id="new-below-min-answers"),
        pytest.param(5, 5, 0.1, id="uncertain-at-min-answers"),
        pytest.param(19, 19, 0.1, id="uncertain-below-proven-answers"),
        pytest.param(20, 15, 0.1, id="uncertain-accuracy-not-proven"),
        pytest.param(20, 20, 0.05, id="proven"),
        pytest.param(40, 38, 0.05, id="proven-with-two-errors"),
    ],
)
def test_gold_rate_adapts_to_the_workers_gold_record(
    answers, correct, expected, django_assert_max_num_queries
):
    job, items, (worker,) = _job(0, gold=["cat"] * answers)
    for i, item in enumerate(items):
        _answer(worker, item, "cat" if i < correct else "dog")

    with django_assert_max_num_queries(1):
        rate = gold_rate_for(job=job, worker_id=worker.pk, base_rate=0.1)

    assert rate == pytest.approx(expected)
    assert rate <= gold_rate_ceiling(job=job, base_rate=0.1)


def test_gold_rate_follows_the_job_policy_and_stays_a_probability(django_assert_num_queries):
    job, _, (worker,) = _job(
        0, policy={"gold_new_factor": 3.0, "gold_proven_factor": 0.0, "gold_min_answers": 2}
    )

    assert gold_rate_for(job=job, worker_id=worker.pk, base_rate=0.1) == pytest.approx(0.3)
    assert gold_rate_for(job=job, worker_id=worker.pk, base_rate=0.5) == 1.0
    assert gold_rate_ceiling(job=job, base_rate=0.1) == pytest.approx(0.3)
    assert gold_rate_ceiling(job=job, base_rate=0.5) == 1.0
    with django_assert_num_queries(0):
        assert gold_rate_for(job=job, worker_id=worker.pk, base_rate=0.0) == 0.0
        assert gold_rate_ceiling(job=job, base_rate=0.0) == 0.0


def test_gold_rate_ceiling_is_the_base_rate_when_no_factor_raises_it():
    job, _, _ = _job(0, policy={"gold_new_factor": 1.0, "gold_proven_factor": 0.5})

    assert gold_rate_ceiling(job=job, base_rate=0.1) == pytest.approx(0.1)


@pytest.mark.parametrize(
    "policy",
    [
        pytest.param({"gold_new_factor": 0.5}, id="new-factor-below-1"),
        pytest.param({"gold_proven_factor": 1.5}, id="proven-factor-above-1"),
        pytest.param({"gold_proven_accuracy": 2}, id="proven-accuracy-above-1"),
        pytest.param({"gold_proven_answers": 0}, id="proven-answers-zero"),
        pytest.param({"gold_new_factor": "lots"}, id="new-factor-not-a-number"),
    ],
)
def test_bad_adaptive_gold_policy_is_a_400_naming_the_key(client_actor, policy):
    spec = {
        "name": "Pets",
        "label_schema": {"kind": "single_choice", "classes": CLASSES},
        "policy": policy,
    }

    response = client_actor.client.post("/api/v1/jobs/", spec, format="json")

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert set(error["details"]["policy"]) == set(policy)
    assert Job.objects.count() == 0


def test_adaptive_gold_policy_is_stored(client_actor):
    policy = {"gold_new_factor": 3, "gold_proven_answers": 40, "gold_proven_factor": 0.25}
    spec = {"name": "Pets", "label_schema": {"classes": CLASSES}, "policy": policy}

    response = client_actor.client.post("/api/v1/jobs/", spec, format="json")

    assert response.status_code == 201, response.content
    stored = response.json()["policy"]
    assert (stored["gold_new_factor"], stored["gold_proven_answers"]) == (3.0, 40)
    assert stored["gold_proven_factor"] == 0.25


# --------------------------------------------------------------------------- exposure counters


def test_recording_a_fresh_gold_item_twice_counts_both(django_assert_max_num_queries):
    job, items, _ = _job(0, gold=["cat"])
    (gold,) = items

    with django_assert_max_num_queries(3):
        gold_record_shown(item_id=gold.pk, job_id=job.pk, max_exposures=200)
    with django_assert_max_num_queries(1):
        gold_record_shown(item_id=gold.pk, job_id=job.pk, max_exposures=200)

    exposure = GoldExposure.objects.get(item=gold)
    assert (exposure.job_id, exposure.shown, exposure.answered, exposure.retired_at) == (
        job.pk,
        2,
        0,
        None,
    )


def test_gold_answers_count_answered_and_correct():
    job, items, _ = _job(0, gold=["cat"])
    (gold,) = items

    gold_record_answer(item_id=gold.pk, job_id=job.pk, correct=True)
    gold_record_answer(item_id=gold.pk, job_id=job.pk, correct=False)
    gold_record_answer(item_id=gold.pk, job_id=job.pk, correct=True)

    exposure = GoldExposure.objects.get(item=gold)
    assert (exposure.shown, exposure.answered, exposure.correct) == (0, 3, 2)


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="needs row-level concurrency (PostgreSQL)"
)
def test_concurrent_first_exposures_of_one_gold_item_all_count():
    job, items, _ = _job(0, gold=["cat"])
    (gold,) = items
    n = 8
    barrier = threading.Barrier(n)
    errors: list[str] = []

    def show() -> None:
        try:
            barrier.wait(timeout=10)
            # Inside a transaction, as in a lease request.
            with transaction.atomic():
                gold_record_shown(item_id=gold.pk, job_id=job.pk, max_exposures=200)
                gold_record_answer(item_id=gold.pk, job_id=job.pk, correct=True)
        except Exception as exc:  # noqa: BLE001 - the main thread reports every failure
            errors.append(repr(exc))
        finally:
            connection.close()

    threads = [threading.Thread(target=show) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert errors == []
    exposure = GoldExposure.objects.get(item=gold)
    assert (exposure.shown, exposure.answered, exposure.correct) == (n, n, n)


# --------------------------------------------------------------------------- gold API


@pytest.fixture
def gold_job():
    """A client job (Acme Client) with gold cat, cat, dog: one cat retired, answers recorded."""
    job, items, _ = _job(1, gold=["cat", "cat", "dog"], policy={"gold_max_exposures": 2})
    _, cat_a, cat_b, dog = items
    for _ in range(2):
        gold_record_shown(item_id=cat_a.pk, job_id=job.pk, max_exposures=2)
    gold_record_answer(item_id=cat_a.pk, job_id=job.pk, correct=True)
    gold_record_answer(item_id=cat_a.pk, job_id=job.pk, correct=False)
    gold_record_shown(item_id=dog.pk, job_id=job.pk, max_exposures=2)
    gold_record_answer(item_id=dog.pk, job_id=job.pk, correct=True)
    return job


def test_gold_api_lists_each_gold_item_and_class_totals(
    client_actor, gold_job, django_assert_max_num_queries
):
    with django_assert_max_num_queries(8):
        response = client_actor.client.get(f"/api/v1/jobs/{gold_job.pk}/gold/")

    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["job"], body["max_exposures"], body["count"]) == (gold_job.pk, 2, 3)
    rows = [
        (
            r["external_id"],
            r["gold_label"],
            r["shown"],
            r["answered"],
            r["correct"],
            r["accuracy"],
            r["retired"],
        )
        for r in body["results"]
    ]
    assert rows == [
        ("gold-0", "cat", 2, 2, 1, 0.5, True),
        ("gold-1", "cat", 0, 0, 0, None, False),
        ("gold-2", "dog", 1, 1, 1, 1.0, False),
    ]
    assert body["results"][0]["retired_at"] is not None
    assert body["results"][1]["retired_at"] is None
    assert body["classes"] == [
        {
            "gold_label": "cat",
            "items": 2,
            "live": 1,
            "retired": 1,
            "shown": 2,
            "answered": 2,
            "correct": 1,
            "accuracy": 0.5,
        },
        {
            "gold_label": "dog",
            "items": 1,
            "live": 1,
            "retired": 0,
            "shown": 1,
            "answered": 1,
            "correct": 1,
            "accuracy": 1.0,
        },
    ]
    assert body["totals"] == {
        "items": 3,
        "live": 2,
        "retired": 1,
        "shown": 3,
        "answered": 3,
        "correct": 2,
        "accuracy": round(2 / 3, 6),
    }


def test_gold_api_pages_and_filters(client_actor, gold_job):
    url = f"/api/v1/jobs/{gold_job.pk}/gold/"

    first = client_actor.client.get(url, {"page_size": 2}).json()
    retired = client_actor.client.get(url, {"retired": "true"}).json()
    live = client_actor.client.get(url, {"retired": "false"}).json()
    dogs = client_actor.client.get(url, {"gold_label": "dog"}).json()
    bad = client_actor.client.get(url, {"retired": "maybe"})

    assert (first["count"], len(first["results"]), first["next"] is not None) == (3, 2, True)
    assert [r["external_id"] for r in retired["results"]] == ["gold-0"]
    assert [r["external_id"] for r in live["results"]] == ["gold-1", "gold-2"]
    assert [r["external_id"] for r in dogs["results"]] == ["gold-2"]
    # The class totals always cover the whole job.
    assert dogs["totals"]["items"] == 3
    assert bad.status_code == 400
    assert "retired" in bad.json()["error"]["details"]


def test_gold_api_for_ops_and_a_job_without_gold(ops_actor, gold_job):
    empty, _, _ = _job(2)

    assert ops_actor.client.get(f"/api/v1/jobs/{gold_job.pk}/gold/").status_code == 200
    body = ops_actor.client.get(f"/api/v1/jobs/{empty.pk}/gold/").json()
    assert (body["count"], body["results"], body["classes"]) == (0, [], [])
    assert body["totals"] == {
        "items": 0,
        "live": 0,
        "retired": 0,
        "shown": 0,
        "answered": 0,
        "correct": 0,
        "accuracy": None,
    }


def test_gold_api_hides_other_tenants_jobs_and_refuses_annotators(
    other_client_actor, make_actor, gold_job
):
    url = f"/api/v1/jobs/{gold_job.pk}/gold/"
    annotator = make_actor("annotator")

    other = other_client_actor.client.get(url)
    refused = annotator.client.get(url)

    assert other.status_code == 404
    assert other.json()["error"]["code"] == "not_found"
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "permission_denied"


def test_gold_api_unknown_job_is_404(client_actor):
    assert client_actor.client.get("/api/v1/jobs/999999/gold/").status_code == 404


def test_gold_through_the_engine_is_counted_retired_and_never_repeated():
    gold = ["cat", "dog", "bird"]
    job, items, crowd = crowd_job(
        6, workers=4, gold=gold, policy={"gold_rate": 1.0, "gold_max_exposures": 2}
    )
    gold_ids = {i.pk for i in items if i.gold_label}
    seen: dict[int, set[int]] = {w.pk: set() for w in crowd}
    for worker in crowd:
        for _ in range(3):
            task = assignment_next(worker=worker, job_id=job.pk)
            assert isinstance(task, Task)
            if task.item in gold_ids:
                assert task.item not in seen[worker.pk]
                seen[worker.pk].add(task.item)
            assignment_submit(worker=worker, assignment_id=task.id, label="cat")

    exposures = {e.item_id: e for e in GoldExposure.objects.filter(job=job)}
    # Each gold item was shown at most twice, then retired; four workers at rate 1 with
    # three gold items at two showings each: six gold tasks in all.
    assert sum(e.shown for e in exposures.values()) == 6
    assert all(e.shown == 2 and e.retired_at is not None for e in exposures.values())
    assert sum(e.answered for e in exposures.values()) == 6
    assert {e.item_id: e.correct for e in exposures.values()} == {
        i.pk: 2 if i.gold_label == "cat" else 0 for i in items if i.gold_label
    }
