"""What the quality engine knows of workers and classes between aggregation runs: each
worker's confusion matrix for a job (its own, its history with the same classes, or a
newcomer's one-coin matrix) and the job's class prior."""

from __future__ import annotations

import functools
import hashlib

import numpy as np
from django.db.models import Q

from apps.common import caches
from apps.jobs.models import Job
from apps.jobs.policy import Policy
from apps.quality.models import AggregationRun, WorkerJobQuality
from apps.workforce.models import Worker

INACTIVE = (Worker.Status.SUSPENDED, Worker.Status.BANNED)


def classes_key(classes: list[str]) -> str:
    return hashlib.sha256("\x1f".join(classes).encode()).hexdigest()[:32]


def one_coin_confusion(accuracy: float, k: int) -> np.ndarray:
    off = (1.0 - accuracy) / max(k - 1, 1)
    matrix = np.full((k, k), off)
    np.fill_diagonal(matrix, accuracy)
    return matrix


@functools.lru_cache(maxsize=256)
def _newcomer_confusion(accuracy: float, k: int) -> np.ndarray:
    """one_coin_confusion, shared and read-only: every label of a worker without a matrix
    needs one, and building it each time was a few numpy calls per label."""
    matrix = one_coin_confusion(accuracy, k)
    matrix.flags.writeable = False
    return matrix


def worker_confusions(
    *,
    job: Job,
    worker_ids: list[int],
    tiers: dict[int, str] | None = None,
    stored: dict[int, list] | None = None,
) -> dict[int, np.ndarray]:
    """Each worker's confusion matrix for this job: the job's estimate, else the worker's
    latest matrix from an earlier job with the same classes (history as a prior), else a
    one-coin matrix at the policy's accuracy for a newcomer of that tier.

    `stored`, when given, is what the database holds for these workers (already read with
    their answers), and no query is made.
    """
    k = len(job.classes)
    policy = job.spec.policy
    if stored is not None:
        return _matrices_or_newcomer(job, worker_ids, stored, tiers or {}, policy, k)
    # One query: this job's matrices and, for workers new to it, their history with the
    # same classes (the job's own row wins; otherwise the most recently updated).
    rows = (
        WorkerJobQuality.objects.filter(worker_id__in=worker_ids)
        .filter(Q(job=job) | Q(classes_key=classes_key(job.classes), source="aggregation"))
        .order_by("-updated_at")
        .values_list("worker_id", "job_id", "confusion")
    )
    found: dict[int, list] = {}
    own: set[int] = set()
    for worker_id, job_id, confusion in rows:
        if job_id == job.pk and worker_id not in own:
            found[worker_id] = confusion
            own.add(worker_id)
        else:
            found.setdefault(worker_id, confusion)
    return _matrices_or_newcomer(job, worker_ids, found, tiers or {}, policy, k)


def _matrices_or_newcomer(
    job: Job,
    worker_ids: list[int],
    found: dict[int, list],
    tiers: dict[int, str],
    policy: Policy,
    k: int,
) -> dict[int, np.ndarray]:
    result = {}
    for worker_id in worker_ids:
        if worker_id in found:
            result[worker_id] = np.asarray(found[worker_id], dtype=np.float64)
        else:
            accuracy = (
                policy.new_expert_accuracy
                if tiers.get(worker_id) == Worker.Tier.EXPERT
                else policy.new_worker_accuracy
            )
            result[worker_id] = _newcomer_confusion(float(accuracy), k)
    return result


def history_confusions(*, job: Job, worker_ids: list[int]) -> dict[int, list]:
    """The latest matrix of each worker from other jobs with the same class list."""
    rows = (
        WorkerJobQuality.objects.filter(
            worker_id__in=worker_ids, classes_key=classes_key(job.classes), source="aggregation"
        )
        .exclude(job=job)
        .order_by("worker_id", "-updated_at")
        .values_list("worker_id", "confusion")
    )
    found: dict[int, list] = {}
    for worker_id, confusion in rows:
        found.setdefault(worker_id, confusion)
    return found


def prior_cache_key(job_id: int) -> str:
    return f"concord:quality:class-prior:{job_id}"


# A per-process copy of each job's class prior for a few seconds: it is read on every
# submit and changes once per aggregation run, so the shared cache is asked rarely. A run
# invalidates it in every process (apps.common.caches).
CLASS_PRIORS = caches.register(
    name="class_priors",
    ttl_s=10.0,
    max_entries=10_000,
    invalidated_by="job_aggregate (each run stores a new prior)",
)


def job_class_prior(*, job: Job) -> np.ndarray:
    """The class frequencies of the job's latest aggregation (uniform before the first).

    Cached for a minute (and per process for a few seconds): it is read on every submit and
    changes only per aggregation run.
    """
    k = len(job.classes)

    def load() -> list:
        prior = caches.shared_get(prior_cache_key(job.pk))
        if prior is None:
            prior = (
                AggregationRun.objects.filter(job=job)
                .order_by("-id")
                .values_list("class_prior", flat=True)
                .first()
            ) or []
            caches.shared_set(prior_cache_key(job.pk), prior, timeout=60)
        return prior

    prior = CLASS_PRIORS.get(job.pk, load)
    if len(prior) == k:
        return np.asarray(prior, dtype=np.float64)
    return np.full(k, 1.0 / k)
