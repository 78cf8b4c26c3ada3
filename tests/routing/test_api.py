"""Routing API: model versions, retrain, similar items, strategy replay, pre-label effect;
tenancy and roles."""

from __future__ import annotations

import numpy as np
import pytest
from django.core.cache import cache as django_cache

from apps.jobs.models import Item, Job
from apps.routing.models import ModelVersion
from apps.routing.selectors import SIMILAR_MAX_K
from tests.routing.test_services import add_digits, digits, digits_job

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_cache():
    # Routing configs and retrain locks are cached per job id; ids repeat across tests.
    django_cache.clear()
    yield
    django_cache.clear()


@pytest.fixture
def job(client_actor) -> Job:
    job, _ = digits_job(n_settled=200, n_open=100)
    # digits_job creates the job in the "Acme Client" organization, alice's.
    assert job.organization.name == client_actor.org_name
    return job


def url(job: Job, tail: str) -> str:
    return f"/api/v1/jobs/{job.pk}/{tail}"


def test_retrain_enqueues_and_models_lists_versions_with_cards(
    client_actor, job, django_capture_on_commit_callbacks, django_assert_max_num_queries
):
    with django_capture_on_commit_callbacks(execute=True):
        response = client_actor.client.post(url(job, "retrain/"))

    assert response.status_code == 202
    assert response.json() == {"job": job.pk, "queued": True}
    with django_assert_max_num_queries(6):
        listing = client_actor.client.get(url(job, "models/"))
    assert listing.status_code == 200
    body = listing.json()
    assert body["count"] == 1
    version = body["results"][0]
    assert (version["number"], version["kind"], version["is_active"]) == (1, "features", True)
    assert version["parent"] is None
    assert version["card"]["training_size"] == 200
    assert set(version["card"]) >= {"per_class_accuracy", "ece", "threshold", "temperature"}
    assert "weights" not in version


def test_retrain_is_409_when_routing_is_off(client_actor, job):
    Job.objects.filter(pk=job.pk).update(routing={"mode": "off"})

    response = client_actor.client.post(url(job, "retrain/"))

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "invalid_state"
    assert not ModelVersion.objects.exists()


def test_similar_returns_the_nearest_items_by_cosine(client_actor, job):
    response = client_actor.client.get(url(job, "items/d5/similar/?k=7"))

    assert response.status_code == 200
    got = response.json()
    # Brute force: every other item of the job, cosine similarity, best first.
    x, _ = digits()
    others = [i for i in range(300) if i != 5]
    m = x[others].astype(np.float64)
    q = x[5].astype(np.float64)
    sims = m @ q / (np.linalg.norm(m, axis=1) * np.linalg.norm(q))
    best = np.argsort(-sims, kind="stable")[:7]
    assert [r["external_id"] for r in got] == [f"d{others[i]}" for i in best]
    np.testing.assert_allclose([r["similarity"] for r in got], sims[best], atol=1e-5)
    assert set(got[0]) == {"external_id", "similarity", "state", "label"}


def test_similar_caps_k(client_actor, job):
    response = client_actor.client.get(url(job, "items/d1/similar/?k=100000"))

    assert response.status_code == 200
    assert len(response.json()) == SIMILAR_MAX_K


@pytest.mark.parametrize(
    ("tail", "status", "code"),
    [
        ("items/nope/similar/", 404, "not_found"),
        ("items/bare/similar/", 400, "invalid"),
        ("items/d1/similar/?k=many", 400, "invalid"),
    ],
    ids=["unknown-item", "no-features", "bad-k"],
)
def test_similar_errors(client_actor, job, tail, status, code):
    Item.objects.create(job=job, external_id="bare")

    response = client_actor.client.get(url(job, tail))

    assert response.status_code == status
    assert response.json()["error"]["code"] == code


def test_evaluate_strategy_returns_two_curves_of_equal_length(client_actor, job):
    response = client_actor.client.post(
        url(job, "evaluate-strategy/"), {"strategy": "margin", "rounds": 3, "batch": 15}, "json"
    )

    assert response.status_code == 200
    body = response.json()
    assert (body["strategy"], body["baseline"]) == ("margin", "random")
    assert body["labels"] == [15, 30, 45, 60]
    assert len(body["strategy_accuracy"]) == len(body["random_accuracy"]) == 4
    assert all(0.0 <= a <= 1.0 for a in body["strategy_accuracy"] + body["random_accuracy"])
    # Both curves start from the same seed set, so their first points are equal.
    assert body["strategy_accuracy"][0] == body["random_accuracy"][0]


def test_evaluate_strategy_validates_and_needs_settled_items(client_actor, job):
    bad = client_actor.client.post(url(job, "evaluate-strategy/"), {"strategy": "psychic"}, "json")
    Item.objects.filter(job=job).update(state="open", source=None)
    empty = client_actor.client.post(url(job, "evaluate-strategy/"), {}, "json")

    assert bad.status_code == 400
    assert empty.status_code == 409


def test_prelabel_effect_is_readable(client_actor, job):
    response = client_actor.client.get(url(job, "prelabel-effect/"))

    assert response.status_code == 200
    assert response.json()["with_prelabel"]["n"] == 0


@pytest.mark.parametrize(
    ("method", "tail"),
    [
        ("get", "models/"),
        ("post", "retrain/"),
        ("get", "items/d1/similar/"),
        ("post", "evaluate-strategy/"),
        ("get", "prelabel-effect/"),
    ],
)
def test_another_clients_job_is_404(other_client_actor, job, method, tail):
    response = getattr(other_client_actor.client, method)(url(job, tail))

    assert response.status_code == 404


@pytest.mark.parametrize(
    ("method", "tail"),
    [
        ("get", "models/"),
        ("post", "retrain/"),
        ("get", "items/d1/similar/"),
        ("post", "evaluate-strategy/"),
    ],
)
def test_annotators_are_403(make_actor, job, method, tail):
    annotator = make_actor("annotator")

    response = getattr(annotator.client, method)(url(job, tail))

    assert response.status_code == 403


def test_ops_may_retrain_any_clients_job(ops_actor, job, django_capture_on_commit_callbacks):
    add_digits(job, range(300, 320), settled=True)
    with django_capture_on_commit_callbacks(execute=True):
        response = ops_actor.client.post(url(job, "retrain/"))

    assert response.status_code == 202
    assert ModelVersion.objects.filter(job=job).count() == 1


def test_schema_documents_the_routing_api(client):
    paths = client.get("/api/schema/", HTTP_ACCEPT="application/json").json()["paths"]

    assert "get" in paths["/api/v1/jobs/{job_id}/models/"]
    assert "202" in paths["/api/v1/jobs/{job_id}/retrain/"]["post"]["responses"]
    similar = paths["/api/v1/jobs/{job_id}/items/{external_id}/similar/"]["get"]
    assert {"200", "400", "404"} <= set(similar["responses"])
    assert "post" in paths["/api/v1/jobs/{job_id}/evaluate-strategy/"]
