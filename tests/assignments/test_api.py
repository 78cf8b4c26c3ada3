"""The annotator API: next, submit, release, skip, over HTTP with token auth."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from apps.accounts import authentication
from apps.accounts.authentication import CREDENTIALS
from apps.accounts.models import ApiToken
from apps.accounts.services import token_revoke
from apps.assignments import fastpath
from apps.assignments.apis import AssignmentNextApi, LabelOutputSerializer
from apps.assignments.models import Assignment, Label
from apps.jobs.models import Item
from apps.workforce.models import LedgerEntry, Worker
from tests.workforce.factories import JobFactory, make_items, make_pool

pytestmark = pytest.mark.django_db

NEXT = "/api/v1/assignments/next/"


def _annotator(make_actor, job=None, role="annotator"):
    actor = make_actor(role)
    worker = Worker.objects.get(user=actor.user)
    if job is not None:
        make_pool(jobs=[job], workers=[worker])
    return actor, worker


@pytest.fixture
def job():
    job = JobFactory()
    make_items(job, 2)
    return job


def test_next_returns_the_task(make_actor, job):
    actor, worker = _annotator(make_actor, job)

    response = actor.client.post(NEXT, {}, format="json")

    assert response.status_code == 200
    body = response.json()
    assignment = Assignment.objects.get(worker=worker)
    assert assignment.item == Item.objects.order_by("id").first()
    assert body == {
        "id": assignment.pk,
        "job": job.pk,
        "payload": {"text": "item 0"},
        "classes": ["cat", "dog", "bird"],
        "label_schema": {"kind": "single_choice", "classes": ["cat", "dog", "bird"]},
        "instructions": "Pick the animal.",
        "prelabel": None,
        "expires_at": body["expires_at"],
    }
    assert body["expires_at"].startswith(assignment.expires_at.strftime("%Y-%m-%dT%H:%M:%S"))


def test_next_sends_no_external_id_and_no_private_payload_field(make_actor):
    """A client's ids ("gold-012") and private (underscore) fields would tell which items
    are gold; annotators get neither, gold or not."""
    job = JobFactory(policy={"min_labels": 1, "max_labels": 1, "gold_rate": 0.5})
    make_items(job, 3, gold=["cat", "dog", "bird"])
    Item.objects.filter(job=job).update(payload={"text": "x", "_truth": "cat", "_row": 7})
    actor, worker = _annotator(make_actor, job)

    bodies = []
    for _ in range(6):
        response = actor.client.post(NEXT, {}, format="json")
        if response.status_code != 200:
            break
        bodies.append(response.json())
        actor.client.post(
            f"/api/v1/assignments/{bodies[-1]['id']}/submit/", {"label": "cat"}, format="json"
        )

    assert len(bodies) >= 2
    assert Assignment.objects.filter(worker=worker, is_gold=True).exists()
    assert Assignment.objects.filter(worker=worker, is_gold=False).exists()
    for body in bodies:
        assert "external_id" not in body
        assert body["payload"] == {"text": "x"}


def test_next_accepts_a_job_filter_in_body_or_query(make_actor, job):
    actor, _ = _annotator(make_actor, job)
    other = JobFactory()
    make_items(other, 1)

    assert actor.client.post(NEXT, {"job": job.pk}, format="json").json()["job"] == job.pk
    response = actor.client.post(f"{NEXT}?job={other.pk}")
    assert (response.status_code, response["Concord-Idle-Reason"]) == (204, "no_open_job")


@pytest.mark.parametrize(
    ("setup", "reason", "retry_after"),
    [
        ("outside_pool", "no_open_job", "60"),
        ("banned", "worker_banned", None),
        ("suspended", "worker_suspended", None),
        ("exhausted", "exhausted", None),
        ("all_leased", "all_leased", "60"),
        ("cap", "cap_reached", None),
    ],
    ids=lambda value: str(value),
)
def test_next_204_says_why(make_actor, setup, reason, retry_after):
    job = JobFactory(
        policy={"min_labels": 1, "max_labels": 1, "max_items_per_worker": 1, "aggregation": "mv"}
    )
    make_items(job, 1)
    actor, worker = _annotator(make_actor, None if setup == "outside_pool" else job)
    if setup in ("banned", "suspended"):
        Worker.objects.filter(pk=worker.pk).update(status=setup)
    elif setup == "exhausted":
        task = actor.client.post(NEXT).json()
        actor.client.post(f"/api/v1/assignments/{task['id']}/skip/")
    elif setup == "all_leased":
        other, _ = _annotator(make_actor, job)
        assert other.client.post(NEXT).status_code == 200
    elif setup == "cap":
        make_items(job, 1, prefix="more")
        assert actor.client.post(NEXT).status_code == 200

    response = actor.client.post(NEXT)

    assert response.status_code == 204
    assert response.content == b""
    assert response["Concord-Idle-Reason"] == reason
    assert response.get("Retry-After") == retry_after


def test_submit_then_repeat_returns_the_first_answer(make_actor, job):
    actor, worker = _annotator(make_actor, job)
    task = actor.client.post(NEXT).json()
    url = f"/api/v1/assignments/{task['id']}/submit/"

    first = actor.client.post(url, {"label": "dog", "duration_ms": 900}, format="json")
    again = actor.client.post(url, {"label": "cat"}, format="json")

    assert first.status_code == 200
    assert first.json() == {
        "assignment": task["id"],
        "job": job.pk,
        "label": "dog",
        "duration_ms": 900,
        "created_at": first.json()["created_at"],
    }
    assert (again.status_code, again.json()) == (200, first.json())
    assert Label.objects.count() == 1


@pytest.mark.parametrize(
    ("case", "status_code", "code"),
    [
        ("foreign", 409, "lease_not_yours"),
        ("expired", 409, "lease_expired"),
        ("bad_label", 400, "invalid"),
        ("missing_label", 400, "invalid"),
        ("negative_duration", 400, "invalid"),
        ("list_body", 400, "invalid"),
        ("unknown", 404, "not_found"),
    ],
    ids=lambda value: str(value),
)
def test_submit_errors(make_actor, job, case, status_code, code):
    actor, _ = _annotator(make_actor, job)
    other, _ = _annotator(make_actor, job)
    task = actor.client.post(NEXT).json()
    client, assignment_id, body = actor.client, task["id"], {"label": "cat"}
    if case == "foreign":
        client = other.client
    elif case == "expired":
        past = timezone.now() - timedelta(seconds=1)
        Assignment.objects.filter(pk=task["id"]).update(
            leased_at=past - timedelta(seconds=600), expires_at=past
        )
    elif case == "bad_label":
        body = {"label": "horse"}
    elif case == "missing_label":
        body = {}
    elif case == "negative_duration":
        body = {"label": "cat", "duration_ms": -5}
    elif case == "list_body":
        body = ["cat"]
    elif case == "unknown":
        assignment_id += 100

    response = client.post(f"/api/v1/assignments/{assignment_id}/submit/", body, format="json")

    assert response.status_code == status_code
    assert response.json()["error"]["code"] == code
    assert Label.objects.count() == 0
    if case == "missing_label":
        assert response.json()["error"]["details"] == {"label": ["This field is required."]}
    if case == "negative_duration":
        assert "duration_ms" in response.json()["error"]["details"]


@pytest.mark.parametrize(
    ("body", "content_type", "status_code", "code"),
    [
        (b'{"label": "cat"', "application/json", 400, "parse_error"),
        (b"[1, 2", "application/json", 400, "parse_error"),
        (b"cat", "text/plain", 415, "unsupported_media_type"),
    ],
    ids=["broken-json", "broken-list", "text"],
)
def test_submit_bodies_that_are_not_a_json_object_are_4xx(
    make_actor, job, body, content_type, status_code, code
):
    actor, _ = _annotator(make_actor, job)
    task = actor.client.post(NEXT).json()

    response = actor.client.generic(
        "POST", f"/api/v1/assignments/{task['id']}/submit/", body, content_type=content_type
    )

    assert response.status_code == status_code, response.content
    assert response.json()["error"]["code"] == code
    assert Label.objects.count() == 0
    # The lease is intact: a good submit still lands.
    good = actor.client.post(
        f"/api/v1/assignments/{task['id']}/submit/", {"label": "cat"}, format="json"
    )
    assert good.status_code == 200


def test_annotator_endpoints_answer_json_whatever_accept_says(make_actor, job):
    actor, _ = _annotator(make_actor, job)
    response = actor.client.post(NEXT, HTTP_ACCEPT="text/html")
    assert (response.status_code, response["Content-Type"]) == (200, "application/json")
    submit = actor.client.post(
        f"/api/v1/assignments/{response.json()['id']}/submit/",
        {"label": "cat"},
        format="json",
        HTTP_ACCEPT="application/xml",
    )
    assert (submit.status_code, submit.json()["label"]) == (200, "cat")


def test_next_rejects_a_bad_job_filter(make_actor, job):
    actor, _ = _annotator(make_actor, job)
    response = actor.client.post(NEXT, {"job": "abc"}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["details"] == {"job": ["A valid integer is required."]}
    assert Assignment.objects.count() == 0


@pytest.mark.parametrize("action", ["release", "skip"])
def test_release_and_skip(make_actor, job, action):
    actor, _ = _annotator(make_actor, job)
    task = actor.client.post(NEXT).json()

    response = actor.client.post(f"/api/v1/assignments/{task['id']}/{action}/")

    assert response.status_code == 200
    state = "released" if action == "release" else "skipped"
    assert response.json() == {
        "id": task["id"],
        "state": state,
        "finished_at": response.json()["finished_at"],
    }
    item_id = Assignment.objects.get(pk=task["id"]).item_id
    assert Item.objects.get(pk=item_id).n_leases == 0
    again = actor.client.post(NEXT).json()["id"]
    assert Assignment.objects.get(pk=again).item_id != item_id


def test_release_of_someone_elses_lease_is_409(make_actor, job):
    actor, _ = _annotator(make_actor, job)
    other, _ = _annotator(make_actor, job)
    task = actor.client.post(NEXT).json()

    response = other.client.post(f"/api/v1/assignments/{task['id']}/release/")

    assert (response.status_code, response.json()["error"]["code"]) == (409, "lease_not_yours")


@pytest.mark.parametrize("role", ["client", "ops", "qc"])
def test_only_workers_have_tasks(make_actor, job, role):
    actor = make_actor(role)

    response = actor.client.post(NEXT)

    assert (response.status_code, response.json()["error"]["code"]) == (403, "permission_denied")


def test_anonymous_is_401(client, job):
    response = client.post(NEXT)

    assert response.status_code == 401


def test_experts_use_the_same_api(make_actor, job):
    actor, worker = _annotator(make_actor, job, role="expert")

    assert worker.tier == "expert"
    assert actor.client.post(NEXT).status_code == 200


def test_next_and_submit_query_counts(make_actor, job, django_assert_max_num_queries):
    actor, _ = _annotator(make_actor, job)
    # Warm up: the token's last_used_at, and on PostgreSQL the per-session prepared
    # statements (planned once per connection, then only executed).
    warm = actor.client.post(NEXT).json()
    actor.client.post(f"/api/v1/assignments/{warm['id']}/submit/", {"label": "cat"}, format="json")

    # PostgreSQL: token with worker, open jobs, one lease statement (+ savepoint pair in
    # tests). SQLite: token, worker, open jobs, the worker's status (not trusted from the
    # credentials), candidate, lease count, insert (+ 2).
    postgres = fastpath.enabled()
    with django_assert_max_num_queries(5 if postgres else 9):
        task = actor.client.post(NEXT).json()
    # PostgreSQL: token with worker, locked assignment with item and job, one statement for
    # assignment + label + ledger + the item's answers with matrices, item update (+ 2).
    # SQLite: token, worker, assignment, item, assignment update, label, ledger, answers,
    # matrices, item update (+ 2).
    with django_assert_max_num_queries(6 if postgres else 12):
        actor.client.post(
            f"/api/v1/assignments/{task['id']}/submit/", {"label": "cat"}, format="json"
        )


def test_schema_documents_the_annotator_api(client):
    response = client.get("/api/schema/", HTTP_ACCEPT="application/json")

    paths = response.json()["paths"]
    next_op = paths["/api/v1/assignments/next/"]["post"]
    assert set(next_op["responses"]) >= {"200", "204"}
    assert set(next_op["responses"]["204"]["headers"]) == {"Concord-Idle-Reason", "Retry-After"}
    assert "409" in paths["/api/v1/assignments/{assignment_id}/submit/"]["post"]["responses"]
    assert "/api/v1/assignments/{assignment_id}/release/" in paths
    assert "/api/v1/assignments/{assignment_id}/skip/" in paths


def test_hot_path_bodies_match_their_documented_serializers(make_actor, job):
    """next and submit build their bodies by hand; they must keep the documented shape."""

    annotator, _ = _annotator(make_actor, job)
    response = annotator.client.post("/api/v1/assignments/next/", {}, format="json")
    assert response.status_code == 200
    body = response.json()
    documented = AssignmentNextApi.OutputSerializer()
    assert set(body) == set(documented.fields)
    check = AssignmentNextApi.OutputSerializer(data=body)
    assert check.is_valid(), check.errors

    submitted = annotator.client.post(
        f"/api/v1/assignments/{body['id']}/submit/",
        {"label": body["classes"][0], "duration_ms": 1200},
        format="json",
    )
    assert submitted.status_code == 200
    label = submitted.json()
    assert set(label) == set(LabelOutputSerializer().fields)
    assert (label["assignment"], label["job"]) == (body["id"], job.pk)
    assert "item" not in body  # item ids would tell gold apart
    assert "item" not in label
    assert (label["label"], label["duration_ms"]) == (body["classes"][0], 1200)
    again = annotator.client.post(
        f"/api/v1/assignments/{body['id']}/submit/", {"label": body["classes"][1]}, format="json"
    )
    assert again.json() == label


def test_a_worker_banned_behind_the_credentials_cache_still_gets_no_task(make_actor, job):
    """Credentials are cached per process for a few seconds; the lease itself reads the
    worker's status, so a ban made elsewhere (another process, here a bare UPDATE that no
    cache hears of) stops new leases at once."""

    actor, worker = _annotator(make_actor, job)
    first = actor.client.post(NEXT)
    assert first.status_code == 200
    Worker.objects.filter(pk=worker.pk).update(status=Worker.Status.BANNED)

    response = actor.client.post(NEXT)

    assert response.status_code == 204
    assert Assignment.objects.filter(worker=worker).count() == 1
    # Once the cached credentials lapse, the worker is told why.
    CREDENTIALS.invalidate()
    response = actor.client.post(NEXT)
    assert response["Concord-Idle-Reason"] == "worker_banned"


def test_a_revoked_token_is_refused_on_the_very_next_request(make_actor, job):
    actor, _ = _annotator(make_actor, job)
    assert actor.client.post(NEXT).status_code == 200  # credentials now cached
    token_revoke(token=ApiToken.objects.get(user=actor.user))

    assert actor.client.post(NEXT).status_code == 401


def test_touching_one_token_keeps_the_other_cached_credentials(make_actor, job):
    """last_used_at is written once a minute per token; that write refreshes only its own
    cached row (on PostgreSQL, where credentials are cached), not every token's."""

    first, _ = _annotator(make_actor, job)
    second, _ = _annotator(make_actor, job)
    assert first.client.post(NEXT).status_code == 200
    assert second.client.post(NEXT).status_code == 200
    stale = timezone.now() - timedelta(minutes=5)
    ApiToken.objects.filter(user=first.user).update(last_used_at=stale)
    authentication.CREDENTIALS.clear_local()
    assert second.client.post(NEXT).status_code == 200
    cached_before = set(authentication.CREDENTIALS._entries)

    assert first.client.post(NEXT).status_code == 200  # reads the stale time, writes now

    touched = ApiToken.objects.get(user=first.user).last_used_at
    assert touched > stale
    if connection.vendor == "postgresql":
        assert cached_before <= set(authentication.CREDENTIALS._entries)
        cached = [entry[1] for entry in authentication.CREDENTIALS._entries.values()]
        assert touched in {credentials.token.last_used_at for credentials in cached}


def _gold_job():
    """A job whose every lease is a gold item (gold rate 1) while real work remains."""
    job = JobFactory(
        policy={"min_labels": 3, "max_labels": 5, "gold_rate": 1.0, "aggregation": "mv"}
    )
    make_items(job, 3, gold=["cat", "dog", "bird", "cat"])
    return job


def test_a_ban_stops_gold_leases_on_the_very_next_request(make_actor, ops_actor):
    """F7: the gold lease path trusted the cached credentials for five seconds after a ban
    (74 gold leases and paid submits). Now the ban is seen on the very next request."""
    job = _gold_job()
    actor, worker = _annotator(make_actor, job)
    first = actor.client.post(NEXT)
    assert first.status_code == 200  # credentials cached, a gold lease held
    assert Assignment.objects.get(pk=first.json()["id"]).is_gold

    banned = ops_actor.client.post(f"/api/v1/workers/{worker.pk}/ban/", {}, format="json")
    assert banned.status_code == 200

    response = actor.client.post(NEXT)
    assert (response.status_code, response["Concord-Idle-Reason"]) == (204, "worker_banned")
    submit = actor.client.post(
        f"/api/v1/assignments/{first.json()['id']}/submit/", {"label": "cat"}, format="json"
    )
    assert submit.status_code == 403
    assert submit.json()["error"]["code"] == "worker_inactive"
    assert Assignment.objects.filter(worker=worker).count() == 1
    assert not Label.objects.filter(worker=worker).exists()


def test_a_ban_no_cache_heard_of_still_stops_gold_leases_and_submits(make_actor):
    """The lease and the submit read the worker's status from the database themselves: a
    status written by a bare UPDATE (no signal, no invalidation) stops both at once."""

    job = _gold_job()
    actor, worker = _annotator(make_actor, job)
    first = actor.client.post(NEXT)
    assert first.status_code == 200
    Worker.objects.filter(pk=worker.pk).update(status=Worker.Status.BANNED)

    again = actor.client.post(NEXT)
    submit = actor.client.post(
        f"/api/v1/assignments/{first.json()['id']}/submit/", {"label": "cat"}, format="json"
    )

    assert again.status_code == 204
    assert Assignment.objects.filter(worker=worker).count() == 1
    assert (submit.status_code, submit.json()["error"]["code"]) == (403, "worker_inactive")
    assert not Label.objects.filter(worker=worker).exists()
    assert not LedgerEntry.objects.filter(worker=worker).exists()


def test_the_response_says_which_path_served(make_actor, job, settings):
    """Concord-Path: the PostgreSQL statements (sql; sql-locked under a caller's
    transaction, as here) or the ORM (SQLite, gold leases, CONCORD_FASTPATH off), when
    CONCORD_PATH_HEADER asks for it; by default annotators are not told (gold would show)."""
    actor, _ = _annotator(make_actor, job)
    make_items(job, 1, prefix="more")
    fast = fastpath.enabled()
    assert "Concord-Path" not in actor.client.post(NEXT)
    settings.CONCORD_PATH_HEADER = True

    leased = actor.client.post(NEXT)
    submitted = actor.client.post(
        f"/api/v1/assignments/{leased.json()['id']}/submit/", {"label": "cat"}, format="json"
    )

    assert leased["Concord-Path"] == ("sql" if fast else "orm")
    assert submitted["Concord-Path"] == ("sql-locked" if fast else "orm")
    settings.CONCORD_FASTPATH = False
    assert actor.client.post(NEXT)["Concord-Path"] == "orm"


def test_a_price_stored_before_prices_were_bounded_is_a_409_not_a_500(make_actor):
    """F7: a crowd_label of 1e308 was accepted at creation, then every submit failed with
    decimal.InvalidOperation (a 500). A job stored like that now answers 409 naming the
    price, and nothing is stored unpaid."""
    job = JobFactory(pricing={"crowd_label": 1e308, "expert_label": 0.5})
    make_items(job, 1)
    actor, worker = _annotator(make_actor, job)
    task = actor.client.post(NEXT).json()

    response = actor.client.post(
        f"/api/v1/assignments/{task['id']}/submit/", {"label": "cat"}, format="json"
    )

    assert response.status_code == 409
    assert response.json()["error"]["details"] == {"pricing.crowd_label": ["Out of bounds."]}
    assert not Label.objects.filter(worker=worker).exists()


def test_which_write_path_served_is_counted_on_healthz_and_logged(make_actor, job, caplog):
    actor, _ = _annotator(make_actor, job)
    before = actor.client.get("/healthz").json()["process"]["write_paths"]

    with caplog.at_level("DEBUG", logger="apps.assignments.apis"):
        task = actor.client.post(NEXT, {}, format="json").json()
        response = actor.client.post(
            f"/api/v1/assignments/{task['id']}/submit/", {"label": "cat"}, format="json"
        )

    assert response.status_code == 200
    assert "Concord-Path" not in response  # off by default: gold leases would show
    after = actor.client.get("/healthz").json()["process"]["write_paths"]
    served = {path: n - before.get(path, 0) for path, n in after.items()}
    # In a test's transaction the PostgreSQL statements run under the locks (sql-locked);
    # the ORM path elsewhere.
    expected = {"sql": 1, "sql-locked": 1} if fastpath.enabled() else {"orm": 2}
    assert {path: n for path, n in served.items() if n} == expected
    assert {r.write_path for r in caplog.records if hasattr(r, "write_path")} == set(expected)


def test_the_path_header_is_there_when_asked_for(make_actor, job, settings):
    settings.CONCORD_PATH_HEADER = True
    actor, _ = _annotator(make_actor, job)

    response = actor.client.post(NEXT, {}, format="json")

    assert response["Concord-Path"] in {path.value for path in fastpath.Path}
