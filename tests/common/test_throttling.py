"""Abuse limits: failed authentication per address, the login pages, submit and list rates
per token; 429 with Retry-After in the JSON error shape (HTML on the pages)."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
from rest_framework.test import APIClient

from apps.common import throttling

pytestmark = pytest.mark.django_db


@pytest.fixture
def rates(settings, monkeypatch):
    """Small limits for the test; the setting is read on every request. The limits count in
    fixed windows: the clock the throttle reads stands still in the middle of one, so a
    test's requests never straddle two windows (the failure that made this test flaky)."""

    middle = (int(time.time()) // 3600) * 3600 + 1800.0
    monkeypatch.setattr(throttling, "time", SimpleNamespace(time=lambda: middle))

    def set_rates(**values: str) -> None:
        settings.REST_FRAMEWORK = {
            **settings.REST_FRAMEWORK,
            "DEFAULT_THROTTLE_RATES": {
                **settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"],
                **values,
            },
        }

    return set_rates


def _assert_throttled(response) -> None:
    assert response.status_code == 429, response.content
    assert 1 <= int(response["Retry-After"]) <= 60
    error = response.json()["error"]
    assert error["code"] == "throttled"
    assert error["details"]["retry_after"] == int(response["Retry-After"])


def test_failed_token_authentication_is_limited_per_address(rates, make_actor):
    rates(auth_failure="5/min")
    good = make_actor("client")
    guesser = APIClient(REMOTE_ADDR="203.0.113.9")
    for n in range(5):
        guesser.credentials(HTTP_AUTHORIZATION=f"Token wrong-{n}")
        response = guesser.get("/api/v1/jobs/")
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "not_authenticated"
    guesser.credentials(HTTP_AUTHORIZATION="Token wrong-5")
    _assert_throttled(guesser.get("/api/v1/jobs/"))
    # Even a right token waits from that address: guessing must not pay
    guesser.credentials(HTTP_AUTHORIZATION=f"Token {good.token}")
    _assert_throttled(guesser.get("/api/v1/jobs/"))
    # Other addresses are not affected
    other = APIClient(REMOTE_ADDR="198.51.100.7")
    other.credentials(HTTP_AUTHORIZATION=f"Token {good.token}")
    assert other.get("/api/v1/jobs/").status_code == 200


def test_submit_is_limited_per_token(rates, make_actor):
    rates(submit="3/min")
    annotator = make_actor("annotator")
    for _ in range(3):
        response = annotator.client.post(
            "/api/v1/assignments/999999/submit/", {"label": "a"}, format="json"
        )
        assert response.status_code == 404
    _assert_throttled(
        annotator.client.post("/api/v1/assignments/999999/submit/", {"label": "a"}, format="json")
    )
    # Another annotator's token has its own budget; next is not a submit
    assert (
        make_actor("annotator")
        .client.post("/api/v1/assignments/999999/submit/", {"label": "a"}, format="json")
        .status_code
        == 404
    )
    assert annotator.client.post("/api/v1/assignments/next/").status_code == 204


def test_list_endpoints_are_limited_per_token(rates, make_actor):
    rates(list="3/min")
    client = make_actor("client")
    for _ in range(3):
        assert client.client.get("/api/v1/jobs/").status_code == 200
    _assert_throttled(client.client.get("/api/v1/jobs/"))
    _assert_throttled(client.client.get("/api/v1/webhooks/endpoints/"))
    # Not a list: the job detail (a 404 here) and creating are not counted
    assert client.client.get("/api/v1/jobs/1/").status_code == 404
    assert make_actor("client", username="bob").client.get("/api/v1/jobs/").status_code == 200


def test_the_default_rates_leave_a_fast_annotator_alone(make_actor):
    annotator = make_actor("annotator")
    for _ in range(40):
        response = annotator.client.post(
            "/api/v1/assignments/999999/submit/", {"label": "a"}, format="json"
        )
        assert response.status_code == 404


def test_the_login_page_answers_429_after_too_many_failures(rates, client, make_actor):
    rates(login="3/min")
    for _ in range(3):
        assert client.post("/login/", {"token": "nope"}).status_code == 400
    response = client.post("/login/", {"token": make_actor("ops").token})
    assert response.status_code == 429
    assert response["Content-Type"].startswith("text/html")
    assert int(response["Retry-After"]) >= 1
    assert b"Too many" in response.content
    assert client.get("/login/").status_code == 200  # the form still shows


def test_a_successful_login_is_not_counted(rates, client, make_actor):
    rates(login="2/min")
    token = make_actor("ops").token
    for _ in range(4):
        assert client.post("/login/", {"token": token}).status_code == 302


def test_admin_login_answers_429_after_too_many_failures(rates, client, django_user_model):
    rates(login="3/min")
    django_user_model.objects.create_superuser("root", "root@example.com", "right-password")
    for _ in range(3):
        response = client.post("/admin/login/", {"username": "root", "password": "wrong"})
        assert response.status_code == 200
    response = client.post("/admin/login/", {"username": "root", "password": "right-password"})
    assert response.status_code == 429
    assert int(response["Retry-After"]) >= 1


def test_limits_are_off_while_the_shared_cache_is_unreachable(rates, settings, make_actor):
    annotator = make_actor("annotator")
    rates(submit="1/min", list="1/min")
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
        }
    }
    for _ in range(3):
        response = annotator.client.post(
            "/api/v1/assignments/999999/submit/", {"label": "a"}, format="json"
        )
        assert response.status_code == 404


def test_a_request_limit_counts_in_batches_and_admits_at_most_a_batch_more(rates, monkeypatch):
    rates(submit="600/min")  # batch: 600 // 60 = 10 hits per shared-cache round trip
    trips = []
    original = throttling.cache.incr
    monkeypatch.setattr(
        throttling.cache, "incr", lambda *a, **k: trips.append(a) or original(*a, **k)
    )
    first, second = (
        throttling.Window("submit", local_batch=10),
        throttling.Window("submit", local_batch=10),
    )  # two processes

    admitted = 0
    for n in range(700):
        window = first if n % 2 else second
        admitted += window.count("token-1") is None

    assert len(trips) <= 70 + 2  # one shared-cache trip per batch of 10 (+ window starts)
    assert 600 <= admitted <= 600 + 2 * (10 - 1)


def test_sign_in_failures_are_counted_one_by_one(rates):
    rates(auth_failure="600/min")

    assert throttling.AUTH_FAILURES._batch(600) == 1
