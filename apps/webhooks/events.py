"""Recording client events: one pending delivery per subscribed endpoint, sent after commit.

The domain services call the `*_emit` helpers here, one line each, inside the transaction
that makes the change: the deliveries are written in that transaction (an event exists
exactly when its change committed) and handed to Celery once it commits. A delivery whose
enqueue is lost (the broker down, a killed process) is still pending in the database and
the `webhooks.dispatch_due` beat entry sends it.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from apps.common.tasks import enqueue
from apps.jobs.models import Item, Job
from apps.webhooks.models import Event, WebhookDelivery, WebhookEndpoint

logger = logging.getLogger(__name__)


def event_payload(*, event: str, data: dict[str, Any], event_id: uuid.UUID, at: datetime) -> dict:
    """The JSON body of an event, as every endpoint receives it."""
    return {"id": str(event_id), "event": event, "created_at": at.isoformat(), "data": data}


def deliveries_enqueue(*, delivery_ids: list[int]) -> None:
    """Hand deliveries to Celery; one the broker refuses stays pending for the beat sweep."""
    for delivery_id in delivery_ids:
        try:
            enqueue("concord.webhooks.deliver", delivery_id)
        except Exception:  # noqa: BLE001 - the broker is down: dispatch_due sends it later
            logger.warning("webhook delivery %s not enqueued; left for the sweep", delivery_id)


def webhook_emit(
    *, organization_id: int, event: str, data: dict[str, Any], now: datetime | None = None
) -> list[int]:
    """Record `event` for every active endpoint of the organization subscribed to it, in the
    caller's transaction, and enqueue the deliveries once it commits. Returns their ids."""
    endpoints = [
        endpoint
        for endpoint in WebhookEndpoint.objects.filter(
            organization_id=organization_id, active=True
        ).only("id", "events")
        if event in endpoint.events
    ]
    if not endpoints:
        return []
    now = now or timezone.now()
    event_id = uuid.uuid4()
    payload = event_payload(event=event, data=data, event_id=event_id, at=now)
    rows = WebhookDelivery.objects.bulk_create(
        [
            WebhookDelivery(
                endpoint_id=endpoint.pk,
                event=event,
                event_id=event_id,
                payload=payload,
                next_attempt_at=now,
            )
            for endpoint in endpoints
        ]
    )
    ids = [row.pk for row in rows]
    transaction.on_commit(lambda: deliveries_enqueue(delivery_ids=ids))
    return ids


def job_data(job: Job) -> dict[str, Any]:
    return {
        "id": job.pk,
        "name": job.name,
        "status": job.status,
        "results": f"/api/v1/jobs/{job.pk}/results/",
    }


def job_event_emit(*, job: Job, event: Event) -> None:
    """A job's lifecycle event (launched, paused, cancelled, completed)."""
    webhook_emit(organization_id=job.organization_id, event=event, data={"job": job_data(job)})


def job_completed_emit(*, job_id: int) -> None:
    """job.completed, for a job that has just been marked completed."""
    job = Job.objects.only("id", "name", "status", "organization_id").get(pk=job_id)
    job_event_emit(job=job, event=Event.JOB_COMPLETED)


def review_resolved_emit(*, review: Any, item: Item, label: Any) -> None:
    """review.resolved: QC's final label for one item of the client's job (a class name, or
    the JSON answer of the job's kind)."""
    job = review.job
    webhook_emit(
        organization_id=job.organization_id,
        event=Event.REVIEW_RESOLVED,
        data={
            "job": job_data(job),
            "review": {"id": review.pk, "reason": review.reason},
            "item": {"id": item.pk, "external_id": item.external_id, "label": label},
        },
    )
