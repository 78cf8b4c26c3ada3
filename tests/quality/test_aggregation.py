"""Job aggregation in the system: results and matrices written back, only what moved, the re-aggregation trigger, and a write-back that never overwrites a newer label."""

from __future__ import annotations

import time

import numpy as np
import pytest
from django.core.cache import cache
from django.db import connection

from apps.assignments.models import Label
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
from apps.quality.models import AggregationRun, WorkerJobQuality
from apps.workforce.models import Worker
from tests.quality.factories import CLASSES, crowd_job, crowd_label

pytestmark = pytest.mark.django_db


def test_job_aggregation_writes_posteriors_and_worker_matrices_reproducibly():
    job, items, crowd = crowd_job(12, workers=3, policy={"min_labels": 3, "max_labels": 3})
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
    # Plain Dawid-Skene: one more label moves only its item's posterior (the default method
    # anchors the class prior to the vote shares, so there a label moves every item a little,
    # and those are rightly rewritten).
    policy = {"min_labels": 3, "max_labels": 4, "aggregation": "ds"}
    job, items, crowd = crowd_job(6, workers=4, policy=policy)
    for worker in crowd[:3]:
        for _ in range(6):
            crowd_label(worker, "dog", job_id=job.pk)
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


def test_label_trigger_queues_one_re_aggregation_at_a_time(django_capture_on_commit_callbacks):
    job, _, _ = crowd_job(0, policy={"reaggregate_every": 2})
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
    job, _, _ = crowd_job(0, policy={"reaggregate_every": 2})
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

    job, items, crowd = crowd_job(2, policy={"reaggregate_every": 2, "min_labels": 3})
    crowd_label(crowd[0], "dog")
    cache.set(services._aggregation_queued_key(job.pk), 1)

    def killed(*args, **kwargs):
        raise SystemExit("worker killed")

    monkeypatch.setattr(services.algorithms, "aggregate", killed)
    with pytest.raises(SystemExit):
        job_aggregate(job_id=job.pk)

    assert cache.get(services._countdown_key(job.pk)) == 2
    assert cache.get(services._aggregation_queued_key(job.pk)) is None


def test_label_trigger_counts_in_batches_and_fires_on_time():
    job, _, _ = crowd_job(0, policy={"reaggregate_every": 200})
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
    job, _, crowd = crowd_job(
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
            crowd_label(worker, "dog", job_id=job.pk)
    job_aggregate(job_id=job.pk)
    # 12 labels read, growth 2.0: the next run is due after 24 new labels, not 5.
    assert cache.get(f"concord:quality:labels-until-aggregate:{job.pk}") == 24
    fired = [labels_since_count(job_id=job.pk, every=5) for _ in range(24)]
    assert [i + 1 for i, f in enumerate(fired) if f] == [24]


@pytest.mark.parametrize("copy_above", [5000, 0], ids=["unnest", "copy"])
def test_a_label_that_lands_during_the_write_back_is_never_overwritten(monkeypatch, copy_above):
    """F7: job re-aggregation read an open item, a submit settled it, and the write-back
    stored the item's old (empty) label over the new one: settled items with label "".
    The write-back is now a compare-and-set on the labels it read (by either writer)."""
    monkeypatch.setattr(services, "COPY_RESULTS_ABOVE", copy_above)

    # Two agreeing labels settle an item even with the matrices the run stores first.
    job, (item, other), crowd = crowd_job(2, workers=3, policy={"target_confidence": 0.6})
    crowd_label(crowd[0], "dog")  # item: one label, open
    task = assignment_next(worker=crowd[1])  # crowd[1] holds a lease on the item
    assert task.item == item.pk
    crowd_label(crowd[2], "cat")  # the other item gets one label too
    original = services._posteriors_near
    landed = []

    def with_a_submit_landing(*args, **kwargs):
        if not landed:  # the run has read the items; a submit settles one now
            assignment_submit(worker=crowd[1], assignment_id=task.id, label="dog")
            landed.append(True)
        return original(*args, **kwargs)

    monkeypatch.setattr(services, "_posteriors_near", with_a_submit_landing)

    job_aggregate(job_id=job.pk, method="ds")

    item.refresh_from_db()
    assert landed
    assert (item.state, item.label, item.n_labels) == ("settled", "dog", 2)
    assert item.confidence > 0.5
    assert [w["worker"] for w in item.result_meta["workers"]] == [crowd[0].pk, crowd[1].pk]


def test_a_run_that_read_fewer_labels_than_the_item_has_leaves_its_result_alone(monkeypatch):
    """A label committed between the run's read of the labels and its read of the items is
    newer than the run: the item keeps the result that label's decision wrote."""

    job, (item,), crowd = crowd_job(1, workers=2, policy={"target_confidence": 0.6})
    crowd_label(crowd[0], "dog")
    original = services.job_label_arrays

    def then_a_label(**kwargs):
        arrays = original(**kwargs)
        crowd_label(crowd[1], "dog")  # settles the item after the run read its labels
        return arrays

    monkeypatch.setattr(services, "job_label_arrays", then_a_label)

    job_aggregate(job_id=job.pk, method="ds")

    item.refresh_from_db()
    assert (item.state, item.label, item.n_labels) == ("settled", "dog", 2)
    assert len(item.result_meta["workers"]) == 2


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the COPY path is PostgreSQL's")
def test_label_arrays_by_copy_equal_the_orm_path():
    # Given a job with labels, one worker suspended and one stored value that is no class
    job, _, crowd = crowd_job(4, workers=3, policy={"min_labels": 3, "max_labels": 3})
    for worker in crowd:
        for _ in range(3):
            crowd_label(worker, CLASSES[worker.pk % 3])
    odd = Label.objects.filter(job=job).order_by("id")[4]
    Label.objects.filter(pk=odd.pk).update(value="zebra")
    Worker.objects.filter(pk=crowd[1].pk).update(status=Worker.Status.SUSPENDED)
    middle = int(Label.objects.filter(job=job).order_by("id")[5].pk)
    for max_label_id in (None, middle):
        # When the label rows are read both ways
        fast = services._label_rows_copy(job=job, max_label_id=max_label_id)
        plain = services._label_rows_orm(job=job, max_label_id=max_label_id)
        # Then the columns are the same, and so is every array built from them
        for name in ("ids", "items", "workers", "codes", "inactive"):
            assert np.array_equal(getattr(fast, name), getattr(plain, name)), name
        assert -1 in plain.codes.tolist()
        assert plain.inactive.any()
        for drop in (True, False):
            a = services._label_arrays(fast, drop_inactive=drop)
            b = services._label_arrays(plain, drop_inactive=drop)
            assert a.max_label_id == b.max_label_id
            assert a.excluded_workers == b.excluded_workers
            for name in ("tasks", "workers", "labels", "item_ids", "worker_ids", "read_counts"):
                assert np.array_equal(getattr(a, name), getattr(b, name)), name


def test_stored_posteriors_are_near_only_when_every_probability_is():
    # Given stored posteriors: the run's, one a little off, one far off, one of another
    # length, one that is no list of numbers, one missing, and an item this run did not read
    rounded = np.array([[0.2, 0.8]] * 6)
    position = {pk: pk for pk in range(6)}
    stored = ["[0.2, 0.8]", "[0.2005, 0.7995]", "[0.3, 0.7]", "[1.0]", '["a", 0.8]', None]
    rows = [(pk, None, None, 0, None, text, "{}") for pk, text in enumerate(stored)]
    rows.append((99, None, None, 0, None, "[0.2, 0.8]", "{}"))
    # When they are compared at once
    near = services._posteriors_near(rows, position, rounded)
    # Then only the first two are within the rewrite tolerance
    assert near.tolist() == [True, True, False, False, False, False, False]
