"""Celery tasks for apps.reviews (thin: one service call each, safe to run twice)."""

from apps.reviews.services import review_expert_timeouts, review_reprioritize
from workers.celery import app


@app.task(name="concord.reviews.reprioritize")
def reviews_reprioritize() -> int:
    """Refresh the aging bonus of open reviews so that old ones rise in the queue."""

    return review_reprioritize()


@app.task(name="concord.reviews.expert_timeouts")
def reviews_expert_timeouts() -> int:
    """Send items that waited too long for an expert to QC review."""

    return review_expert_timeouts()
