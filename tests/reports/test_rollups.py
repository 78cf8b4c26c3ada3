"""The hourly rollups against hand-computed figures on a small fixed data set: the rows a run
writes, the dashboards' figures read from them (equal to those counted from the labels),
late labels re-rolled, QC re-scoring re-rolled, and the marginal cost of the last accuracy
point."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.test import Client
from django.utils import timezone

from apps.assignments.models import Label
from apps.jobs.models import Item, Job
from apps.reports.models import (
    JobCurve,
    JobHour,
    JobItems,
    RollupState,
    WorkerDay,
    WorkerDayValue,
    WorkerHour,
    WorkerHourValue,
)
from apps.reports.rollups import rollup_item, rollup_rebuild, rollup_run
from apps.reports.selectors import job_metrics, overview_metrics, worker_history
from apps.workforce.models import LedgerEntry, Worker
from tests.reports.labels import paid_label
from workers.celery import app


def _label(job, item, worker, value, at, duration_ms):
    return paid_label(job, item, worker, value, at=at, duration_ms=duration_ms)


@pytest.fixture
def fixed_job(client_actor, make_actor):
    """Two regular items (i1, i2, settled) and two gold items (g1, g2, truth "a"), three
    workers, eight labels at 0.50 in two hours two days ago, a 1.25 bonus:

    hour H1: i1 w1 a 1000 ms, i1 w2 a 2000 ms, g1 w2 b 3000 ms, g1 w1 a 1000 ms
    hour H2: i1 w3 b  500 ms, i2 w1 b 1000 ms, g2 w3 a (no time), g2 w1 a 1000 ms
    """
    org = client_actor.user.memberships.get().organization
    job = Job.objects.create(
        organization=org,
        name="Rolled",
        status="running",
        label_schema={"classes": ["a", "b"]},
        policy={"min_labels": 2, "max_labels": 4},
        pricing={"crowd_label": 0.5},
    )
    i1, i2, g1, g2 = Item.objects.bulk_create(
        [
            Item(job=job, external_id="i1", state="settled", source="crowd", labels_needed=4),
            Item(job=job, external_id="i2", state="settled", source="crowd", labels_needed=4),
            Item(job=job, external_id="g1", gold_label="a"),
            Item(job=job, external_id="g2", gold_label="a"),
        ]
    )
    w1, w2, w3 = (Worker.objects.get(user=make_actor("annotator").user) for _ in range(3))
    # Two days back, so that a worker's all-time figures come from the day rows.
    h1 = timezone.now().replace(minute=0, second=0, microsecond=0) - timedelta(days=2, hours=3)
    h2 = h1 + timedelta(hours=1)
    at1, at2 = h1 + timedelta(minutes=10), h2 + timedelta(minutes=10)
    for item, worker, value, at, ms in [
        (i1, w1, "a", at1, 1000),
        (i1, w2, "a", at1, 2000),
        (g1, w2, "b", at1, 3000),
        (g1, w1, "a", at1, 1000),
        (i1, w3, "b", at2, 500),
        (i2, w1, "b", at2, 1000),
        (g2, w3, "a", at2, None),
        (g2, w1, "a", at2, 1000),
    ]:
        _label(job, item, worker, value, at, ms)
    LedgerEntry.objects.create(
        worker=w1, job=job, kind="bonus", amount=Decimal("1.25"), idempotency_key="bonus-1"
    )
    return job, (w1, w2, w3), (h1, h2), (i1, i2, g1, g2)


def _row(model, **filters):
    return model.objects.filter(**filters).values(
        "labels",
        "crowd_labels",
        "gold_answers",
        "gold_correct",
        "duration_ms_sum",
        "duration_n",
        "paid_crowd",
        "paid_gold",
    )[0]


def test_a_run_writes_the_hand_computed_rows(fixed_job):
    job, (w1, w2, w3), (h1, h2), _ = fixed_job

    now = timezone.now()
    run = rollup_run(now=now)

    assert (run.hours, run.labels_read, run.curves) == (2, 8, 1)
    assert _row(JobHour, job=job, hour=h1) == {
        "labels": 4,
        "crowd_labels": 2,
        "gold_answers": 2,
        "gold_correct": 1,
        "duration_ms_sum": 7000,
        "duration_n": 4,
        "paid_crowd": Decimal("1.0"),
        "paid_gold": Decimal("1.0"),
    }
    assert _row(JobHour, job=job, hour=h2) == {
        "labels": 4,
        "crowd_labels": 2,
        "gold_answers": 2,
        "gold_correct": 2,
        "duration_ms_sum": 2500,
        "duration_n": 3,
        "paid_crowd": Decimal("1.0"),
        "paid_gold": Decimal("1.0"),
    }
    # i1's third crowd label (w3, in H2) is rank 3; i2's first is rank 1.
    assert JobHour.objects.get(job=job, hour=h1).by_rank == {"1": 1, "2": 1}
    assert JobHour.objects.get(job=job, hour=h2).by_rank == {"1": 1, "3": 1}
    assert set(
        WorkerHourValue.objects.filter(job=job, worker=w1, hour=h2).values_list("value", "labels")
    ) == {("a", 1), ("b", 1)}
    assert WorkerHour.objects.filter(job=job).count() == 4  # w1, w2 in H1; w1, w3 in H2
    assert RollupState.objects.get().covered_until == now
    # w1's day: i1 a, g1 a (H1), i2 b, g2 a (H2); 4 labels, 2 gold both right, 4 x 0.50.
    day = WorkerDay.objects.filter(job=job, worker=w1).values(
        "labels", "gold_answers", "gold_correct", "paid_crowd", "paid_gold", "duration_ms_sum"
    )
    assert {k: sum(r[k] for r in day) for k in day[0]} == {
        "labels": 4,
        "gold_answers": 2,
        "gold_correct": 2,
        "paid_crowd": Decimal("1.0"),
        "paid_gold": Decimal("1.0"),
        "duration_ms_sum": 4000,
    }
    answered: dict[str, int] = {}
    for value, n in WorkerDayValue.objects.filter(job=job, worker=w1).values_list(
        "value", "labels"
    ):
        answered[value] = answered.get(value, 0) + n
    assert answered == {"a": 3, "b": 1}


def test_figures_from_the_rollups_equal_the_figures_from_the_labels(
    fixed_job, ops_actor, client_actor
):
    job, (w1, w2, w3), _, _ = fixed_job
    vendor_ids = [w1.organization_id]
    direct = job_metrics(job=job, worker_vendor_ids=vendor_ids)  # no run yet: all counted

    rollup_run()
    rolled = job_metrics(job=job, worker_vendor_ids=vendor_ids)

    for key in ("throughput", "series", "cost", "error_rates", "worker_count", "workers"):
        assert rolled[key] == direct[key], key
    assert rolled["throughput"]["labels_total"] == 8
    assert rolled["error_rates"]["gold_error_rate"] == 0.25  # 1 wrong of 4 gold answers
    assert rolled["cost"]["labels"] == Decimal("4.0")
    assert rolled["cost"]["total"] == Decimal("5.25")
    people = {r["worker_id"]: r for r in rolled["workers"]}
    assert (people[w1.pk]["labels"], people[w1.pk]["earnings"]) == (4, Decimal("3.25"))
    assert (people[w2.pk]["gold"], people[w2.pk]["gold_correct"]) == (1, 0)
    assert people[w2.pk]["mean_duration_ms"] == 2500
    assert people[w3.pk]["mean_duration_ms"] == 500  # its gold answer had no time
    coq = rolled["cost_of_quality"]
    # Crowd labels on regular items: 4 x 0.50 = 2.00; one is beyond min_labels 2 (rank 3).
    assert (coq["base_labels"], coq["extra_redundancy"]) == (Decimal("1.5"), Decimal("0.5"))
    assert (coq["gold_overhead"], coq["total"]) == (Decimal("2.0"), Decimal("5.25"))
    assert coq == direct["cost_of_quality"] | {
        "marginal_accuracy_point": coq["marginal_accuracy_point"]
    }
    # The pages read the rollup rows: changing a row changes what they show.
    JobHour.objects.filter(job=job).update(labels=100)
    assert job_metrics(job=job)["throughput"]["labels_total"] == 200
    (row,) = overview_metrics(jobs=Job.objects.filter(pk=job.pk))
    assert row["labels"] == 200
    rollup_rebuild(job_id=job.pk)
    assert job_metrics(job=job)["throughput"]["labels_total"] == 8
    history = worker_history(worker_id=w1.pk)
    assert sum(d["labels"] for d in history) == 4
    assert sum(d["gold_answers"] for d in history) == 2


def test_a_late_label_for_a_rolled_hour_is_picked_up_and_rerolling_is_idempotent(
    fixed_job, make_actor
):
    job, _, (h1, _), (_, i2, _, _) = fixed_job
    rollup_run()
    late_worker = Worker.objects.get(user=make_actor("annotator").user)

    _label(job, i2, late_worker, "b", h1 + timedelta(minutes=30), 4000)
    run = rollup_run()
    again = rollup_run()

    assert run.hours >= 1
    assert again.watermark == run.watermark
    assert _row(JobHour, job=job, hour=h1)["labels"] == 5
    assert _row(JobHour, job=job, hour=h1)["paid_crowd"] == Decimal("1.5")
    assert WorkerHour.objects.get(job=job, worker=late_worker).labels == 1
    assert JobHour.objects.filter(job=job).count() == 2
    assert job_metrics(job=job)["throughput"]["labels_total"] == 9


def test_labels_of_the_current_hour_are_counted_before_the_next_run(fixed_job, make_actor):
    job, _, _, (_, i2, _, _) = fixed_job
    rollup_run()
    worker = Worker.objects.get(user=make_actor("annotator").user)

    _label(job, i2, worker, "a", timezone.now(), 900)

    metrics = job_metrics(job=job)
    assert metrics["throughput"]["labels_total"] == 9
    assert metrics["throughput"]["labels_last_hour"] == 1
    assert metrics["series"][-1]["labels"] == 1


def test_the_current_hour_splits_at_the_run_and_nothing_is_counted_twice(fixed_job, make_actor):
    job, (w1, *_), _, (_, i2, _, _) = fixed_job
    worker = Worker.objects.get(user=make_actor("annotator").user)
    _label(job, i2, worker, "a", timezone.now() - timedelta(seconds=30), 900)
    rollup_run()
    other = Worker.objects.get(user=make_actor("annotator").user)
    _label(job, i2, other, "b", None, 800)  # after the run

    rolled = job_metrics(job=job, worker_vendor_ids=[w1.organization_id])
    RollupState.objects.all().delete()  # no rollups: every label counted directly
    direct = job_metrics(job=job, worker_vendor_ids=[w1.organization_id])

    assert rolled["throughput"]["labels_total"] == 10
    for key in ("throughput", "series", "cost", "error_rates", "worker_count", "workers"):
        assert rolled[key] == direct[key], key


def test_qc_rescoring_a_gold_item_rerolls_its_hours(fixed_job):
    job, _, (h1, _), (_, _, g1, _) = fixed_job
    rollup_run()

    # As apps.reviews does when QC finds the gold answer wrong ("b", not "a").
    Label.objects.filter(item=g1, value="b").update(is_correct=True)
    Label.objects.filter(item=g1).exclude(value="b").update(is_correct=False)
    assert rollup_item(item_id=g1.pk) == 1

    assert _row(JobHour, job=job, hour=h1)["gold_correct"] == 1
    assert job_metrics(job=job)["error_rates"]["gold_answers"] == 4


def test_the_marginal_cost_of_the_last_accuracy_point_in_the_metrics(fixed_job, client_actor):
    job, *_ = fixed_job
    rollup_run()

    body = client_actor.client.get(f"/api/v1/jobs/{job.pk}/metrics/").json()
    point = body["cost_of_quality"]["marginal_accuracy_point"]
    page = Client()
    page.force_login(client_actor.user)
    html = page.get(f"/dashboard/jobs/{job.pk}/").content.decode()

    # Gold answers in order: g1 b, a (1 label: wrong; 2: a tie, half right); g2 a, a (right,
    # right). Accuracy 0.5 at one label per item, 0.75 at two: +25 points. The job has 4 crowd
    # labels on 2 regular items, 2 per item: the last step is 1 -> 2 labels, one 0.50 label
    # per item for 25 points, 0.02 per item per point, 0.04 over its 2 accepted items.
    assert JobCurve.objects.get(job=job).points == [
        {"k": 1, "items": 2, "accuracy": 0.5, "before": None},
        {"k": 2, "items": 2, "accuracy": 0.75, "before": 0.5},
    ]
    assert point == {
        "k": 2,
        "labels_per_item": 2.0,
        "accuracy_before": 0.5,
        "accuracy": 0.75,
        "gain_points": 25.0,
        "gold_items": 2,
        "per_item_per_point": 0.02,
        "per_point": 0.04,
        "items": 2,
    }
    assert "The last accuracy point costs <strong>0.04</strong>" in html


def test_the_beat_schedule_runs_the_rollup_every_minute():
    app.loader.import_default_modules()
    (entry,) = [e for e in app.conf.beat_schedule.values() if e["task"] == "concord.reports.rollup"]
    assert entry["schedule"] == 60.0
    assert "concord.reports.rollup" in app.tasks
    assert "concord.reports.rollup_item" in app.tasks


def test_the_run_keeps_the_item_counts_and_an_upload_forgets_them(fixed_job, client_actor):
    job, *_ = fixed_job
    rollup_run()
    kept = JobItems.objects.get(job=job)

    assert kept.figures["by_state"] == {"open": 2, "expert": 0, "review": 0, "settled": 2}
    assert (kept.figures["gold"], kept.figures["accepted"]) == (2, 2)
    # The pages read the kept counts...
    JobItems.objects.filter(job=job).update(figures={**kept.figures, "total": 99})
    assert job_metrics(job=job)["items"]["total"] == 99
    # ...until an upload changes the items: then they count them again.
    response = client_actor.client.post(
        f"/api/v1/jobs/{job.pk}/items/",
        [{"external_id": "new", "payload": {"text": "a new one"}}],
        format="json",
    )
    assert response.status_code == 201, response.content
    assert not JobItems.objects.filter(job=job).exists()
    assert job_metrics(job=job)["items"]["total"] == 5
