"""Celery tasks for the quality engine (thin: ids in, one service call)."""

from apps.jobs.models import Job
from apps.pipeline.crowd import worker_items_reconsider as reconsider
from apps.pipeline.crowd import worker_rules_check as check
from apps.quality.aggregation import job_aggregate
from workers.celery import app


@app.task(name="quality.aggregate_job", acks_late=True)
def aggregate_job(job_id: int) -> dict | None:
    """Re-aggregate one job; running it twice on the same labels gives the same result.
    (The run clears the job's queued mark once it has read its labels.)"""

    run = job_aggregate(job_id=job_id)
    return None if run is None else {"run": run.pk, "labels": run.n_labels, "seconds": run.seconds}


@app.task(name="quality.aggregate_running_jobs")
def aggregate_running_jobs() -> int:
    """The beat entry: queue a re-aggregation of every running job."""

    ids = list(Job.objects.filter(status=Job.Status.RUNNING).values_list("id", flat=True))
    for job_id in ids:
        aggregate_job.delay(job_id)
    return len(ids)


@app.task(name="quality.worker_rules_check")
def worker_rules_check(worker_id: int, job_id: int) -> str | None:
    decision = check(worker_id=worker_id, job_id=job_id)
    return None if decision is None else decision.reason


@app.task(name="quality.worker_items_reconsider", acks_late=True)
def worker_items_reconsider(worker_id: int) -> int:
    """After an ops ban or suspension: the worker's items in running jobs decided again
    (twice is harmless: a second pass finds them decided without the worker already)."""
    return reconsider(worker_id=worker_id)
