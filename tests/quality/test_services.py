"""The quality engine in the system: per-label decisions, job aggregation, history, gold rules."""

from __future__ import annotations

import time

import numpy as np
import pytest
from django.core.cache import cache

from apps.assignments.leasing import Task
from apps.jobs.models import Item
from apps.pipeline.next import assignment_next
from apps.pipeline.submit import assignment_submit
from apps.quality import aggregation as services
from apps.quality.aggregation import (
    aggregation_countdown_reset,
    aggregation_dequeued,
    job_aggregate,
    label_count_batch,
    labels_since_count,
    local_caches_clear,
    maybe_schedule_aggregation,
)
from apps.quality.matrices import classes_key
from apps.quality.models import AggregationRun, GoldExposure, QualityDecision, WorkerJobQuality
from apps.quality.posterior import item_posterior_from_labels
from apps.quality.rules import worker_quality_suspend
from apps.workforce.models import Worker
from tests.workforce.factories import JobFactory, make_items, make_pool, make_worker

pytestmark = pytest.mark.django_db
CLASSES = ["cat", "dog", "bird"]


def _job(n_items=3, *, workers=3, policy=None, gold=()):
    job = JobFactory(
        policy={
            "min_labels": 2,
            "max_labels": 4,
            "gold_rate": 0.0,
            "target_confidence": 0.9,
            **(policy or {}),
        }
    )
    items = make_items(job, n_items, gold=gold)
    crowd = [make_worker() for _ in range(workers)]
    make_pool(jobs=[job], workers=crowd)
    return job, items, crowd


def _label(worker: Worker, value: str, **kwargs) -> Task:
    task = assignment_next(worker=worker, **kwargs)
    assert isinstance(task, Task), task
    assignment_submit(worker=worker, assignment_id=task.id, label=value)
    return task


def test_agreeing_newcomers_settle_once_the_posterior_is_confident():
    job, (item,), crowd = _job(1)

    _label(crowd[0], "dog")
    _label(crowd[1], "dog")

    item.refresh_from_db()
    # Two newcomers at 0.7 accuracy with 3 classes: P(dog) = 0.7^2 / (0.7^2 + 2 * 0.15^2).
    expected = 0.49 / (0.49 + 2 * 0.0225)
    assert item.state == "settled"
    assert item.label == "dog"
    assert item.confidence == pytest.approx(expected, abs=1e-6)
    assert item.source == "crowd"
    assert item.result_meta["method"] == "posterior"
    assert [w["worker"] for w in item.result_meta["workers"]] == [crowd[0].pk, crowd[1].pk]


def test_disagreement_asks_for_one_more_label_then_goes_to_review_at_max():
    job, (item,), crowd = _job(1, workers=4)

    _label(crowd[0], "dog")
    _label(crowd[1], "cat")
    item.refresh_from_db()
    assert (item.state, item.labels_needed) == ("open", 3)

    _label(crowd[2], "bird")
    item.refresh_from_db()
    assert (item.state, item.labels_needed) == ("open", 4)

    _label(crowd[3], "cat")
    item.refresh_from_db()
    assert item.state == "review"
    assert item.n_labels == 4


def test_a_known_good_worker_is_trusted_from_history():
    old_job, _, _ = _job(0)
    worker = make_worker()
    WorkerJobQuality.objects.create(
        worker=worker,
        job=old_job,
        classes_key=classes_key(CLASSES),
        confusion=[[0.99, 0.005, 0.005], [0.005, 0.99, 0.005], [0.005, 0.005, 0.99]],
        skill=0.99,
    )
    new_job, _, _ = _job(0)
    stranger = make_worker()

    trusted, _ = item_posterior_from_labels(job=new_job, answers=[(worker.pk, "bird", "crowd")])
    unknown, _ = item_posterior_from_labels(job=new_job, answers=[(stranger.pk, "bird", "crowd")])

    assert trusted[2] == pytest.approx(0.99 / (0.99 + 0.01), abs=1e-9)
    assert unknown[2] == pytest.approx(0.7, abs=1e-9)


def test_job_aggregation_writes_posteriors_and_worker_matrices_reproducibly():
    job, items, crowd = _job(12, workers=3, policy={"min_labels": 3, "max_labels": 3})
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 3, size=12)
    for worker, accuracy in zip(crowd, [0.95, 0.9, 0.4], strict=True):
        for _ in range(12):
            task = assignment_next(worker=worker)
            t = truth[[i.pk for i in items].index(task.item)]
            value = t if rng.random() < accuracy else (t + 1) % 3
            assignment_submit(worker=worker, assignment_id=task.id, label=CLASSES[value])

    first = job_aggregate(job_id=job.pk)
    snapshot = {i.pk: i.posterior for i in Item.objects.filter(job=job)}
    labels = dict(Item.objects.filter(job=job).values_list("pk", "label"))
    second = job_aggregate(job_id=job.pk, max_label_id=first.max_label_id)

    assert first.n_labels == 36
    assert second.method == first.method == "default"
    # The second run warm-starts from the stored matrices and converges to the same fixed
    # point (to EM's tolerance), so nothing a client sees moves.
    again = {i.pk: i.posterior for i in Item.objects.filter(job=job)}
    assert again.keys() == snapshot.keys()
    for pk, posterior in again.items():
        assert posterior == pytest.approx(snapshot[pk], abs=1e-4)
    assert dict(Item.objects.filter(job=job).values_list("pk", "label")) == labels
    skills = dict(WorkerJobQuality.objects.filter(job=job).values_list("worker_id", "skill"))
    assert skills[crowd[0].pk] > skills[crowd[2].pk]
    assert AggregationRun.objects.filter(job=job).count() == 2
    # The second run moved no result beyond RESULT_REWRITE_TOLERANCE: it rewrote nothing,
    # and every item still names the first run as where its result comes from.
    written = Item.objects.filter(job=job).exclude(state="review")
    assert {i.result_meta["run"] for i in written} == {first.pk}
    item = Item.objects.filter(job=job, state="settled").first()
    assert len(item.result_meta["workers"]) == 3


def test_job_aggregation_rewrites_only_the_results_that_moved():
    job, items, crowd = _job(6, workers=4, policy={"min_labels": 3, "max_labels": 4})
    for worker in crowd[:3]:
        for _ in range(6):
            _label(worker, "dog", job_id=job.pk)
    first = job_aggregate(job_id=job.pk)
    assert {i.result_meta["run"] for i in Item.objects.filter(job=job)} == {first.pk}
    # A fourth label on one item: that item's answers changed, the other five did not.
    stored = {i.pk: (i.posterior, i.updated_at) for i in Item.objects.filter(job=job)}
    item = Item.objects.get(pk=items[0].pk)
    item.state, item.labels_needed = "open", 4
    item.save(update_fields=["state", "labels_needed"])
    task = assignment_next(worker=crowd[3], job_id=job.pk)
    assert task.item == items[0].pk
    assignment_submit(worker=crowd[3], assignment_id=task.id, label="cat")
    second = job_aggregate(job_id=job.pk)

    runs = dict(Item.objects.filter(job=job).values_list("pk", "result_meta__run"))
    assert runs.pop(items[0].pk) == second.pk
    assert set(runs.values()) == {first.pk}
    relabeled = Item.objects.get(pk=items[0].pk)
    assert [w["label"] for w in relabeled.result_meta["workers"]] == ["dog"] * 3 + ["cat"]
    for other in Item.objects.filter(job=job).exclude(pk=items[0].pk):
        posterior, updated_at = stored[other.pk]
        assert other.updated_at == updated_at
        assert other.posterior == pytest.approx(posterior, abs=1e-3)


def test_poor_gold_accuracy_suspends_the_worker_and_records_why(django_capture_on_commit_callbacks):
    gold = ["cat", "dog", "bird", "cat", "dog", "bird"]
    job, items, (bad, good) = _job(
        2,
        workers=2,
        gold=gold,
        policy={"gold_rate": 1.0, "gold_min_answers": 5, "gold_min_accuracy": 0.6},
    )
    wrong = {"cat": "dog", "dog": "bird", "bird": "cat"}
    for _ in range(6):
        task = assignment_next(worker=bad)
        if not isinstance(task, Task):
            break
        item = Item.objects.get(pk=task.item)
        with django_capture_on_commit_callbacks(execute=True):
            assignment_submit(worker=bad, assignment_id=task.id, label=wrong[item.gold_label])

    bad.refresh_from_db()
    assert bad.status == "suspended"
    decision = QualityDecision.objects.get(worker=bad, action="suspend")
    assert decision.reason == "gold_accuracy"
    assert decision.details["gold_answers"] == 5
    assert decision.details["gold_correct"] == 0


def test_quality_and_agreement_apis(make_actor, client_actor, ops_actor):
    job, items, crowd = _job(4, workers=3, policy={"min_labels": 3, "max_labels": 3})
    for worker in crowd:
        for _ in range(4):
            _label(worker, "dog")
    job.organization = client_actor.user.memberships.get().organization
    job.save(update_fields=["organization"])
    job_aggregate(job_id=job.pk)

    agreement = client_actor.client.get(f"/api/v1/jobs/{job.pk}/agreement/?n_boot=100").json()
    quality = ops_actor.client.get(f"/api/v1/workers/{crowd[0].pk}/quality/").json()

    assert agreement["n_labels"] == 12
    assert agreement["mean_item_agreement"] == 1.0
    assert set(agreement["krippendorff_alpha"]["per_class"]) == set(CLASSES)
    assert quality["labels"] == 4
    assert quality["jobs"][0]["job"] == job.pk
    assert len(quality["jobs"][0]["confusion"]) == 3
    other = make_actor("client", org="Globex Client")
    assert other.client.get(f"/api/v1/jobs/{job.pk}/agreement/").status_code == 404
    annotator = make_actor("annotator")
    assert annotator.client.get(f"/api/v1/workers/{crowd[0].pk}/quality/").status_code == 404


def test_suspension_drops_the_workers_labels_and_reopens_what_they_settled():
    # min 2 labels: a spammer and one honest worker settle "dog" on the item.
    job, (first,), crowd = _job(1, workers=3)
    spammer, honest, third = crowd
    _label(spammer, "dog", job_id=job.pk)
    _label(honest, "dog", job_id=job.pk)
    first.refresh_from_db()
    assert (first.state, first.label) == ("settled", "dog")

    decision = worker_quality_suspend(
        worker=spammer, job=job, reason=QualityDecision.Reason.GOLD_ACCURACY, details={"x": 1}
    )

    spammer.refresh_from_db()
    assert spammer.status == "suspended"
    first.refresh_from_db()
    # One newcomer's label alone (0.7) is below the target (0.9): back to the queue.
    assert (first.state, first.label, first.source) == ("open", None, None)
    assert first.labels_needed == first.n_labels + first.n_leases + 1 == 3
    weights = {w["worker"]: w["weight"] for w in first.result_meta["workers"]}
    assert weights[spammer.pk] == 0.0
    assert weights[honest.pk] > 0
    reopen = QualityDecision.objects.get(worker=spammer, action="reopen")
    assert first.pk in reopen.details["items"]
    assert decision.reason == "gold_accuracy"
    # The reopened item is offered again, to someone who has not labeled it.
    task = assignment_next(worker=third, job_id=job.pk)
    assert isinstance(task, Task)
    assert task.item == first.pk
    # The suspended worker gets nothing.
    assert assignment_next(worker=spammer, job_id=job.pk).reason == "worker_suspended"


def test_gold_through_the_engine_is_counted_retired_and_never_repeated():
    gold = ["cat", "dog", "bird"]
    job, items, crowd = _job(
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


def test_label_trigger_queues_one_re_aggregation_at_a_time(django_capture_on_commit_callbacks):
    job, _, _ = _job(0, policy={"reaggregate_every": 2})
    with django_capture_on_commit_callbacks(execute=False) as queued:
        fired = [maybe_schedule_aggregation(job=job) for _ in range(6)]
    # The second label runs the countdown out; it stays out until a run sets the next one.
    assert fired == [False, True, False, False, False, False]
    assert len(queued) == 1
    # The beat (or the API) queued a run meanwhile: the countdown fires, nothing is queued.
    aggregation_countdown_reset(job=job, n_labels=6)
    fired = [maybe_schedule_aggregation(job=job) for _ in range(2)]
    assert fired == [False, False]
    # The queued run starts and ends: the next countdown queues again.
    aggregation_dequeued(job_id=job.pk)
    aggregation_countdown_reset(job=job, n_labels=8)
    with django_capture_on_commit_callbacks(execute=False) as queued:
        fired = [maybe_schedule_aggregation(job=job) for _ in range(2)]
    assert fired == [False, True]
    assert len(queued) == 1


def test_a_lost_re_aggregation_does_not_silence_its_job(
    django_capture_on_commit_callbacks, monkeypatch
):
    """F7: a Celery worker killed during a run left the countdown below zero, and a trigger
    that fired only when the countdown crossed zero never fired again (until the beat). Now
    the queued mark expires and the next label queues the run again."""

    monkeypatch.setattr(services, "AGGREGATION_QUEUED_TTL_S", 1)
    job, _, _ = _job(0, policy={"reaggregate_every": 2})
    with django_capture_on_commit_callbacks(execute=False) as queued:
        fired = [services.maybe_schedule_aggregation(job=job) for _ in range(3)]
    assert fired == [False, True, False]
    assert len(queued) == 1
    # The queued run is lost: nothing resets the countdown or clears the mark.
    time.sleep(1.2)

    with django_capture_on_commit_callbacks(execute=False) as queued:
        again = services.maybe_schedule_aggregation(job=job)

    assert again
    assert len(queued) == 1


def test_a_run_sets_the_next_countdown_before_its_work(monkeypatch):
    """A run killed while aggregating has already set the next countdown and cleared the
    queued mark: labels after it queue the next run after one interval."""

    job, items, crowd = _job(2, policy={"reaggregate_every": 2, "min_labels": 3})
    _label(crowd[0], "dog")
    cache.set(services._aggregation_queued_key(job.pk), 1)

    def killed(*args, **kwargs):
        raise SystemExit("worker killed")

    monkeypatch.setattr(services.algorithms, "aggregate", killed)
    with pytest.raises(SystemExit):
        job_aggregate(job_id=job.pk)

    assert cache.get(services._countdown_key(job.pk)) == 2
    assert cache.get(services._aggregation_queued_key(job.pk)) is None


def test_label_trigger_counts_in_batches_and_fires_on_time():
    job, _, _ = _job(0, policy={"reaggregate_every": 200})
    key = f"concord:quality:labels-until-aggregate:{job.pk}"
    assert label_count_batch(200) == 10
    assert label_count_batch(19) == 1
    fired = [labels_since_count(job_id=job.pk, every=200) for _ in range(405)]
    # The first run is due at the 200th label, exactly; the shared countdown is updated once
    # per 10 labels (the last 5 are still counted locally), and says "due" at each update
    # until a run sets the next countdown (maybe_schedule_aggregation queues one run).
    assert [i + 1 for i, f in enumerate(fired) if f] == list(range(200, 401, 10))
    assert cache.get(key) == 200 - 400
    # A run that read 400 labels sets the next interval: max(200, 10% of 400) = 200 ...
    assert aggregation_countdown_reset(job=job, n_labels=400) == 200
    # ... and one that read 30,000 labels: 3,000 (the job's growth, reaggregate_growth).
    assert aggregation_countdown_reset(job=job, n_labels=30_000) == 3000
    local_caches_clear()
    fired = [labels_since_count(job_id=job.pk, every=200) for _ in range(3100)]
    assert [i + 1 for i, f in enumerate(fired) if f] == list(range(3000, 3101, 10))
    # Small intervals stay exact: every label reaches the shared countdown.
    cache.delete(key)
    local_caches_clear()
    fired = [labels_since_count(job_id=job.pk, every=3) for _ in range(7)]
    assert fired == [False, False, True, True, True, True, True]
    assert cache.get(key) == 3 - 7


def test_job_aggregation_sets_the_next_countdown_from_what_it_read():
    job, _, crowd = _job(
        4,
        workers=3,
        policy={
            "min_labels": 3,
            "max_labels": 3,
            "reaggregate_every": 5,
            "reaggregate_growth": 2.0,
        },
    )
    for worker in crowd:
        for _ in range(4):
            _label(worker, "dog", job_id=job.pk)
    job_aggregate(job_id=job.pk)
    # 12 labels read, growth 2.0: the next run is due after 24 new labels, not 5.
    assert cache.get(f"concord:quality:labels-until-aggregate:{job.pk}") == 24
    fired = [labels_since_count(job_id=job.pk, every=5) for _ in range(24)]
    assert [i + 1 for i, f in enumerate(fired) if f] == [24]


def test_a_label_that_lands_during_the_write_back_is_never_overwritten(monkeypatch):
    """F7: job re-aggregation read an open item, a submit settled it, and the write-back
    stored the item's old (empty) label over the new one: settled items with label "".
    The write-back is now a compare-and-set on the labels it read."""

    # Two agreeing labels settle an item even with the matrices the run stores first.
    job, (item, other), crowd = _job(2, workers=3, policy={"target_confidence": 0.6})
    _label(crowd[0], "dog")  # item: one label, open
    task = assignment_next(worker=crowd[1])  # crowd[1] holds a lease on the item
    assert task.item == item.pk
    _label(crowd[2], "cat")  # the other item gets one label too
    original = services._result_unchanged
    landed = []

    def with_a_submit_landing(*args, **kwargs):
        if not landed:  # the run has read the items; a submit settles one now
            assignment_submit(worker=crowd[1], assignment_id=task.id, label="dog")
            landed.append(True)
        return original(*args, **kwargs)

    monkeypatch.setattr(services, "_result_unchanged", with_a_submit_landing)

    job_aggregate(job_id=job.pk, method="ds")

    item.refresh_from_db()
    assert landed
    assert (item.state, item.label, item.n_labels) == ("settled", "dog", 2)
    assert item.confidence > 0.5
    assert [w["worker"] for w in item.result_meta["workers"]] == [crowd[0].pk, crowd[1].pk]


def test_a_run_that_read_fewer_labels_than_the_item_has_leaves_its_result_alone(monkeypatch):
    """A label committed between the run's read of the labels and its read of the items is
    newer than the run: the item keeps the result that label's decision wrote."""

    job, (item,), crowd = _job(1, workers=2, policy={"target_confidence": 0.6})
    _label(crowd[0], "dog")
    original = services.job_label_arrays

    def then_a_label(**kwargs):
        arrays = original(**kwargs)
        _label(crowd[1], "dog")  # settles the item after the run read its labels
        return arrays

    monkeypatch.setattr(services, "job_label_arrays", then_a_label)

    job_aggregate(job_id=job.pk, method="ds")

    item.refresh_from_db()
    assert (item.state, item.label, item.n_labels) == ("settled", "dog", 2)
    assert len(item.result_meta["workers"]) == 2
