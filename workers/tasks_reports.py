"""Celery tasks for apps.reports (thin: one service call each, safe to run twice)."""

from dataclasses import asdict

from apps.reports.rollups import rollup_item, rollup_run
from workers.celery import app


@app.task(name="concord.reports.rollup")
def reports_rollup() -> dict:
    """The beat entry: roll the hours of the labels that came since the last run."""

    return asdict(rollup_run())


@app.task(name="concord.reports.rollup_item")
def reports_rollup_item(item_id: int) -> int:
    """Re-roll the hours of one item's labels after they changed in place."""

    return rollup_item(item_id=item_id)
