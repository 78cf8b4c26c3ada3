"""Reads for webhooks: a client's endpoints and deliveries, and the deliveries due."""

from __future__ import annotations

from datetime import datetime

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet
from django.utils import timezone

from apps.accounts.selectors import user_client_org_ids
from apps.common.errors import ApplicationError, ErrorCode
from apps.webhooks.models import WebhookDelivery, WebhookEndpoint


def _not_found(what: str) -> ApplicationError:
    return ApplicationError(f"No such {what}.", code=ErrorCode.NOT_FOUND, status_code=404)


def webhook_endpoints_for_user(*, user: AbstractBaseUser) -> QuerySet[WebhookEndpoint]:
    """The endpoints of the client organizations the user is a client in."""
    return WebhookEndpoint.objects.filter(
        organization_id__in=user_client_org_ids(user=user)
    ).select_related("organization")


def webhook_endpoint_get_for_user(*, user: AbstractBaseUser, endpoint_id: int) -> WebhookEndpoint:
    """One of the user's organizations' endpoints; 404 for anyone else's."""
    endpoint = webhook_endpoints_for_user(user=user).filter(pk=endpoint_id).first()
    if endpoint is None:
        raise _not_found("webhook endpoint")
    return endpoint


def webhook_deliveries_for_user(
    *,
    user: AbstractBaseUser,
    endpoint_id: int | None = None,
    status: str | None = None,
    event: str | None = None,
) -> QuerySet[WebhookDelivery]:
    """Deliveries to the user's organizations' endpoints, newest first, optionally filtered."""
    deliveries = WebhookDelivery.objects.filter(
        endpoint__organization_id__in=user_client_org_ids(user=user)
    )
    if endpoint_id is not None:
        deliveries = deliveries.filter(endpoint_id=endpoint_id)
    if status:
        deliveries = deliveries.filter(status=status)
    if event:
        deliveries = deliveries.filter(event=event)
    return deliveries.order_by("-id")


def webhook_delivery_get_for_user(*, user: AbstractBaseUser, delivery_id: int) -> WebhookDelivery:
    """One delivery to one of the user's organizations' endpoints; 404 for anyone else's."""
    delivery = webhook_deliveries_for_user(user=user).filter(pk=delivery_id).first()
    if delivery is None:
        raise _not_found("webhook delivery")
    return delivery


def webhook_deliveries_due(*, now: datetime | None = None, limit: int = 1000) -> list[int]:
    """Ids of pending deliveries whose next attempt is due, the longest waiting first."""
    now = now or timezone.now()
    return list(
        WebhookDelivery.objects.filter(
            status=WebhookDelivery.Status.PENDING, next_attempt_at__lte=now
        )
        .order_by("next_attempt_at")
        .values_list("id", flat=True)[:limit]
    )
