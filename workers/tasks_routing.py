"""Celery tasks for apps.routing (thin: ids in, one service call)."""

from apps.routing.services import job_retrain, job_retrain_release, jobs_retrain_check
from workers.celery import app


@app.task(name="routing.retrain_job", acks_late=True)
def retrain_job(job_id: int) -> dict:
    """Retrain one job's model and route its items; running it twice only adds a version."""

    try:
        result = job_retrain(job_id=job_id)
    finally:
        job_retrain_release(job_id=job_id)
    version = result.version
    return {
        "version": None if version is None else version.number,
        "activated": result.activated,
        "reason": result.reason,
        "accepted": result.routing.accepted if result.routing else 0,
    }


@app.task(name="routing.check_jobs")
def check_jobs() -> int:
    """The beat entry: queue a retrain of every model-routed job with enough new labels."""

    return jobs_retrain_check()
