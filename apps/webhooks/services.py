"""Writes for webhooks: endpoints, one signed delivery attempt, replays and the batched
item.finalized sweep.

A delivery is an HTTP POST of the event's JSON body with `Concord-Signature: sha256=<hex>`,
the HMAC-SHA256 of the exact body bytes keyed with the endpoint's secret. A 2xx answer
delivers it; anything else (a status, a timeout, a refused connection) schedules the next
attempt after an exponential backoff (WEBHOOK_BACKOFF_BASE_SECONDS x 2^(attempts-1), capped
at WEBHOOK_BACKOFF_MAX_SECONDS) until WEBHOOK_MAX_ATTEMPTS have failed.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import ipaddress
import json
import secrets
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import F, Q
from django.db.models.fields.json import KeyTextTransform
from django.utils import timezone

from apps.accounts.models import Organization
from apps.common.errors import ApplicationError
from apps.jobs.models import Item
from apps.webhooks.events import deliveries_enqueue, event_payload
from apps.webhooks.models import DEFAULT_EVENTS, Event, WebhookDelivery, WebhookEndpoint

SIGNATURE_HEADER = "Concord-Signature"
USER_AGENT = "Concord-Webhooks/1"
# Items settled less than this long ago wait for the next sweep: a settling transaction
# that took settled_at just before the sweep may commit just after it.
FINALIZED_LAG = timedelta(seconds=5)


def _label_value(label: str | None, kind: str | None) -> Any:
    """A result as delivered: a class name as it is; another kind's result (stored as
    canonical JSON text, apps.jobs.kinds) as its JSON value."""
    if label is None or kind in (None, "", "single_choice"):
        return label
    return json.loads(label)


def payload_body(payload: dict[str, Any]) -> bytes:
    """The bytes sent (and signed) for a payload: compact, keys sorted, the same every try."""
    return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()


def signature(*, secret: str, body: bytes) -> str:
    """The Concord-Signature header value: `sha256=` and the hex HMAC-SHA256 of the body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def backoff_seconds(*, attempts: int) -> float:
    """Wait before attempt `attempts + 1`, after `attempts` failed ones."""
    base = float(settings.WEBHOOK_BACKOFF_BASE_SECONDS)
    return min(base * 2 ** max(attempts - 1, 0), float(settings.WEBHOOK_BACKOFF_MAX_SECONDS))


# --------------------------------------------------------------------------- endpoints


def _resolve(host: str) -> list[str]:
    try:
        return [str(info[4][0]) for info in socket.getaddrinfo(host, None)]
    except OSError as exc:
        raise ApplicationError(f"Cannot resolve {host}: {exc}") from exc


def _check_url(url: str, *, resolve: bool) -> None:
    """Refuse URLs that are not http(s), and (unless WEBHOOK_ALLOW_PRIVATE_URLS) hosts on
    loopback, private or link-local addresses: Concord must not be a way into its own
    network. `resolve` also looks the name up (at delivery time, not when saved)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ApplicationError("The URL must be http(s) with a host.", details={"url": "invalid"})
    if settings.WEBHOOK_ALLOW_PRIVATE_URLS:
        return
    hosts: list[str] = [parts.hostname]
    if resolve:
        hosts = _resolve(parts.hostname)
    for host in hosts:
        try:
            address = ipaddress.ip_address(host.split("%")[0])
        except ValueError:
            if host.lower() == "localhost":
                raise ApplicationError(
                    "Webhook URLs may not point at this network.", details={"url": "private"}
                ) from None
            continue
        if not address.is_global:
            raise ApplicationError(
                "Webhook URLs may not point at this network.", details={"url": "private"}
            )


def _check_events(events: list[str]) -> list[str]:
    allowed = {event.value for event in Event} - {Event.PING.value}
    unknown = sorted(set(events) - allowed)
    if unknown:
        raise ApplicationError(
            f"Unknown events: {', '.join(unknown)}.", details={"events": unknown}
        )
    return sorted(set(events))


@transaction.atomic
def webhook_endpoint_create(
    *,
    organization: Organization,
    created_by: AbstractBaseUser | None,
    url: str,
    events: list[str] | None = None,
    secret: str | None = None,
    description: str = "",
    active: bool = True,
) -> WebhookEndpoint:
    """A client organization's new endpoint; a secret is generated unless one is given."""
    if organization.kind != Organization.Kind.CLIENT:
        raise ApplicationError("Webhooks belong to client organizations.")
    _check_url(url, resolve=False)
    endpoint = WebhookEndpoint.objects.create(
        organization=organization,
        created_by=created_by,
        url=url,
        events=_check_events(list(DEFAULT_EVENTS) if events is None else events),
        secret=secret or secrets.token_hex(32),
        description=description,
        active=active,
        finalized_after=timezone.now(),
    )
    return endpoint


@transaction.atomic
def webhook_endpoint_update(
    *, endpoint: WebhookEndpoint, changes: dict[str, Any]
) -> WebhookEndpoint:
    """Change url, events, secret, description or active; a new secret signs from now on."""
    endpoint = WebhookEndpoint.objects.select_for_update().get(pk=endpoint.pk)
    fields: list[str] = []
    if "url" in changes:
        _check_url(changes["url"], resolve=False)
    if "events" in changes:
        changes = {**changes, "events": _check_events(changes["events"])}
        if Event.ITEM_FINALIZED in changes["events"] and (
            Event.ITEM_FINALIZED not in endpoint.events
        ):
            # Opting in starts from now, not from the endpoint's creation.
            endpoint.finalized_after, endpoint.finalized_after_id = timezone.now(), 0
            fields += ["finalized_after", "finalized_after_id"]
    for name in ("url", "events", "secret", "description", "active"):
        if name in changes:
            setattr(endpoint, name, changes[name])
            fields.append(name)
    endpoint.save(update_fields=[*fields, "updated_at"])
    return endpoint


def webhook_endpoint_delete(*, endpoint: WebhookEndpoint) -> None:
    """Delete an endpoint and its delivery history."""
    endpoint.delete()


@transaction.atomic
def webhook_ping(*, endpoint: WebhookEndpoint) -> WebhookDelivery:
    """A test delivery (webhook.ping) to one endpoint, whatever it subscribes to."""
    now = timezone.now()
    event_id = uuid.uuid4()
    delivery = WebhookDelivery.objects.create(
        endpoint=endpoint,
        event=Event.PING,
        event_id=event_id,
        payload=event_payload(
            event=Event.PING, data={"endpoint": endpoint.pk}, event_id=event_id, at=now
        ),
        next_attempt_at=now,
    )
    transaction.on_commit(lambda: deliveries_enqueue(delivery_ids=[delivery.pk]))
    return delivery


@transaction.atomic
def webhook_delivery_replay(*, delivery: WebhookDelivery) -> WebhookDelivery:
    """Send a recorded delivery again, as a new delivery with the same event and body (the
    event id is unchanged, so a receiver that dedupes on it can tell)."""
    now = timezone.now()
    replay = WebhookDelivery.objects.create(
        endpoint_id=delivery.endpoint_id,
        event=delivery.event,
        event_id=delivery.event_id,
        payload=delivery.payload,
        next_attempt_at=now,
        replay_of=delivery,
    )
    transaction.on_commit(lambda: deliveries_enqueue(delivery_ids=[replay.pk]))
    return replay


# --------------------------------------------------------------------------- delivery


@dataclass(frozen=True)
class Attempt:
    """What one delivery attempt did; `retry_in` is set when another attempt is scheduled."""

    delivery_id: int
    status: str
    attempts: int
    response_code: int | None
    error: str
    retry_in: float | None


def _post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> tuple[int, str]:
    """POST without following redirects; (status, first bytes of the answer)."""
    parts = urlsplit(url)
    connection_class = (
        http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    )
    connection = connection_class(parts.hostname, parts.port, timeout=timeout)
    try:
        path = parts.path or "/"
        if parts.query:
            path = f"{path}?{parts.query}"
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read(512).decode(errors="replace")
    finally:
        connection.close()


def webhook_deliver(*, delivery_id: int, now: datetime | None = None) -> Attempt | None:
    """Make one attempt at a pending delivery that is due; None if it is not (delivered,
    failed for good, not due yet, or another worker's attempt is under way).

    The attempt is claimed with one conditional UPDATE that counts it and moves
    next_attempt_at past the attempt's timeout, so two workers never send it at once and a
    worker killed mid-attempt leaves it due again shortly after. No transaction or lock is
    held while the endpoint answers.
    """
    now = now or timezone.now()
    timeout = float(settings.WEBHOOK_TIMEOUT_SECONDS)
    claimed = WebhookDelivery.objects.filter(
        pk=delivery_id, status=WebhookDelivery.Status.PENDING, next_attempt_at__lte=now
    ).update(
        attempts=F("attempts") + 1,
        next_attempt_at=now + timedelta(seconds=timeout + 30),
        updated_at=now,
    )
    if not claimed:
        return None
    delivery = WebhookDelivery.objects.select_related("endpoint").get(pk=delivery_id)
    endpoint = delivery.endpoint
    code: int | None = None
    error = ""
    if not endpoint.active:
        error = "endpoint inactive"
    else:
        body = payload_body(delivery.payload)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "Concord-Event": delivery.event,
            "Concord-Event-Id": str(delivery.event_id),
            "Concord-Delivery": str(delivery.pk),
            "Concord-Attempt": str(delivery.attempts),
            SIGNATURE_HEADER: signature(secret=endpoint.secret, body=body),
        }
        try:
            _check_url(endpoint.url, resolve=True)
            code, answer = _post(endpoint.url, body, headers, timeout)
            if not 200 <= code < 300:
                error = f"HTTP {code}: {answer[:200]}"
        except ApplicationError as exc:
            error = exc.message
        except (OSError, http.client.HTTPException) as exc:
            error = f"{exc.__class__.__name__}: {exc}"[:500]
    retry_in: float | None = None
    update: dict[str, Any] = {"last_response_code": code, "last_error": error, "updated_at": now}
    if not error:
        update.update(
            status=WebhookDelivery.Status.DELIVERED, delivered_at=now, next_attempt_at=None
        )
    elif delivery.attempts >= int(settings.WEBHOOK_MAX_ATTEMPTS) or not endpoint.active:
        update.update(status=WebhookDelivery.Status.FAILED, next_attempt_at=None)
    else:
        retry_in = backoff_seconds(attempts=delivery.attempts)
        update["next_attempt_at"] = now + timedelta(seconds=retry_in)
    WebhookDelivery.objects.filter(pk=delivery.pk).update(**update)
    return Attempt(
        delivery_id=delivery.pk,
        status=update.get("status", WebhookDelivery.Status.PENDING),
        attempts=delivery.attempts,
        response_code=code,
        error=error,
        retry_in=retry_in,
    )


# --------------------------------------------------------------------------- item.finalized


def items_finalized_emit(
    *, now: datetime | None = None, batch: int = 500, max_batches: int = 20
) -> int:
    """The batched, opt-in item.finalized event: for every active endpoint subscribed to it,
    one delivery per `batch` items of the organization's jobs settled since the endpoint's
    cursor (in settled_at, id order). Returns the number of deliveries recorded.

    An item QC re-decides after it settled is settled again and sent again with its new
    label. Endpoints are locked with SKIP LOCKED, so concurrent sweeps never send twice.
    """
    now = now or timezone.now()
    horizon = now - FINALIZED_LAG
    candidates = [
        endpoint.pk
        for endpoint in WebhookEndpoint.objects.filter(active=True).only("id", "events")
        if Event.ITEM_FINALIZED in endpoint.events
    ]
    made = 0
    for endpoint_id in candidates:
        with transaction.atomic():
            endpoint = (
                WebhookEndpoint.objects.select_for_update(skip_locked=True)
                .filter(pk=endpoint_id, active=True)
                .first()
            )
            if endpoint is None:
                continue
            ids = []
            after_at = endpoint.finalized_after or endpoint.created_at
            after_id = endpoint.finalized_after_id
            for _ in range(max_batches):
                rows = list(
                    Item.objects.filter(
                        job__organization_id=endpoint.organization_id,
                        state=Item.State.SETTLED,
                        gold_label__isnull=True,
                        settled_at__lte=horizon,
                    )
                    .filter(Q(settled_at__gt=after_at) | Q(settled_at=after_at, id__gt=after_id))
                    .order_by("settled_at", "id")
                    .values(
                        "id",
                        "job_id",
                        "external_id",
                        "label",
                        "confidence",
                        "source",
                        "settled_at",
                        kind=KeyTextTransform("kind", "job__label_schema"),
                    )[:batch]
                )
                if not rows:
                    break
                event_id = uuid.uuid4()
                items = [
                    {
                        "job": row["job_id"],
                        "external_id": row["external_id"],
                        "label": _label_value(row["label"], row["kind"]),
                        "confidence": row["confidence"],
                        "source": row["source"],
                        "settled_at": row["settled_at"].isoformat(),
                    }
                    for row in rows
                ]
                delivery = WebhookDelivery.objects.create(
                    endpoint=endpoint,
                    event=Event.ITEM_FINALIZED,
                    event_id=event_id,
                    payload=event_payload(
                        event=Event.ITEM_FINALIZED, data={"items": items}, event_id=event_id, at=now
                    ),
                    next_attempt_at=now,
                )
                ids.append(delivery.pk)
                after_at, after_id = rows[-1]["settled_at"], rows[-1]["id"]
                if len(rows) < batch:
                    break
            if ids:
                WebhookEndpoint.objects.filter(pk=endpoint.pk).update(
                    finalized_after=after_at, finalized_after_id=after_id
                )
                made += len(ids)
                transaction.on_commit(lambda ids=ids: deliveries_enqueue(delivery_ids=ids))
    return made
