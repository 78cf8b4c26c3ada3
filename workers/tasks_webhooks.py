"""Celery tasks for client webhooks (thin: ids in, one service call; safe to run twice)."""

from apps.webhooks.selectors import webhook_deliveries_due
from apps.webhooks.services import items_finalized_emit, webhook_deliver
from workers.celery import app


@app.task(name="concord.webhooks.deliver", bind=True, acks_late=True, max_retries=None)
def deliver(self, delivery_id: int) -> dict | None:
    """One attempt at a delivery; a failed one is retried with exponential backoff (the
    delay is the service's; the delivery row, not Celery, counts the attempts)."""

    attempt = webhook_deliver(delivery_id=delivery_id)
    if attempt is None:
        return None
    if attempt.retry_in is not None and not self.request.is_eager:
        # In-process (eager) runs have no timer: the dispatch_due sweep retries them.
        raise self.retry(countdown=attempt.retry_in)
    return {"status": attempt.status, "attempts": attempt.attempts, "code": attempt.response_code}


@app.task(name="concord.webhooks.dispatch_due")
def dispatch_due() -> int:
    """The beat entry: enqueue every pending delivery whose attempt is due (catches up on
    enqueues lost while the broker was down and on retries whose timer was lost)."""

    ids = webhook_deliveries_due()
    for delivery_id in ids:
        deliver.delay(delivery_id)
    return len(ids)


@app.task(name="concord.webhooks.items_finalized")
def items_finalized() -> int:
    """The beat entry: batch newly settled items into item.finalized deliveries."""

    return items_finalized_emit()
