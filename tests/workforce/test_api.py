"""The ops workforce API: workers, pools, bans, earnings, bonuses, opening jobs to pools."""

from __future__ import annotations

from decimal import Decimal

import pytest
from rest_framework.test import APIClient

from apps.accounts.models import Membership
from apps.assignments.models import Assignment
from apps.pipeline.next import assignment_next
from apps.pipeline.submit import assignment_submit
from apps.workforce.models import LedgerEntry, Pool, Worker
from tests.workforce.factories import JobFactory, make_items, make_pool, make_worker

pytestmark = pytest.mark.django_db


def _token_client(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


def test_create_worker_returns_a_working_token_once(ops_actor):
    response = ops_actor.client.post(
        "/api/v1/workers/",
        {"username": "newbie", "tier": "crowd", "pay_rate": "12.50", "skills": ["en"]},
        format="json",
    )

    assert response.status_code == 201
    body = response.json()
    worker = Worker.objects.get(user__username="newbie")
    assert body["worker"] == {
        "id": worker.pk,
        "username": "newbie",
        "tier": "crowd",
        "status": "active",
        "status_reason": "",
        "pay_rate": "12.50",
        "skills": ["en"],
        "pools": [],
        "created_at": body["worker"]["created_at"],
    }
    assert Membership.objects.get(user=worker.user).role == "annotator"
    assert worker.organization.name == ops_actor.org_name
    nothing = _token_client(body["token"]).post("/api/v1/assignments/next/")
    assert (nothing.status_code, nothing["Concord-Idle-Reason"]) == (204, "no_open_job")
    again = ops_actor.client.get(f"/api/v1/workers/{worker.pk}/")
    assert "token" not in again.json()


def test_create_expert_with_pools(ops_actor):
    pool = make_pool(name="experts")

    response = ops_actor.client.post(
        "/api/v1/workers/",
        {"username": "sage", "tier": "expert", "pools": [pool.pk]},
        format="json",
    )

    assert response.status_code == 201
    assert response.json()["worker"]["pools"] == [pool.pk]
    assert Membership.objects.get(user__username="sage").role == "expert"


def test_create_worker_with_a_taken_username_is_409(ops_actor):
    make_worker(username="taken")

    response = ops_actor.client.post("/api/v1/workers/", {"username": "taken"}, format="json")

    assert (response.status_code, response.json()["error"]["code"]) == (409, "conflict")


def test_list_workers_filters_and_query_count(ops_actor, django_assert_max_num_queries):
    pool = make_pool(name="p")
    crowd = [make_worker() for _ in range(6)]
    expert = make_worker(tier="expert")
    pool.members.set([*crowd[:3], expert])
    Worker.objects.filter(pk=crowd[0].pk).update(status="banned")

    with django_assert_max_num_queries(7):
        response = ops_actor.client.get("/api/v1/workers/", {"page_size": 50})
    assert response.status_code == 200
    assert response.json()["count"] == 7
    tiers = ops_actor.client.get("/api/v1/workers/", {"tier": "expert"}).json()["results"]
    assert [w["id"] for w in tiers] == [expert.pk]
    in_pool = ops_actor.client.get("/api/v1/workers/", {"pool": pool.pk}).json()["results"]
    assert [w["id"] for w in in_pool] == [*(w.pk for w in crowd[:3]), expert.pk]
    banned = ops_actor.client.get("/api/v1/workers/", {"status": "banned"}).json()["results"]
    assert [w["id"] for w in banned] == [crowd[0].pk]


def test_ops_of_another_vendor_see_nothing(make_actor):
    make_worker()
    other_ops = make_actor("ops", org="Other Vendor")

    assert other_ops.client.get("/api/v1/workers/").json()["count"] == 0
    assert other_ops.client.get(f"/api/v1/workers/{Worker.objects.get().pk}/").status_code == 404


def test_update_worker(ops_actor):
    worker = make_worker()

    response = ops_actor.client.patch(
        f"/api/v1/workers/{worker.pk}/", {"tier": "expert", "skills": ["fr"]}, format="json"
    )

    assert response.status_code == 200
    assert (response.json()["tier"], response.json()["skills"]) == ("expert", ["fr"])
    assert set(Membership.objects.filter(user=worker.user).values_list("role", flat=True)) == {
        "annotator",
        "expert",
    }


def test_ban_releases_leases_and_unban_restores(ops_actor):
    job = JobFactory()
    make_items(job, 2)
    worker = make_worker()
    make_pool(jobs=[job], workers=[worker])
    task = assignment_next(worker=worker)

    banned = ops_actor.client.post(
        f"/api/v1/workers/{worker.pk}/ban/", {"reason": "spam"}, format="json"
    )

    assert banned.status_code == 200
    assert (banned.json()["status"], banned.json()["status_reason"]) == ("banned", "spam")
    assert Assignment.objects.get(pk=task.id).state == "released"
    suspended = ops_actor.client.post(f"/api/v1/workers/{worker.pk}/suspend/")
    assert suspended.json()["status"] == "suspended"
    unbanned = ops_actor.client.post(f"/api/v1/workers/{worker.pk}/unban/")
    assert (unbanned.status_code, unbanned.json()["status"]) == (200, "active")


@pytest.mark.parametrize("role", ["annotator", "client", "qc"])
def test_workforce_api_is_ops_only(make_actor, role):
    actor = make_actor(role)

    for response in (
        actor.client.get("/api/v1/workers/"),
        actor.client.get("/api/v1/pools/"),
        actor.client.post("/api/v1/workers/", {"username": "x"}, format="json"),
    ):
        assert (response.status_code, response.json()["error"]["code"]) == (
            403,
            "permission_denied",
        )


def test_pool_create_list_update(ops_actor, django_assert_max_num_queries):
    workers = [make_worker() for _ in range(3)]

    created = ops_actor.client.post(
        "/api/v1/pools/",
        {"name": "night shift", "description": "EU nights", "members": [workers[0].pk]},
        format="json",
    )

    assert created.status_code == 201
    pool_id = created.json()["id"]
    assert created.json() == {
        "id": pool_id,
        "name": "night shift",
        "description": "EU nights",
        "members": [workers[0].pk],
        "jobs": [],
        "created_at": created.json()["created_at"],
    }
    for i in range(5):
        make_pool(name=f"extra {i}", workers=workers)
    with django_assert_max_num_queries(8):
        listed = ops_actor.client.get("/api/v1/pools/")
    assert listed.json()["count"] == 6
    assert [
        p["id"] for p in ops_actor.client.get("/api/v1/pools/", {"name": "night"}).json()["results"]
    ] == [pool_id]
    updated = ops_actor.client.patch(
        f"/api/v1/pools/{pool_id}/", {"members": [w.pk for w in workers]}, format="json"
    )
    assert updated.json()["members"] == [w.pk for w in workers]
    dupe = ops_actor.client.post("/api/v1/pools/", {"name": "night shift"}, format="json")
    assert dupe.status_code == 409


def test_pool_members_must_be_the_vendors_workers(ops_actor, make_actor):
    foreign = Worker.objects.get(user=make_actor("annotator", org="Other Vendor").user)

    response = ops_actor.client.post(
        "/api/v1/pools/", {"name": "p", "members": [foreign.pk]}, format="json"
    )

    assert (response.status_code, response.json()["error"]["code"]) == (400, "invalid")


def test_open_a_job_to_a_pool_lets_its_workers_work(ops_actor):
    job = JobFactory()
    make_items(job, 1)
    worker = make_worker()
    pool = make_pool(workers=[worker])
    assert assignment_next(worker=worker).reason == "no_open_job"

    opened = ops_actor.client.post(
        f"/api/v1/jobs/{job.pk}/pools/", {"pool": pool.pk}, format="json"
    )
    again = ops_actor.client.post(f"/api/v1/jobs/{job.pk}/pools/", {"pool": pool.pk}, format="json")

    assert (opened.status_code, opened.json()) == (201, {"job": job.pk, "pools": [pool.pk]})
    assert again.status_code == 200
    assert list(Pool.objects.get().jobs.all()) == [job]
    task = assignment_next(worker=worker)
    assert getattr(task, "job", None) == job.pk, task
    assert ops_actor.client.get(f"/api/v1/jobs/{job.pk}/pools/").json() == {
        "job": job.pk,
        "pools": [pool.pk],
    }


def test_open_unknown_job_or_pool(ops_actor):
    job = JobFactory()
    pool = make_pool()

    assert (
        ops_actor.client.post(
            "/api/v1/jobs/999/pools/", {"pool": pool.pk}, format="json"
        ).status_code
        == 404
    )
    bad_pool = ops_actor.client.post(f"/api/v1/jobs/{job.pk}/pools/", {"pool": 999}, format="json")
    assert bad_pool.status_code == 400


def _earn(worker, job, n):
    for _ in range(n):
        task = assignment_next(worker=worker, job_id=job.pk)
        assignment_submit(worker=worker, assignment_id=task.id, label="cat")


def test_earnings_for_ops_and_the_worker_themself(ops_actor, make_actor):
    job = JobFactory()
    make_items(job, 3)
    annotator = make_actor("annotator")
    worker = Worker.objects.get(user=annotator.user)
    other = make_worker()
    make_pool(jobs=[job], workers=[worker, other])
    _earn(worker, job, 3)
    ops_actor.client.post(
        f"/api/v1/workers/{worker.pk}/bonuses/",
        {"job": job.pk, "amount": "1.25", "idempotency_key": "week-1"},
        format="json",
    )

    expected = {
        "worker": worker.pk,
        "labels": 3,
        "label_amount": "0.1500",
        "bonus_amount": "1.2500",
        "total": "1.4000",
        "jobs": [
            {
                "job": job.pk,
                "labels": 3,
                "label_amount": "0.1500",
                "bonuses": 1,
                "bonus_amount": "1.2500",
            }
        ],
    }
    assert ops_actor.client.get(f"/api/v1/workers/{worker.pk}/earnings/").json() == expected
    assert annotator.client.get(f"/api/v1/workers/{worker.pk}/earnings/").json() == expected
    assert annotator.client.get(f"/api/v1/workers/{other.pk}/earnings/").status_code == 404


def test_bonus_is_idempotent(ops_actor):
    job = JobFactory()
    make_items(job, 1)
    worker = make_worker()
    make_pool(jobs=[job], workers=[worker])
    _earn(worker, job, 1)  # a bonus pays for work done in the job
    body = {"job": job.pk, "amount": "2.00", "idempotency_key": "k1", "note": "great week"}

    first = ops_actor.client.post(f"/api/v1/workers/{worker.pk}/bonuses/", body, format="json")
    again = ops_actor.client.post(f"/api/v1/workers/{worker.pk}/bonuses/", body, format="json")
    changed = ops_actor.client.post(
        f"/api/v1/workers/{worker.pk}/bonuses/", {**body, "amount": "3.00"}, format="json"
    )

    assert (first.status_code, again.status_code, changed.status_code) == (201, 200, 409)
    assert first.json()["id"] == again.json()["id"]
    assert LedgerEntry.objects.get(kind="bonus").amount == Decimal("2.0000")


def test_schema_documents_the_workforce_api(client):
    paths = client.get("/api/schema/", HTTP_ACCEPT="application/json").json()["paths"]

    for path in (
        "/api/v1/workers/",
        "/api/v1/workers/{worker_id}/",
        "/api/v1/workers/{worker_id}/ban/",
        "/api/v1/workers/{worker_id}/unban/",
        "/api/v1/workers/{worker_id}/earnings/",
        "/api/v1/workers/{worker_id}/bonuses/",
        "/api/v1/pools/",
        "/api/v1/pools/{pool_id}/",
        "/api/v1/jobs/{job_id}/pools/",
    ):
        assert path in paths
    params = {p["name"] for p in paths["/api/v1/workers/"]["get"]["parameters"]}
    assert {"tier", "status", "pool", "username", "page", "page_size"} <= params
