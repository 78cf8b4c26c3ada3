"""Core tasks: a job summary that proves a worker sees the same database as the web tier."""

from apps.jobs.models import Job
from apps.jobs.selectors import job_item_counts
from workers.celery import app


@app.task(name="concord.job_summary")
def job_summary(job_id: int) -> dict:
    """Item counts by state for one job (used by health checks and the worker test)."""

    job = Job.objects.get(pk=job_id)
    return {"job": job.pk, "status": job.status, "items": job_item_counts(job=job)}
