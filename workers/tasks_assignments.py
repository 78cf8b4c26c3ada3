"""Celery tasks for apps.assignments (thin: ids in, one service call)."""

from apps.assignments.sweeps import job_leases_release as release
from apps.assignments.sweeps import lease_sweep as sweep
from workers.celery import app


@app.task(name="concord.assignments.lease_sweep")
def lease_sweep(job_id: int | None = None) -> int:
    """Return the slots of lapsed leases (and of leases on stopped jobs); safe to run twice.

    Re-enqueues itself while a full batch was swept, so a backlog drains without one huge
    transaction.
    """

    batch = 5000
    swept = sweep(job_id=job_id, limit=batch)
    if swept >= batch:
        lease_sweep.delay(job_id)
    return swept


@app.task(name="concord.assignments.job_leases_release")
def job_leases_release(job_id: int) -> int:
    """Release every live lease of a job that stopped running (pause, cancel, completion)."""

    return release(job_id=job_id)
