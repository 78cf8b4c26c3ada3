"""Job and pool metrics, the metrics API and the dashboard pages."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from apps.assignments.models import Assignment, Label
from apps.jobs.models import Item, Job
from apps.workforce.models import LedgerEntry, Pool, Worker


@pytest.fixture
def labeled_job(client_actor, make_actor):
    org = client_actor.user.memberships.get().organization
    job = Job.objects.create(
        organization=org,
        name="Metrics",
        status="running",
        label_schema={"classes": ["a", "b"]},
        pricing={"crowd_label": 0.5},
    )
    items = Item.objects.bulk_create(
        [Item(job=job, external_id=f"i{i}") for i in range(4)]
        + [Item(job=job, external_id="g", gold_label="a")]
    )
    Item.objects.filter(pk__in=[items[0].pk, items[1].pk]).update(
        state="settled", source="crowd", settled_at=timezone.now()
    )
    Item.objects.filter(pk=items[2].pk).update(state="review")
    workers = [Worker.objects.get(user=make_actor("annotator").user) for _ in range(2)]
    now = timezone.now()
    answers = [
        (items[0], workers[0], "a"),
        (items[0], workers[1], "a"),
        (items[1], workers[0], "b"),
        (items[4], workers[0], "a"),
        (items[4], workers[1], "b"),
    ]
    for item, worker, value in answers:
        a = Assignment.objects.create(
            item=item,
            job=job,
            worker=worker,
            state="submitted",
            is_gold=item.is_gold,
            leased_at=now - timedelta(minutes=1),
            expires_at=now + timedelta(minutes=9),
        )
        label = Label.objects.create(
            assignment=a,
            item=item,
            job=job,
            worker=worker,
            value=value,
            tier="crowd",
            duration_ms=1000,
            is_gold=item.is_gold,
            is_correct=(value == item.gold_label) if item.is_gold else None,
        )
        LedgerEntry.objects.create(
            worker=worker,
            job=job,
            label=label,
            kind="label",
            amount=Decimal("0.5"),
            idempotency_key=f"label:{label.pk}",
        )
    LedgerEntry.objects.create(
        worker=workers[0], job=job, kind="bonus", amount=Decimal("1.25"), idempotency_key="b1"
    )
    return job, workers


def test_job_metrics_figures(client_actor, ops_actor, labeled_job):
    job, workers = labeled_job

    body = client_actor.client.get(f"/api/v1/jobs/{job.pk}/metrics/").json()

    assert body["items"]["total"] == 5
    assert body["items"]["settled"] == 2
    assert body["items"]["review"] == 1
    assert body["progress"] == pytest.approx(0.4)
    assert body["throughput"]["labels_total"] == 5
    assert body["throughput"]["labels_last_hour"] == 5
    assert sum(h["labels"] for h in body["throughput"]["hourly"]) == 5
    assert body["cost"]["labels"] == pytest.approx(2.5)
    assert body["cost"]["bonuses"] == pytest.approx(1.25)
    assert body["cost"]["per_settled_item"] == pytest.approx(3.75 / 2)
    assert body["error_rates"]["gold_answers"] == 2
    assert body["error_rates"]["gold_error_rate"] == pytest.approx(0.5)
    # The client sees how many worked, never who or for how much; the vendor's ops do.
    assert body["worker_count"] == 2
    assert "workers" not in body
    top = ops_actor.client.get(f"/api/v1/jobs/{job.pk}/metrics/").json()["workers"][0]
    assert (top["worker_id"], top["labels"], top["earnings"]) == (
        workers[0].pk,
        3,
        pytest.approx(2.75),
    )
    assert top["gold_accuracy"] == 1.0


def test_job_metrics_hidden_from_other_tenants(other_client_actor, labeled_job):
    job, _ = labeled_job
    assert other_client_actor.client.get(f"/api/v1/jobs/{job.pk}/metrics/").status_code == 404


def test_pool_metrics_for_ops(ops_actor, labeled_job):
    job, workers = labeled_job
    pool = Pool.objects.create(organization=workers[0].organization, name="P")
    pool.members.add(workers[0])

    body = ops_actor.client.get(f"/api/v1/pools/{pool.pk}/metrics/").json()

    assert body["members"] == 1
    assert body["labels_total"] == 3
    assert body["cost"]["total"] == pytest.approx(2.75)
    assert body["error_rates"]["gold_accuracy"] == 1.0


def test_dashboard_pages_after_token_login(
    client, ops_actor, labeled_job, django_assert_max_num_queries
):
    job, _ = labeled_job
    assert client.get("/dashboard/").status_code == 302
    bad = client.post("/login/", {"token": "nope"})
    assert bad.status_code == 400
    assert client.post("/login/?next=/dashboard/", {"token": ops_actor.token}).status_code == 302

    with django_assert_max_num_queries(15):
        page = client.get("/dashboard/")
    assert page.status_code == 200
    assert b"Metrics" in page.content

    detail = client.get(f"/dashboard/jobs/{job.pk}/")
    assert detail.status_code == 200
    assert b"<svg" in detail.content
    assert b"2 / 5" in detail.content
