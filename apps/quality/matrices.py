"""What the quality engine knows of workers and classes between aggregation runs: each
worker's confusion matrix for a job (its own, its history with the same classes, or a
newcomer's one-coin matrix), the job's class prior, and the quality policy's defaults."""

from __future__ import annotations

import functools
import hashlib
from typing import Any

import numpy as np
from django.db.models import Q

from apps.common import caches
from apps.jobs.models import Job
from apps.quality.models import AggregationRun, WorkerJobQuality
from apps.workforce.models import Worker

# Defaults for the quality knobs of a job's policy (all overridable per job).
QUALITY_DEFAULTS: dict[str, Any] = {
    # Re-aggregate the whole job after this many new labels ...
    "reaggregate_every": 200,
    # ... or, once the job is large, after this share of the labels the last run read: a
    # run reads every label, so a fixed interval would make a big job's total work grow
    # with the square of its size; a proportional one keeps it linear.
    "reaggregate_growth": 0.1,
    # Accuracy assumed for a worker with no record in this job nor a prior from history.
    "new_worker_accuracy": 0.7,
    "new_expert_accuracy": 0.95,
    # Pseudo-answers per class that a history matrix is worth as a prior in a new job.
    "history_strength": 10.0,
    # Suspend when the gold accuracy's upper Wilson bound falls below this ...
    "gold_min_accuracy": 0.6,
    # ... once the worker has answered at least this many gold items.
    "gold_min_answers": 5,
    # Suspend when the median time of the worker's last answers is below this (None: off).
    "min_median_duration_ms": None,
    "speed_window": 20,
    # How a suspended worker's labels count: 0 drops them (other values down-weight).
    "suspended_label_weight": 0.0,
    # A gold item shown this often is retired (it leaks).
    "gold_max_exposures": 200,
    # Adaptive gold rate: a worker with fewer than gold_min_answers gold answers in the job
    # gets the job's gold_rate times this (capped at 1) ...
    "gold_new_factor": 2.0,
    # ... one with at least this many gold answers ...
    "gold_proven_answers": 20,
    # ... whose gold accuracy's lower Wilson bound reaches this (20 of 20 correct: 0.839) ...
    "gold_proven_accuracy": 0.8,
    # ... gets gold_rate times this; everyone else gets gold_rate itself.
    "gold_proven_factor": 0.5,
}


INACTIVE = (Worker.Status.SUSPENDED, Worker.Status.BANNED)


def quality_policy(job: Job) -> dict[str, Any]:
    return {**QUALITY_DEFAULTS, **job.effective_policy}


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
    policy = quality_policy(job)
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
    policy: dict[str, Any],
    k: int,
) -> dict[int, np.ndarray]:
    result = {}
    for worker_id in worker_ids:
        if worker_id in found:
            result[worker_id] = np.asarray(found[worker_id], dtype=np.float64)
        else:
            accuracy = (
                policy["new_expert_accuracy"]
                if tiers.get(worker_id) == Worker.Tier.EXPERT
                else policy["new_worker_accuracy"]
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
