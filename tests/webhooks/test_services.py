"""Webhooks: events recorded by the services that make the changes, signed deliveries to a
real loopback receiver with retries and backoff, the batched item.finalized sweep."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import timedelta

import pytest
from django.utils import timezone

from apps.accounts.models import Organization
from apps.assignments.records import job_complete_if_done
from apps.common.errors import ApplicationError
from apps.jobs.models import Item
from apps.jobs.services import job_cancel, job_launch, job_pause
from apps.reviews.models import Review
from apps.reviews.services import review_resolve
from apps.webhooks.models import WebhookDelivery, WebhookEndpoint
from apps.webhooks.selectors import webhook_deliveries_due
from apps.webhooks.services import (
    backoff_seconds,
    items_finalized_emit,
    signature,
    webhook_deliver,
    webhook_delivery_replay,
    webhook_endpoint_create,
)
from tests.reviews.factories import items, label_items, review_job
from tests.webhooks.receiver import Receiver
from tests.workforce.factories import JobFactory, make_items

pytestmark = pytest.mark.django_db


@pytest.fixture
def receiver(settings):
    settings.WEBHOOK_ALLOW_PRIVATE_URLS = True
    started = Receiver().start()
    yield started
    started.stop()


def _endpoint(org: Organization, url: str = "https://hooks.example.com/x", **kwargs):
    return webhook_endpoint_create(organization=org, created_by=None, url=url, **kwargs)


def _verify(secret: str, body: bytes, header: str) -> bool:
    """What a receiver does (README): recompute the HMAC of the raw body, compare in constant
    time."""
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, header)


def test_signature_is_hmac_sha256_of_the_body_with_the_secret():
    assert signature(secret="key", body=b"The quick brown fox jumps over the lazy dog") == (
        "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
    )


def test_backoff_doubles_from_the_base_up_to_the_cap(settings):
    settings.WEBHOOK_BACKOFF_BASE_SECONDS = 30
    settings.WEBHOOK_BACKOFF_MAX_SECONDS = 200
    assert [backoff_seconds(attempts=n) for n in (1, 2, 3, 4, 5)] == [30, 60, 120, 200, 200]


def test_a_failing_receiver_gets_signed_retries_with_backoff_until_it_accepts(
    receiver, settings, django_capture_on_commit_callbacks
):
    # Given a receiver on loopback that fails the first two attempts
    settings.WEBHOOK_BACKOFF_BASE_SECONDS = 30
    receiver.fail_first = 2
    job = JobFactory(status="draft")
    make_items(job, 2)
    endpoint = _endpoint(job.organization, receiver.url)

    # When the job launches: the delivery is recorded and (eager Celery) attempted on commit
    with django_capture_on_commit_callbacks(execute=True):
        job_launch(job=job)

    delivery = WebhookDelivery.objects.get(endpoint=endpoint)
    assert (delivery.event, delivery.status, delivery.attempts) == ("job.launched", "pending", 1)
    assert delivery.last_response_code == 503
    assert delivery.last_error.startswith("HTTP 503")
    first_due = delivery.next_attempt_at

    # Not due before the backoff has passed
    assert webhook_deliver(delivery_id=delivery.pk, now=first_due - timedelta(seconds=1)) is None
    # The second attempt fails too and waits twice as long
    second = webhook_deliver(delivery_id=delivery.pk, now=first_due)
    assert (second.status, second.attempts, second.response_code, second.retry_in) == (
        "pending",
        2,
        503,
        60,
    )
    delivery.refresh_from_db()
    assert delivery.next_attempt_at == first_due + timedelta(seconds=60)
    assert webhook_deliveries_due(now=first_due + timedelta(seconds=59)) == []
    assert webhook_deliveries_due(now=first_due + timedelta(seconds=60)) == [delivery.pk]
    # The third one is accepted
    third = webhook_deliver(delivery_id=delivery.pk, now=delivery.next_attempt_at)
    assert (third.status, third.attempts, third.response_code, third.retry_in) == (
        "delivered",
        3,
        200,
        None,
    )

    # Then the record says delivered, and nothing more is sent
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_response_code) == (
        "delivered",
        3,
        200,
    )
    assert delivery.next_attempt_at is None
    assert delivery.delivered_at is not None
    assert webhook_deliver(delivery_id=delivery.pk, now=timezone.now() + timedelta(days=1)) is None
    # Every attempt carried the same body, signed with the endpoint's secret
    assert len(receiver.requests) == 3
    assert len({r.body for r in receiver.requests}) == 1
    for n, request in enumerate(receiver.requests, start=1):
        assert _verify(endpoint.secret, request.body, request.headers["Concord-Signature"])
        assert not _verify("another-secret", request.body, request.headers["Concord-Signature"])
        assert request.headers["Concord-Event"] == "job.launched"
        assert request.headers["Concord-Delivery"] == str(delivery.pk)
        assert request.headers["Concord-Attempt"] == str(n)
        assert request.headers["Content-Type"] == "application/json"
    body = json.loads(receiver.requests[0].body)
    assert body["event"] == "job.launched"
    assert body["id"] == str(delivery.event_id)
    assert body["data"]["job"] == {
        "id": job.pk,
        "name": job.name,
        "status": "running",
        "results": f"/api/v1/jobs/{job.pk}/results/",
    }


def test_a_delivery_fails_for_good_after_the_last_attempt(receiver, settings):
    settings.WEBHOOK_MAX_ATTEMPTS = 2
    receiver.fail_first = 10
    job = JobFactory(status="draft")
    make_items(job, 1)
    _endpoint(job.organization, receiver.url)
    job_launch(job=job)  # on_commit not run: only recorded
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.attempts) == ("pending", 0)

    assert webhook_deliver(delivery_id=delivery.pk).status == "pending"
    delivery.refresh_from_db()
    last = webhook_deliver(delivery_id=delivery.pk, now=delivery.next_attempt_at)
    assert (last.status, last.attempts, last.retry_in) == ("failed", 2, None)
    delivery.refresh_from_db()
    assert (delivery.status, delivery.next_attempt_at) == ("failed", None)
    assert webhook_deliveries_due(now=timezone.now() + timedelta(days=1)) == []

    # A replay is a new delivery of the same event and body, and can succeed
    receiver.fail_first = 0
    replay = webhook_delivery_replay(delivery=delivery)
    attempt = webhook_deliver(delivery_id=replay.pk)
    assert attempt.status == "delivered"
    replay.refresh_from_db()
    assert (replay.replay_of_id, replay.event_id, replay.payload) == (
        delivery.pk,
        delivery.event_id,
        delivery.payload,
    )
    assert receiver.requests[-1].body == receiver.requests[0].body


def test_an_unreachable_endpoint_is_recorded_and_retried(settings):
    settings.WEBHOOK_ALLOW_PRIVATE_URLS = True
    job = JobFactory(status="draft")
    make_items(job, 1)
    _endpoint(job.organization, "http://127.0.0.1:1/nothing-listens")
    job_launch(job=job)
    attempt = webhook_deliver(delivery_id=WebhookDelivery.objects.get().pk)
    assert attempt.status == "pending"
    assert attempt.response_code is None
    assert "ConnectionRefusedError" in attempt.error


def test_endpoints_on_this_network_are_refused_unless_allowed(settings):
    settings.WEBHOOK_ALLOW_PRIVATE_URLS = False
    org = JobFactory().organization
    for url in ("http://127.0.0.1:8000/x", "http://10.0.0.5/x", "http://localhost/x", "ftp://a/b"):
        with pytest.raises(ApplicationError):
            _endpoint(org, url)
    assert _endpoint(org, "https://93.184.215.14/hook").pk


@pytest.mark.parametrize(
    ("action", "event"),
    [
        pytest.param(job_launch, "job.launched", id="launch"),
        pytest.param(job_pause, "job.paused", id="pause"),
        pytest.param(job_cancel, "job.cancelled", id="cancel"),
    ],
)
def test_lifecycle_changes_record_their_event_for_subscribed_endpoints_only(action, event):
    job = JobFactory(status="running" if action is not job_launch else "draft")
    make_items(job, 1)
    subscribed = _endpoint(job.organization)
    _endpoint(job.organization, events=["job.completed"])
    _endpoint(job.organization, active=False)
    _endpoint(Organization.objects.create(name="Globex", kind="client"))  # another client

    action(job=job)

    assert list(WebhookDelivery.objects.values_list("endpoint_id", "event", "status")) == [
        (subscribed.pk, event, "pending")
    ]


def test_the_last_settled_item_completes_the_job_and_records_job_completed():
    job = review_job(n_items=1)
    endpoint = _endpoint(job.organization, events=["job.completed"])
    label_items(job, [["cat"], ["cat"]])
    job_complete_if_done(job_id=job.pk)  # idempotent: completes once
    job.refresh_from_db()
    assert job.status == "completed"
    (delivery,) = WebhookDelivery.objects.filter(endpoint=endpoint)
    assert delivery.event == "job.completed"
    assert delivery.payload["data"]["job"]["status"] == "completed"


def test_resolving_a_review_records_review_resolved(qc_actor):
    job = review_job(n_items=1)
    endpoint = _endpoint(job.organization, events=["review.resolved"])
    label_items(job, [["cat"], ["dog"]])
    (item,) = items(job)
    review = Review.objects.get(item=item)

    review_resolve(user=qc_actor.user, review_id=review.pk, label="dog")

    (delivery,) = WebhookDelivery.objects.filter(endpoint=endpoint)
    assert delivery.event == "review.resolved"
    assert delivery.payload["data"]["item"] == {
        "id": item.pk,
        "external_id": item.external_id,
        "label": "dog",
    }
    assert delivery.payload["data"]["review"] == {"id": review.pk, "reason": review.reason}


def test_item_finalized_is_opt_in_and_batched_from_a_cursor():
    job = JobFactory(status="running")
    make_items(job, 7)
    other = JobFactory(
        status="running", organization=Organization.objects.create(name="Globex", kind="client")
    )
    make_items(other, 2)
    opted_in = _endpoint(job.organization, events=["item.finalized"])
    _endpoint(job.organization)  # the default events leave item.finalized out
    _endpoint(other.organization, events=["item.finalized"])
    # Items settled after the endpoint opted in (its cursor starts at its creation)
    now = timezone.now() + timedelta(seconds=60)
    settled_at = now - timedelta(seconds=30)
    ids = list(Item.objects.filter(job=job).order_by("id").values_list("id", flat=True))
    Item.objects.filter(pk__in=ids[:5]).update(
        state="settled", label="cat", confidence=0.99, source="crowd", settled_at=settled_at
    )
    # Settled a moment ago: waits for the next sweep (its transaction may not be visible yet)
    Item.objects.filter(pk=ids[5]).update(state="settled", label="dog", settled_at=now)

    assert items_finalized_emit(now=now, batch=2) == 3

    deliveries = list(WebhookDelivery.objects.filter(endpoint=opted_in).order_by("id"))
    sent = [row["external_id"] for d in deliveries for row in d.payload["data"]["items"]]
    assert [d.event for d in deliveries] == ["item.finalized"] * 3
    assert sent == [Item.objects.get(pk=pk).external_id for pk in ids[:5]]
    assert deliveries[0].payload["data"]["items"][0] == {
        "job": job.pk,
        "external_id": Item.objects.get(pk=ids[0]).external_id,
        "label": "cat",
        "confidence": 0.99,
        "source": "crowd",
        "settled_at": settled_at.isoformat(),
    }
    assert WebhookDelivery.objects.count() == 3  # no other endpoint got anything
    # The next sweep sends only what settled since
    assert items_finalized_emit(now=now) == 0
    later = now + timedelta(seconds=10)
    (delivery_id,) = [items_finalized_emit(now=later)]
    assert delivery_id == 1
    last = WebhookDelivery.objects.filter(endpoint=opted_in).order_by("-id").first()
    assert [row["label"] for row in last.payload["data"]["items"]] == ["dog"]
    opted_in.refresh_from_db()
    assert opted_in.finalized_after_id == ids[5]


def test_endpoint_defaults_and_unknown_events():
    org = JobFactory().organization
    endpoint = _endpoint(org)
    assert "item.finalized" not in endpoint.events
    assert "job.completed" in endpoint.events
    assert len(endpoint.secret) == 64
    with pytest.raises(ApplicationError):
        _endpoint(org, events=["job.exploded"])
    assert WebhookEndpoint.objects.count() == 1


def test_item_finalized_delivers_another_kinds_result_as_json():
    job = JobFactory(
        status="running", label_schema={"kind": "multi_choice", "tags": ["indoor", "people"]}
    )
    make_items(job, 1)
    endpoint = _endpoint(job.organization, events=["item.finalized"])
    now = timezone.now() + timedelta(seconds=60)
    Item.objects.filter(job=job).update(
        state="settled",
        label='["indoor","people"]',
        confidence=0.97,
        source="crowd",
        settled_at=now - timedelta(seconds=30),
    )

    assert items_finalized_emit(now=now) == 1

    delivery = WebhookDelivery.objects.get(endpoint=endpoint)
    assert delivery.payload["data"]["items"][0]["label"] == ["indoor", "people"]
