"""Client webhook endpoints and the record of every delivery made to them."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models

from apps.accounts.models import Organization


class Event(models.TextChoices):
    """What a client can subscribe to."""

    JOB_LAUNCHED = "job.launched", "A job started or resumed"
    JOB_PAUSED = "job.paused", "A job was paused"
    JOB_CANCELLED = "job.cancelled", "A job was cancelled"
    JOB_COMPLETED = "job.completed", "Every item of a job is settled"
    REVIEW_RESOLVED = "review.resolved", "QC decided an item's final label"
    # Opt-in: one delivery carries a batch of items (see apps.webhooks.services).
    ITEM_FINALIZED = "item.finalized", "Items settled (batched, opt-in)"
    PING = "webhook.ping", "A test delivery asked for by the client"


# What an endpoint gets when it does not say: every event but the numerous item.finalized.
DEFAULT_EVENTS = [
    Event.JOB_LAUNCHED,
    Event.JOB_PAUSED,
    Event.JOB_CANCELLED,
    Event.JOB_COMPLETED,
    Event.REVIEW_RESOLVED,
]


class WebhookEndpoint(models.Model):
    organization = models.ForeignKey(
        Organization,
        on_delete=models.CASCADE,
        related_name="webhook_endpoints",
        help_text="The client organization whose events this endpoint receives.",
    )
    url = models.URLField(max_length=2000, help_text="Where events are POSTed (http or https).")
    secret = models.CharField(
        max_length=128, help_text="Key of the HMAC-SHA256 signature in Concord-Signature."
    )
    events = models.JSONField(
        default=list, help_text="Event names subscribed to (item.finalized is opt-in)."
    )
    active = models.BooleanField(default=True, help_text="Inactive endpoints get no events.")
    description = models.CharField(max_length=200, blank=True, default="")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    # Where the batched item.finalized sweep has got to: items settled after
    # (finalized_after, finalized_after_id) in (settled_at, id) order are still to send.
    finalized_after = models.DateTimeField(
        null=True, blank=True, help_text="settled_at of the last item sent in item.finalized."
    )
    finalized_after_id = models.BigIntegerField(
        default=0, help_text="id of the last item sent in item.finalized (ties on settled_at)."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["organization", "active"], name="webhook_endpoint_org_idx")]

    def __str__(self) -> str:
        return f"{self.url} ({self.organization_id})"


class WebhookDelivery(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Waiting for its (next) attempt"
        DELIVERED = "delivered", "The endpoint answered 2xx"
        FAILED = "failed", "Every attempt failed"

    endpoint = models.ForeignKey(
        WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries"
    )
    event = models.CharField(max_length=32, help_text="The event name, e.g. job.completed.")
    event_id = models.UUIDField(
        default=uuid.uuid4, help_text="The event's id: the same on every endpoint and replay."
    )
    payload = models.JSONField(help_text="The JSON body sent (signed as serialized).")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0, help_text="Attempts made so far.")
    last_response_code = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="", help_text="Why the last attempt failed.")
    next_attempt_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When the next attempt is due (pending only); also bounds a running attempt.",
    )
    replay_of = models.ForeignKey(
        "self",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="replays",
        help_text="The delivery this one replays.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["endpoint", "-id"], name="webhook_delivery_endpoint_idx"),
            models.Index(
                fields=["next_attempt_at"],
                condition=models.Q(status="pending"),
                name="webhook_delivery_due_idx",
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(status__in=["pending", "delivered", "failed"]),
                name="webhook_delivery_status_valid",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.event} → {self.endpoint_id} ({self.status})"
