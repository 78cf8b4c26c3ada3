"""Webhook API: a client manages its own organization's endpoints and deliveries only."""

from __future__ import annotations

import pytest

from apps.webhooks import services
from apps.webhooks.models import WebhookDelivery, WebhookEndpoint

pytestmark = pytest.mark.django_db

API = "/api/v1/webhooks"


@pytest.fixture(autouse=True)
def _no_network(settings, monkeypatch):
    """Deliveries are attempted on commit (eager Celery): answer them without a network."""

    monkeypatch.setattr(services, "_post", lambda url, body, headers, timeout: (200, "ok"))
    monkeypatch.setattr(services, "_resolve", lambda host: ["93.184.215.14"])
    settings.WEBHOOK_ALLOW_PRIVATE_URLS = False


def _create(actor, **data):
    body = {"url": "https://hooks.example.com/concord", **data}
    return actor.client.post(f"{API}/endpoints/", body, format="json")


def test_a_client_creates_an_endpoint_and_sees_its_secret_once(client_actor):
    response = _create(client_actor, events=["job.completed", "item.finalized"])
    assert response.status_code == 201, response.content
    created = response.json()
    assert created["events"] == ["item.finalized", "job.completed"]
    assert created["organization"] == "Acme Client"
    assert len(created["secret"]) == 64
    assert created["secret_hint"] == "…" + created["secret"][-4:]

    listed = client_actor.client.get(f"{API}/endpoints/").json()
    assert [row["id"] for row in listed["results"]] == [created["id"]]
    assert "secret" not in listed["results"][0]
    detail = client_actor.client.get(f"{API}/endpoints/{created['id']}/").json()
    assert "secret" not in detail


@pytest.mark.parametrize(
    ("data", "field"),
    [
        pytest.param({"url": "not a url"}, "url", id="bad-url"),
        pytest.param({"url": "http://127.0.0.1:8000/x"}, "url", id="loopback"),
        pytest.param({"events": ["job.exploded"]}, "events", id="unknown-event"),
        pytest.param({"events": ["webhook.ping"]}, "events", id="ping-not-subscribable"),
        pytest.param({"secret": "short"}, "secret", id="short-secret"),
    ],
)
def test_bad_endpoints_are_refused_in_the_error_shape(client_actor, data, field):
    response = _create(client_actor, **data)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert field in error["details"]
    assert WebhookEndpoint.objects.count() == 0


def test_update_and_delete(client_actor):
    endpoint_id = _create(client_actor).json()["id"]
    response = client_actor.client.patch(
        f"{API}/endpoints/{endpoint_id}/",
        {"active": False, "events": ["job.paused"], "description": "ops pager"},
        format="json",
    )
    assert response.status_code == 200, response.content
    assert (response.json()["active"], response.json()["events"]) == (False, ["job.paused"])
    assert client_actor.client.delete(f"{API}/endpoints/{endpoint_id}/").status_code == 204
    assert not WebhookEndpoint.objects.exists()


def test_another_client_cannot_see_or_touch_them(client_actor, other_client_actor):
    endpoint_id = _create(client_actor).json()["id"]
    client_actor.client.post(f"{API}/endpoints/{endpoint_id}/ping/")
    delivery_id = WebhookDelivery.objects.get().pk
    other = other_client_actor.client

    assert other.get(f"{API}/endpoints/").json()["results"] == []
    assert other.get(f"{API}/deliveries/").json()["results"] == []
    for response in (
        other.get(f"{API}/endpoints/{endpoint_id}/"),
        other.patch(f"{API}/endpoints/{endpoint_id}/", {"active": False}, format="json"),
        other.delete(f"{API}/endpoints/{endpoint_id}/"),
        other.post(f"{API}/endpoints/{endpoint_id}/ping/"),
        other.get(f"{API}/deliveries/{delivery_id}/"),
        other.post(f"{API}/deliveries/{delivery_id}/replay/"),
    ):
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"
    assert WebhookEndpoint.objects.get().active
    assert WebhookDelivery.objects.count() == 1


@pytest.mark.parametrize("role", ["annotator", "ops", "qc"])
def test_only_clients_use_webhooks(make_actor, role):
    actor = make_actor(role)
    assert actor.client.get(f"{API}/endpoints/").status_code == 403
    assert _create(actor).status_code == 403


def test_ping_deliveries_list_and_replay(client_actor, django_capture_on_commit_callbacks):
    endpoint_id = _create(client_actor).json()["id"]
    with django_capture_on_commit_callbacks(execute=True):
        ping = client_actor.client.post(f"{API}/endpoints/{endpoint_id}/ping/")
    assert ping.status_code == 202
    assert (ping.json()["event"], ping.json()["status"]) == ("webhook.ping", "pending")
    delivered = client_actor.client.get(f"{API}/deliveries/{ping.json()['id']}/").json()
    assert (delivered["status"], delivered["attempts"], delivered["last_response_code"]) == (
        "delivered",
        1,
        200,
    )

    with django_capture_on_commit_callbacks(execute=True):
        replay = client_actor.client.post(f"{API}/deliveries/{ping.json()['id']}/replay/")
    assert replay.status_code == 202
    assert replay.json()["replay_of"] == ping.json()["id"]
    assert replay.json()["event_id"] == ping.json()["event_id"]

    listed = client_actor.client.get(
        f"{API}/deliveries/", {"endpoint": endpoint_id, "status": "delivered"}
    ).json()
    assert [row["id"] for row in listed["results"]] == [replay.json()["id"], ping.json()["id"]]
    assert (
        client_actor.client.get(f"{API}/deliveries/", {"event": "job.paused"}).json()["results"]
        == []
    )
    assert client_actor.client.get(f"{API}/deliveries/", {"endpoint": "x"}).status_code == 400


def test_delivery_list_query_count(client_actor, django_assert_max_num_queries):
    endpoint_id = _create(client_actor).json()["id"]
    for _ in range(5):
        client_actor.client.post(f"{API}/endpoints/{endpoint_id}/ping/")
    with django_assert_max_num_queries(6):
        response = client_actor.client.get(f"{API}/deliveries/")
    assert response.json()["count"] == 5


def test_openapi_documents_the_webhook_api_with_own_component_names(client):
    response = client.get(
        "/api/schema/?format=json", HTTP_ACCEPT="application/vnd.oai.openapi+json"
    )
    schema = response.json()
    for path in (
        "/api/v1/webhooks/endpoints/",
        "/api/v1/webhooks/endpoints/{endpoint_id}/",
        "/api/v1/webhooks/endpoints/{endpoint_id}/ping/",
        "/api/v1/webhooks/deliveries/",
        "/api/v1/webhooks/deliveries/{delivery_id}/",
        "/api/v1/webhooks/deliveries/{delivery_id}/replay/",
    ):
        assert path in schema["paths"], path
    assert {
        "WebhookEndpointOutput",
        "WebhookEndpointCreated",
        "WebhookEndpointInputRequest",
        "PatchedWebhookEndpointUpdateRequest",
        "WebhookDeliveryOutput",
    } <= set(schema["components"]["schemas"])
