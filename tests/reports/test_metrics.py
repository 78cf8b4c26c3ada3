"""Job and pool metrics, the metrics API and the dashboard pages."""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from decimal import Decimal

import pytest
from django.test import Client
from django.utils import timezone

from apps.assignments.models import Label
from apps.jobs.models import Item, Job
from apps.workforce.models import LedgerEntry, Pool, Worker
from tests.reports.labels import paid_label


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
    answers = [
        (items[0], workers[0], "a"),
        (items[0], workers[1], "a"),
        (items[1], workers[0], "b"),
        (items[4], workers[0], "a"),
        (items[4], workers[1], "b"),
    ]
    for item, worker, value in answers:
        paid_label(job, item, worker, value)
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
    assert b'data-chart="hourly"' in detail.content
    assert b"2 / 5" in detail.content
    assert b"reports/vendor/chartjs/chart.umd.min.js" in detail.content


def _page(actor) -> Client:
    client = Client()
    client.force_login(actor.user)
    return client


def _csv_rows(response) -> list[list[str]]:
    text = b"".join(response.streaming_content).decode()
    return list(csv.reader(io.StringIO(text)))


def test_the_job_page_shows_labels_of_the_last_hour_and_money_exactly(
    ops_actor, client_actor, labeled_job
):
    job, workers = labeled_job
    Label.objects.filter(job=job, worker=workers[1]).update(
        created_at=timezone.now() - timedelta(hours=2)
    )

    page = _page(ops_actor).get(f"/dashboard/jobs/{job.pk}/").content.decode()
    client_page = _page(client_actor).get(f"/dashboard/jobs/{job.pk}/").content.decode()
    hourly = _csv_rows(_page(ops_actor).get(f"/dashboard/jobs/{job.pk}/?format=csv"))
    people = _csv_rows(_page(ops_actor).get(f"/dashboard/jobs/{job.pk}/?format=csv&table=workers"))

    assert '<div class="figure" id="labels-last-hour">3</div>' in page
    assert "5 in all" in page
    assert '<div class="figure" id="cost">3.75</div>' in page
    assert workers[0].user.username in page
    assert workers[0].user.username not in client_page  # clients never see who labeled
    assert hourly[0][:3] == ["hour", "labels", "gold_answers"]
    assert sum(int(row[1]) for row in hourly[1:]) == 5
    assert people[0][:2] == ["worker", "username"]
    earnings = {row[1]: row[11] for row in people[1:]}
    assert earnings[workers[0].user.username] == "2.7500"  # Decimal, not 2.7500000000002


def test_ops_see_their_own_vendors_pools_and_workers_only(
    ops_actor, other_vendor_ops_actor, labeled_job
):
    _, workers = labeled_job
    pool = Pool.objects.create(organization=workers[0].organization, name="Night shift")
    pool.members.add(*workers)

    mine = _page(ops_actor).get(f"/dashboard/pools/{pool.pk}/")
    members = _csv_rows(_page(ops_actor).get(f"/dashboard/pools/{pool.pk}/?format=csv"))
    theirs = _page(other_vendor_ops_actor).get(f"/dashboard/pools/{pool.pk}/")
    their_worker = _page(other_vendor_ops_actor).get(f"/dashboard/workers/{workers[0].pk}/")
    their_dashboard = _page(other_vendor_ops_actor).get("/dashboard/").content.decode()

    assert mine.status_code == 200
    assert 'data-chart="accuracy"' in mine.content.decode()
    assert {row[1] for row in members[1:]} == {w.user.username for w in workers}
    assert (theirs.status_code, their_worker.status_code) == (404, 404)
    for worker in workers:
        assert worker.user.username not in their_dashboard


def test_worker_page_actions_call_the_workforce_services(ops_actor, labeled_job):
    job, workers = labeled_job
    worker = workers[0]
    pool = Pool.objects.create(organization=worker.organization, name="Day shift")
    page = _page(ops_actor)
    url = f"/dashboard/workers/{worker.pk}/actions/"

    shown = page.get(f"/dashboard/workers/{worker.pk}/")
    bonus = page.post(url, {"action": "bonus", "amount": "1.50", "job": job.pk, "key": "k1"})
    again = page.post(url, {"action": "bonus", "amount": "1.50", "job": job.pk, "key": "k1"})
    bad = page.post(url, {"action": "bonus", "amount": "lots", "job": job.pk})
    added = page.post(url, {"action": "add_to_pool", "pool": pool.pk})
    suspended = page.post(url, {"action": "suspend", "reason": "Checking answers."})

    assert shown.status_code == 200
    assert 'id="actions"' in shown.content.decode()
    assert bonus.status_code == again.status_code == 302
    assert "Bonus+of+1.50+paid" in bonus.url
    assert (
        LedgerEntry.objects.filter(worker=worker, kind="bonus", amount=Decimal("1.5")).count() == 1
    )
    assert "error=" in bad.url
    assert "must be a number" in page.get(bad.url).content.decode()
    assert "Added+to+pool" in added.url
    assert pool.members.filter(pk=worker.pk).exists()
    worker.refresh_from_db()
    assert worker.status == "suspended"
    assert "Suspended." in page.get(suspended.url).content.decode()


def test_the_metrics_overview_lists_the_callers_jobs_with_exact_money(
    client_actor, other_client_actor, labeled_job
):
    job, _ = labeled_job

    mine = client_actor.client.get("/api/v1/metrics/").json()["results"]
    theirs = other_client_actor.client.get("/api/v1/metrics/").json()["results"]

    (row,) = mine
    assert (row["id"], row["items"], row["settled"], row["labels"]) == (job.pk, 5, 2, 5)
    assert row["cost"] == 3.75
    assert row["gold_error_rate"] == pytest.approx(0.5)
    assert theirs == []


def test_the_job_page_offers_time_ranges(ops_actor, labeled_job):
    job, _ = labeled_job
    page = _page(ops_actor)

    week = page.get(f"/dashboard/jobs/{job.pk}/?hours=168").content.decode()
    hourly = _csv_rows(page.get(f"/dashboard/jobs/{job.pk}/?format=csv&hours=6"))
    bogus = page.get(f"/dashboard/jobs/{job.pk}/?hours=99999")

    assert '<strong aria-current="true">7 days</strong>' in week
    assert 6 <= len(hourly) - 1 <= 7  # six hours back to this one
    assert bogus.status_code == 200


def test_the_cost_of_quality_splits_what_the_job_paid(client_actor, labeled_job):
    job, _ = labeled_job
    Job.objects.filter(pk=job.pk).update(policy={"min_labels": 1, "max_labels": 3})

    body = client_actor.client.get(f"/api/v1/jobs/{job.pk}/metrics/").json()["cost_of_quality"]

    # Crowd labels on regular items: i0 twice, i1 once (0.50 each) = 1.50, of which i0's
    # second label is redundancy beyond min_labels 1: 1.50 x 1/3 = 0.50. Gold: 2 x 0.50.
    assert body["base_labels"] == 1.0
    assert body["extra_redundancy"] == 0.5
    assert body["gold_overhead"] == 1.0
    assert (body["expert_labels"], body["bonuses"], body["rework"]) == (0, 1.25, 0)
    assert body["total"] == 3.75
    assert (body["accepted_items"], body["per_accepted_item"]) == (2, 1.875)


def test_every_table_downloads_as_csv(ops_actor, labeled_job):
    job, workers = labeled_job
    pool = Pool.objects.create(organization=workers[0].organization, name="CSV pool")
    pool.members.add(workers[0])
    page = _page(ops_actor)

    pools = _csv_rows(page.get("/dashboard/?format=csv&table=pools"))
    jobs = _csv_rows(page.get("/dashboard/?format=csv"))
    cost = _csv_rows(page.get(f"/dashboard/jobs/{job.pk}/?format=csv&table=cost"))
    history = _csv_rows(page.get(f"/dashboard/workers/{workers[0].pk}/?format=csv"))
    confusion = page.get(f"/dashboard/workers/{workers[0].pk}/?format=csv&table=confusion")

    assert ["CSV pool", "1"] == pools[1][1:3]
    assert jobs[1][:2] == [str(job.pk), "Metrics"]
    assert dict(cost[1:])["total"] == "3.7500"
    assert len(history) == 15  # a header and 14 days
    assert confusion.status_code == 200
