"""Quality engine writes: job aggregation, the per-label item decision, gold rules.

Selectors turn label rows into arrays, the kernels in apps.quality.algorithms compute, and
these services write the results back in bulk.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from django.core.cache import cache
from django.db import transaction
from django.db.models import Case, Count, Exists, F, OuterRef, Q, TextField, Value, When
from django.db.models.functions import Cast
from django.utils import timezone

from apps.assignments.models import Assignment, Label
from apps.common import caches
from apps.common.bulk import bulk_compare_and_set
from apps.common.retry import retry_on_deadlock
from apps.jobs.models import Item, Job
from apps.quality import algorithms
from apps.quality.models import AggregationRun, GoldExposure, QualityDecision, WorkerJobQuality
from apps.workforce.models import Worker

logger = logging.getLogger(__name__)

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


@dataclass(frozen=True)
class ItemDecision:
    """What a label did to its item (the same fields the assignment engine writes)."""

    state: str
    labels_needed: int
    label: str | None = None
    confidence: float | None = None
    agreement: float | None = None
    posterior: list[float] | None = None
    source: str | None = None
    extra: dict = field(default_factory=dict)
    review_reason: str | None = None

    @property
    def settled(self) -> bool:
        return self.state == Item.State.SETTLED


# --------------------------------------------------------------------------- worker matrices


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


def _history_confusions(*, job: Job, worker_ids: list[int]) -> dict[int, list]:
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


def _prior_cache_key(job_id: int) -> str:
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


def local_caches_clear() -> None:
    """Forget this process's pending label counts (tests)."""
    with _PENDING_LOCK:
        _PENDING_LABELS.clear()


def job_class_prior(*, job: Job) -> np.ndarray:
    """The class frequencies of the job's latest aggregation (uniform before the first).

    Cached for a minute (and per process for a few seconds): it is read on every submit and
    changes only per aggregation run.
    """
    k = len(job.classes)

    def load() -> list:
        prior = caches.shared_get(_prior_cache_key(job.pk))
        if prior is None:
            prior = (
                AggregationRun.objects.filter(job=job)
                .order_by("-id")
                .values_list("class_prior", flat=True)
                .first()
            ) or []
            caches.shared_set(_prior_cache_key(job.pk), prior, timeout=60)
        return prior

    prior = CLASS_PRIORS.get(job.pk, load)
    if len(prior) == k:
        return np.asarray(prior, dtype=np.float64)
    return np.full(k, 1.0 / k)


# --------------------------------------------------------------------------- per-label decision


def _routing_on(job: Job) -> dict[str, Any] | None:
    """The job's routing config when it routes by model (apps.routing), else None.

    The assignment engine loads jobs without their routing column: then only that column
    is read (one small query), never the rest of the job.
    """
    from apps.routing.selectors import routing_config

    if "routing" not in job.__dict__:  # deferred (get_deferred_fields walks every field)
        routing = Job.objects.filter(pk=job.pk).values_list("routing", flat=True).first()
    else:
        routing = job.routing
    config = routing_config(routing=routing)
    return config if config.get("mode") == "model" else None


def item_posterior_from_labels(
    *,
    job: Job,
    answers: list[tuple[int, str, str]],
    statuses: dict[int, str] | None = None,
    item_id: int | None = None,
    stored: dict[int, list] | None = None,
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Posterior of one item from its (worker_id, value, tier) answers and stored matrices.

    Labels of suspended or banned workers count with the policy's suspended_label_weight
    (0 by default: dropped). Returns the posterior and the contributing workers with their
    weights (the log-odds a label of theirs moves toward the class they chose).

    With model routing on and an `item_id` the routing model scored, the model is a voter:
    its calibrated probabilities take the class prior's place (they already contain it).
    """
    classes = job.classes
    index = {name: i for i, name in enumerate(classes)}
    policy = quality_policy(job)
    statuses = statuses or {}
    tiers = {w: t for w, _, t in answers}
    matrices = worker_confusions(job=job, worker_ids=list(tiers), tiers=tiers, stored=stored)
    prior = job_class_prior(job=job)
    if item_id is not None and _routing_on(job) is not None:
        from apps.routing.selectors import item_model_vote

        vote = item_model_vote(item_id=item_id, n_classes=len(classes))
        prior = prior if vote is None else vote
    # Plain floats: a handful of answers over a few classes, where numpy's per-call
    # overhead would cost more than the arithmetic (this runs on every submit).
    k = len(classes)
    log_post = [math.log(max(float(p), 1e-12)) for p in prior]
    contributors = []
    for worker_id, value, _tier in answers:
        if value not in index:
            continue
        weight = 1.0
        if statuses.get(worker_id) in INACTIVE:
            weight = float(policy["suspended_label_weight"])
        rows = matrices[worker_id].tolist()
        j = index[value]
        if weight:
            for c in range(k):
                log_post[c] += weight * math.log(max(rows[c][j], 1e-12))
        accuracy = min(max(sum(rows[c][c] for c in range(k)) / k, 1e-6), 1 - 1e-6)
        contributors.append(
            {
                "worker": worker_id,
                "label": value,
                "weight": round(weight * math.log(accuracy / (1 - accuracy)) if weight else 0.0, 4),
            }
        )
    top = max(log_post)
    exps = [math.exp(x - top) for x in log_post]
    total = sum(exps)
    return np.array([e / total for e in exps]), contributors


def item_decide(
    *,
    job: Job,
    answers: list[tuple[int, str, str]],
    labels_needed: int,
    statuses: dict[int, str] | None = None,
    item_id: int | None = None,
    stored: dict[int, list] | None = None,
) -> ItemDecision:
    """Dynamic redundancy for one open item after a label: settle, ask for more, or escalate.

    The item settles once it has its minimum labels and the top posterior reaches the job's
    target confidence; while below, it asks for one more label up to max_labels; at
    max_labels still unsure it goes to review (reason: the crowd disagreed, or it agreed but
    the posterior stayed low). With model routing on, the model votes (given `item_id`) and
    the cost-aware rule decides instead (_item_decide_routed).
    """
    policy = quality_policy(job)
    classes = job.classes
    n_labels = len(answers)
    min_labels = int(policy["min_labels"])
    max_labels = max(int(policy["max_labels"]), min_labels)
    posterior, contributors = item_posterior_from_labels(
        job=job, answers=answers, statuses=statuses, item_id=item_id, stored=stored
    )
    top = int(np.argmax(posterior))
    confidence = float(posterior[top])
    counted = [c for c in contributors if c["weight"] != 0.0] or contributors
    votes = [c["label"] for c in counted]
    agreement = (max(votes.count(v) for v in set(votes)) / len(votes)) if votes else None
    meta = {
        "method": "posterior",
        "version": algorithms.VERSION,
        "workers": contributors,
    }
    common = {
        "posterior": [round(float(p), 6) for p in posterior],
        "agreement": agreement,
        "extra": meta,
    }
    if n_labels < labels_needed:
        return ItemDecision(state=Item.State.OPEN, labels_needed=labels_needed, **common)
    routing = _routing_on(job)
    if routing is not None:
        return _item_decide_routed(
            job=job,
            policy=policy,
            routing=routing,
            posterior=posterior,
            answers=answers,
            max_labels=max_labels,
            agreement=agreement,
            labels_needed=labels_needed,
            common=common,
        )
    if n_labels < min_labels:
        return ItemDecision(state=Item.State.OPEN, labels_needed=min_labels, **common)
    if confidence >= float(policy["target_confidence"]):
        return ItemDecision(
            state=Item.State.SETTLED,
            labels_needed=labels_needed,
            label=classes[top],
            confidence=confidence,
            source=Item.Source.CROWD,
            **common,
        )
    if n_labels < max_labels:
        return ItemDecision(state=Item.State.OPEN, labels_needed=n_labels + 1, **common)
    reason = "disagreement" if agreement is not None and agreement < 1.0 else "low_posterior"
    return ItemDecision(
        state=Item.State.REVIEW,
        labels_needed=labels_needed,
        label=classes[top],
        confidence=confidence,
        review_reason=reason,
        **common,
    )


def _item_decide_routed(
    *,
    job: Job,
    policy: dict[str, Any],
    routing: dict[str, Any],
    posterior: np.ndarray,
    answers: list[tuple[int, str, str]],
    max_labels: int,
    agreement: float | None,
    labels_needed: int,
    common: dict[str, Any],
) -> ItemDecision:
    """Cost-aware stopping (model routing on): another crowd label only while the expected
    error it removes, times the value of a correct label, beats its price.

    The model already voted in `posterior`, so an item the model and one worker agree on
    can stop at routing's min_labels (default 1). Per-class targets come from
    routing["class_targets"] (else the policy's target_confidence). An item the rule would
    send to an expert, or still unsure at max_labels, goes to review, and the escalation
    policy (apps.reviews) picks an expert or QC.
    """
    from apps.routing.algorithms import CROWD, EXPERT, STOP, cost_aware_decision

    classes = job.classes
    k = len(classes)
    n_labels = len(answers)
    min_labels = int(routing["min_labels"])
    if n_labels < min_labels:
        return ItemDecision(state=Item.State.OPEN, labels_needed=min_labels, **common)
    pricing = job.effective_pricing
    price = float(pricing["crowd_label"])
    value = routing.get("value_per_correct") or 25.0 * max(price, 1e-6)
    default_target = float(policy["target_confidence"])
    targets = routing.get("class_targets") or {}
    target = np.array([float(targets.get(c, default_target)) for c in classes])
    # The next worker is expected to be like this item's crowd workers so far.
    crowd = [w for w, _, tier in answers if tier != Worker.Tier.EXPERT]
    matrices = worker_confusions(job=job, worker_ids=crowd) if crowd else {}
    typical = (
        np.mean(list(matrices.values()), axis=0)
        if matrices
        else one_coin_confusion(float(policy["new_worker_accuracy"]), k)
    )
    decision = cost_aware_decision(
        posterior[None, :],
        np.array([n_labels]),
        crowd_confusion=typical,
        label_price=price,
        value_per_correct=float(value),
        max_labels=max_labels,
        target_confidence=target,
        expert_confusion=one_coin_confusion(float(policy["new_expert_accuracy"]), k),
        expert_price=float(pricing["expert_label"]),
    )
    action = int(decision.action[0])
    top = int(np.argmax(posterior))
    confidence = float(posterior[top])
    extra = {
        **common["extra"],
        "method": "posterior+model",
        "stopping": "cost_aware",
        "crowd_value": round(float(decision.crowd_value[0]), 6),
    }
    common = {**common, "extra": extra}
    # A class the client set a target for is a requirement, not a trade-off: below it, ask
    # again rather than stop because a label is not worth its price.
    explicit = classes[top] in targets
    confident = bool(decision.confident[0])
    if action == STOP and explicit and not confident and n_labels < max_labels:
        action = CROWD
    unsure_at_cap = n_labels >= max_labels and not confident
    if action == EXPERT or (unsure_at_cap and (explicit or float(decision.error_now[0]) > 0.05)):
        reason = "disagreement" if agreement is not None and agreement < 1.0 else "low_posterior"
        return ItemDecision(
            state=Item.State.REVIEW,
            labels_needed=labels_needed,
            label=classes[top],
            confidence=confidence,
            review_reason=reason,
            **common,
        )
    if action == STOP:
        extra["stopped"] = "confident" if confident else "not_worth_a_label"
        return ItemDecision(
            state=Item.State.SETTLED,
            labels_needed=labels_needed,
            label=classes[top],
            confidence=confidence,
            source=Item.Source.CROWD,
            **common,
        )
    return ItemDecision(state=Item.State.OPEN, labels_needed=n_labels + 1, **common)


def item_answers(*, item_id: int) -> tuple[list[tuple[int, str, str]], dict[int, str]]:
    """The item's (worker, value, tier) answers and the current status of those workers."""
    rows = list(
        Label.objects.filter(item_id=item_id)
        .order_by("id")
        .values_list("worker_id", "value", "tier", "worker__status")
    )
    return [(w, v, t) for w, v, t, _ in rows], {w: s for w, _, _, s in rows}


# Labels are counted per process and taken off the job's shared countdown in batches: one
# cache round trip per batch instead of per label. A batch is at most 1/20 of the interval
# (so a trigger fires at most 5% late, never early) and exact for small intervals.
_PENDING_LABELS: dict[int, int] = {}
_PENDING_LOCK = threading.Lock()
LABEL_COUNT_BATCH_MAX = 10


def label_count_batch(every: int) -> int:
    """How many labels a process counts locally before adding them to the shared counter."""
    return max(1, min(LABEL_COUNT_BATCH_MAX, every // 20))


def _countdown_key(job_id: int) -> str:
    return f"concord:quality:labels-until-aggregate:{job_id}"


def labels_since_count(*, job_id: int, every: int) -> bool:
    """Count one new label of the job; True when the job's countdown to its next
    re-aggregation is at or below zero: when it reaches zero, and again for later labels
    while no run has set the next countdown (a run that was lost must not silence the job;
    maybe_schedule_aggregation keeps this to one queued run at a time)."""
    batch = label_count_batch(every)
    with _PENDING_LOCK:
        pending = _PENDING_LABELS.get(job_id, 0) + 1
        _PENDING_LABELS[job_id] = 0 if pending >= batch else pending
    if pending < batch:
        return False
    key = _countdown_key(job_id)
    try:
        try:
            left = cache.decr(key, pending)
        except ValueError:  # no run yet: the first interval is `every` labels
            if cache.add(key, every - pending, timeout=None):
                left = every - pending
            else:  # another process started the countdown in between
                left = cache.decr(key, pending)
    except Exception:  # noqa: BLE001 - shared cache down: the beat's runs cover the job
        logger.warning("shared cache unreachable; job %s labels not counted", job_id)
        return False
    return left <= 0


def aggregation_countdown_reset(*, job: Job, n_labels: int) -> int:
    """After a re-aggregation that read `n_labels` labels: the next one is due after
    max(reaggregate_every, reaggregate_growth x n_labels) new labels. Returns that interval."""
    policy = quality_policy(job)
    interval = max(
        int(policy["reaggregate_every"]), math.ceil(float(policy["reaggregate_growth"]) * n_labels)
    )
    cache.set(_countdown_key(job.pk), interval, timeout=None)
    return interval


def maybe_schedule_aggregation(*, job: Job) -> bool:
    """Enqueue a job re-aggregation when its countdown of new labels runs out."""
    every = int(quality_policy(job)["reaggregate_every"])
    if every <= 0 or not labels_since_count(job_id=job.pk, every=every):
        return False
    # At most one queued re-aggregation per job (the beat and the API queue runs too): a
    # queued run reads every label there is when it starts. The mark lasts until the run has
    # read its labels and set the next countdown, or AGGREGATION_QUEUED_TTL_S if the run is
    # lost (a killed worker): the next label then queues another.
    try:
        if not cache.add(_aggregation_queued_key(job.pk), 1, timeout=AGGREGATION_QUEUED_TTL_S):
            return False
    except Exception:  # noqa: BLE001 - shared cache (and broker) down: left to the beat
        return False
    from workers.tasks_quality import aggregate_job

    transaction.on_commit(lambda: aggregate_job.delay(job.pk))
    return True


AGGREGATION_QUEUED_TTL_S = 120


def _aggregation_queued_key(job_id: int) -> str:
    return f"concord:quality:aggregate-queued:{job_id}"


def aggregation_dequeued(*, job_id: int) -> None:
    """Called once a re-aggregation has read its labels and set the next countdown: labels
    from now on may queue another."""
    cache.delete(_aggregation_queued_key(job_id))


# --------------------------------------------------------------------------- job aggregation


@dataclass(frozen=True)
class LabelArrays:
    """A job's labels as arrays, with the maps back to database ids."""

    tasks: np.ndarray
    workers: np.ndarray
    labels: np.ndarray
    item_ids: np.ndarray
    worker_ids: np.ndarray
    max_label_id: int
    excluded_workers: list[int]
    # Per item of item_ids: every label row read (those of inactive workers included), to
    # compare with the item's n_labels when its result is written back.
    read_counts: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


def job_label_arrays(
    *, job: Job, max_label_id: int | None = None, drop_inactive: bool = True
) -> LabelArrays:
    """Every label of the job as (task, worker, class) integer arrays (one query)."""
    index = {name: i for i, name in enumerate(job.classes)}
    qs = Label.objects.filter(job=job)
    if max_label_id is not None:
        qs = qs.filter(id__lte=max_label_id)
    rows = list(
        qs.order_by("id").values_list("id", "item_id", "worker_id", "value", "worker__status")
    )
    excluded = sorted({w for _, _, w, _, s in rows if s in INACTIVE}) if drop_inactive else []
    kept = [r for r in rows if not (drop_inactive and r[4] in INACTIVE) and r[3] in index]
    if not kept:
        empty = np.zeros(0, dtype=np.int64)
        return LabelArrays(
            empty, empty, empty, empty, empty, max((r[0] for r in rows), default=0), excluded
        )
    ids = np.fromiter((r[0] for r in kept), dtype=np.int64, count=len(kept))
    items = np.fromiter((r[1] for r in kept), dtype=np.int64, count=len(kept))
    workers = np.fromiter((r[2] for r in kept), dtype=np.int64, count=len(kept))
    values = np.fromiter((index[r[3]] for r in kept), dtype=np.int64, count=len(kept))
    item_ids, tasks = np.unique(items, return_inverse=True)
    worker_ids, worker_idx = np.unique(workers, return_inverse=True)
    every = np.fromiter((r[1] for r in rows), dtype=np.int64, count=len(rows))
    read_counts = np.bincount(
        np.searchsorted(item_ids, every)[np.isin(every, item_ids)], minlength=len(item_ids)
    )
    return LabelArrays(
        tasks,
        worker_idx,
        values,
        item_ids,
        worker_ids,
        int(max(ids.max(), max((r[0] for r in rows), default=0))),
        excluded,
        read_counts,
    )


@retry_on_deadlock
def job_aggregate(
    *, job_id: int, method: str | None = None, max_label_id: int | None = None
) -> AggregationRun | None:
    """Re-aggregate a job: warm-started from stored matrices (with history as a prior), write
    the posterior, label, confidence, agreement and provenance of every crowd item whose
    result moved (RESULT_REWRITE_TOLERANCE) in bulk, store each worker's confusion matrix and
    set the countdown to the next run. Safe to run twice; None when there are no labels.

    Items settled by QC, experts or the model keep their label: only the posterior evidence
    of crowd items is rewritten.
    """
    started = time.perf_counter()
    job = Job.objects.get(pk=job_id)
    policy = quality_policy(job)
    method = method or policy.get("aggregation") or "default"
    arrays = job_label_arrays(job=job, max_label_id=max_label_id)
    # The next run is due after the labels that come from now on (this run reads none of
    # them); set before the work, so a run killed from here on leaves a countdown that runs.
    aggregation_countdown_reset(job=job, n_labels=int(arrays.tasks.size))
    aggregation_dequeued(job_id=job.pk)
    if arrays.tasks.size == 0:
        return None
    k = len(job.classes)
    result = _aggregate_arrays(job=job, arrays=arrays, method=method, policy=policy)
    counts = algorithms.count_matrix(arrays.tasks, arrays.labels, k, n_tasks=len(arrays.item_ids))
    agreement = algorithms.item_agreement(counts)
    with transaction.atomic():
        run = AggregationRun.objects.create(
            job=job,
            method=result.method,
            version=result.version,
            max_label_id=arrays.max_label_id,
            excluded_workers=arrays.excluded_workers,
            n_labels=int(arrays.tasks.size),
            n_items=len(arrays.item_ids),
            n_workers=len(arrays.worker_ids),
            n_iter=int(result.n_iter),
            converged=bool(result.converged),
            log_likelihood=float(result.log_likelihood)
            if np.isfinite(result.log_likelihood)
            else None,
            class_prior=[float(p) for p in result.class_prior],
            detail=result.detail[:200],
            seconds=0.0,
        )
        _write_worker_qualities(job=job, arrays=arrays, result=result)
    # Item results outside that transaction, in batches that commit one by one: an UPDATE
    # holds its rows' locks until commit, and annotators submitting labels on those items
    # would otherwise wait for the whole write. A run cut short is rewritten by the next.
    results = _write_item_results(
        job=job, arrays=arrays, result=result, agreement=agreement, run=run
    )
    logger.info(
        "aggregation run %s of job %s: %s results written, %s newer, %s locked",
        run.pk,
        job.pk,
        results.written,
        results.moved,
        results.skipped,
    )
    cache.set(_prior_cache_key(job.pk), run.class_prior, timeout=60)
    CLASS_PRIORS.invalidate()
    run.seconds = time.perf_counter() - started
    run.save(update_fields=["seconds"])
    return run


def _aggregate_arrays(
    *, job: Job, arrays: LabelArrays, method: str, policy: dict
) -> algorithms.Aggregation:
    """Run the aggregation kernel on the job's label arrays, warm-started as job runs are."""
    k = len(job.classes)
    options: dict[str, Any] = {}
    if method in ("ds", "default"):
        init, prior = _warm_start(job=job, worker_ids=arrays.worker_ids, k=k, policy=policy)
        if init is not None:
            options["init_confusions"] = init
        if prior is not None:
            options["prior"] = prior
    if method == "default":
        # The job's gold teaches the worker matrices and calibrates the confidence.
        options["gold"] = _gold_codes(job=job, item_ids=arrays.item_ids)
    return algorithms.aggregate(
        arrays.tasks,
        arrays.workers,
        arrays.labels,
        k,
        method=method,
        n_tasks=len(arrays.item_ids),
        n_workers=len(arrays.worker_ids),
        **options,
    )


# A stored result is called wrong only where a fresh aggregation contradicts it with the
# confidence the job settles at (its target_confidence): EM is not started from the
# matrices the stored run started from (later runs move them), and on a small or noisy job
# Dawid-Skene can settle on another fixed point for items near a tie (seen in tests with
# random answers: 0.58 and 0.75 against the stored label); a wrong delivery (another
# item's label, a label its answers do not support) is contradicted with confidence.


def result_violations(*, job_id: int | None = None) -> list[str]:
    """Every delivered result that is wrong, as one line each ([] when all hold): a settled
    item without a label (or with one outside the job's classes), and a result written by
    the job's latest aggregation run that a fresh aggregation of the labels it read
    contradicts.

    Reads only (the fresh aggregation is computed, not stored). Items whose answers changed
    since their result was written are not compared: their next run rewrites them.
    """
    jobs = Job.objects.order_by("id")
    if job_id is not None:
        jobs = jobs.filter(pk=job_id)
    problems: list[str] = []
    for job in jobs:
        classes = job.classes
        empty = (
            Item.objects.filter(job=job, state=Item.State.SETTLED, gold_label__isnull=True)
            .exclude(label__in=classes)
            .values_list("id", "label")
        )
        for item_id, label in empty:
            problems.append(f"item {item_id}: settled with label {label!r} (job {job.pk})")
        problems.extend(_results_against_fresh(job=job))
    return problems


def _results_against_fresh(*, job: Job) -> list[str]:
    run = AggregationRun.objects.filter(job=job).order_by("-id").first()
    if run is None:
        return []
    policy = quality_policy(job)
    # The labels the job's latest run read: labels since then change the workers' matrices,
    # and with them results the next run will rewrite; those are not wrong yet.
    arrays = job_label_arrays(job=job, max_label_id=run.max_label_id)
    if arrays.tasks.size == 0:
        return []
    result = _aggregate_arrays(job=job, arrays=arrays, method=run.method, policy=policy)
    confident_at = float(policy["target_confidence"])
    classes = job.classes
    position = {item_id: t for t, item_id in enumerate(arrays.item_ids.tolist())}
    order = np.argsort(arrays.tasks, kind="stable")
    bounds = np.searchsorted(arrays.tasks[order], np.arange(len(arrays.item_ids) + 1))
    problems = []
    rows = (
        Item.objects.filter(job=job, state=Item.State.SETTLED, source=Item.Source.CROWD)
        .filter(result_meta__run=run.pk)
        .values_list("id", "label", "result_meta")
        .iterator(chunk_size=5000)
    )
    for item_id, label, meta in rows:
        t = position.get(item_id)
        if t is None or label not in classes:
            continue
        span = order[bounds[t] : bounds[t + 1]]
        answers = [
            (int(arrays.worker_ids[arrays.workers[j]]), classes[int(arrays.labels[j])])
            for j in span
        ]
        if answers != [(w.get("worker"), w.get("label")) for w in meta.get("workers", ())]:
            continue
        posterior = result.posteriors[t]
        top = int(np.argmax(posterior))
        if classes[top] != label and posterior[top] >= confident_at:
            problems.append(
                f"item {item_id}: result {label!r} but a fresh {run.method} aggregation of "
                f"the same answers gives {classes[top]!r} ({posterior[top]:.3f})"
            )
    return problems


def _gold_codes(*, job: Job, item_ids: np.ndarray) -> np.ndarray:
    """Per task (item_ids order), the class index of the item's gold label, -1 without."""
    index = {name: i for i, name in enumerate(job.classes)}
    gold = np.full(item_ids.size, -1, dtype=np.int64)
    rows = Item.objects.filter(job=job, gold_label__isnull=False).values_list("id", "gold_label")
    for item_id, value in rows:
        pos = int(np.searchsorted(item_ids, item_id))
        if pos < item_ids.size and item_ids[pos] == item_id and value in index:
            gold[pos] = index[value]
    return gold


def _warm_start(
    *, job: Job, worker_ids: np.ndarray, k: int, policy: dict
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Initial matrices from this job's last run, and Dirichlet priors from history."""
    ids = [int(w) for w in worker_ids]
    own = dict(
        WorkerJobQuality.objects.filter(
            job=job, worker_id__in=ids, source="aggregation"
        ).values_list("worker_id", "confusion")
    )
    history = _history_confusions(job=job, worker_ids=[w for w in ids if w not in own])
    if not own and not history:
        return None, None
    init = np.empty((len(ids), k, k))
    prior = np.full((len(ids), k, k), 0.01)
    default = one_coin_confusion(float(policy["new_worker_accuracy"]), k)
    strength = float(policy["history_strength"])
    for i, worker_id in enumerate(ids):
        matrix = own.get(worker_id) or history.get(worker_id)
        init[i] = np.asarray(matrix, dtype=np.float64) if matrix is not None else default
        if worker_id in history:
            prior[i] += strength * np.asarray(history[worker_id], dtype=np.float64)
    return init, prior


def _write_worker_qualities(
    *, job: Job, arrays: LabelArrays, result: algorithms.Aggregation
) -> None:
    """Upsert each worker's matrix for the job: two aggregations of the same job racing
    (a scheduled one and a label-triggered one) both write, neither fails; the later wins."""
    key = classes_key(job.classes)
    n_per_worker = np.bincount(arrays.workers, minlength=len(arrays.worker_ids))
    now = timezone.now()
    rows = [
        WorkerJobQuality(
            worker_id=worker_id,
            job=job,
            classes_key=key,
            confusion=np.round(result.confusions[i], 6).tolist(),
            skill=float(np.clip(result.skills[i], 0.0, 1.0)),
            n_labels=int(n_per_worker[i]),
            source="aggregation",
            updated_at=now,
        )
        for i, worker_id in enumerate(arrays.worker_ids.tolist())
    ]
    WorkerJobQuality.objects.bulk_create(
        rows,
        batch_size=1000,
        update_conflicts=True,
        unique_fields=["worker", "job"],
        update_fields=["classes_key", "confusion", "skill", "n_labels", "source", "updated_at"],
    )


ITEM_RESULTS_BATCH = 1000  # rows per UPDATE (and per commit, outside a transaction)
# A run leaves an item's stored result alone when it would change no label, no answer list
# and no class probability by more than this: a re-aggregation moves every posterior a
# little, and rewriting every labeled item each time was most of a busy job's write load.
RESULT_REWRITE_TOLERANCE = 1e-3


def _result_unchanged(
    *,
    old_meta: dict,
    old_posterior: list,
    settled_label: str | None,
    method: str,
    version: str,
    answers: list[tuple[int, str]],
    posterior: list[float],
    label: str,
) -> bool:
    """Whether an item already holds this run's result up to RESULT_REWRITE_TOLERANCE: same
    method and version, the same answers, the same label (if settled), every probability
    within it."""
    if (old_meta.get("method"), old_meta.get("version")) != (method, version):
        return False
    if [(w.get("worker"), w.get("label")) for w in old_meta.get("workers", ())] != answers:
        return False
    if settled_label is not None and settled_label != label:
        return False
    return len(old_posterior) == len(posterior) and all(
        abs(a - b) <= RESULT_REWRITE_TOLERANCE
        for a, b in zip(old_posterior, posterior, strict=True)
    )


@dataclass
class _ResultRow:
    """An item's result columns as the write-back compares and writes them (the attributes
    bulk_compare_and_set reads)."""

    pk: int
    state: str
    source: str | None
    n_labels: int
    posterior: list[float]
    agreement: float | None
    result_meta: dict
    label: str | None
    confidence: float | None
    updated_at: Any


def _write_item_results(
    *,
    job: Job,
    arrays: LabelArrays,
    result: algorithms.Aggregation,
    agreement: np.ndarray,
    run: AggregationRun,
) -> ResultsWritten:
    """Write the run's result of every crowd item whose result moved, never over a newer one.

    Compare-and-set: an item is written only if it still has the labels this run read (its
    n_labels equals the label rows read for it) and the state and source it had when read
    here; a label, a review or an expert that came in since holds the newer result, and the
    next run includes it. Rows another transaction holds are skipped, not waited for (no
    deadlock with submits and leases), and tried once more at the end.
    """
    classes = job.classes
    # Contributing workers per task, with their weight (log-odds of their skill).
    skills = np.clip(result.skills, 1e-6, 1 - 1e-6)
    weights = np.log(skills / (1 - skills))
    order = np.argsort(arrays.tasks, kind="stable")
    bounds = np.searchsorted(arrays.tasks[order], np.arange(len(arrays.item_ids) + 1))
    position = {item_id: t for t, item_id in enumerate(arrays.item_ids.tolist())}

    # Per answer (in task order): the worker's id, the label's name, the worker's weight.
    answer_workers = arrays.worker_ids[arrays.workers[order]].tolist()
    answer_labels = [classes[c] for c in arrays.labels[order].tolist()]
    answer_weights = np.round(weights[arrays.workers[order]], 4).tolist()
    bounds_list = bounds.tolist()
    tops = np.argmax(result.posteriors, axis=1).tolist()
    rounded = np.round(result.posteriors, 6).tolist()

    def changed_items(item_ids: list[int]) -> tuple[list[_ResultRow], int]:
        """The items whose stored result differs from the run's, and how many moved on.

        Plain rows (values, JSON decoded with orjson), not model instances: a big job has a
        few hundred thousand of them."""
        rows = (
            Item.objects.filter(pk__in=item_ids)
            .filter(Q(source__isnull=True) | Q(source=Item.Source.CROWD))
            .exclude(state=Item.State.REVIEW)
            .order_by("id")
            .values_list(
                "id",
                "state",
                "source",
                "n_labels",
                "label",
                Cast("posterior", output_field=TextField()),
                Cast("result_meta", output_field=TextField()),
            )
        )
        now = timezone.now()
        changed, moved = [], 0
        for pk, state, source, n_labels, label, posterior_text, meta_text in rows.iterator(
            chunk_size=10_000
        ):
            t = position[pk]
            if n_labels != int(arrays.read_counts[t]):
                moved += 1  # labeled since the run read its labels: its own result is newer
                continue
            lo, hi = bounds_list[t], bounds_list[t + 1]
            posterior = rounded[t]
            top = tops[t]
            old_meta = (orjson.loads(meta_text) if meta_text else None) or {}
            old_posterior = (orjson.loads(posterior_text) if posterior_text else None) or []
            settled = state == Item.State.SETTLED
            if _result_unchanged(
                old_meta=old_meta,
                old_posterior=old_posterior,
                settled_label=label if settled else None,
                method=result.method,
                version=result.version,
                answers=list(zip(answer_workers[lo:hi], answer_labels[lo:hi], strict=True)),
                posterior=posterior,
                label=classes[top],
            ):
                continue
            meta = {
                "method": result.method,
                "version": result.version,
                "run": run.pk,
                "workers": [
                    {"worker": w, "label": v, "weight": x}
                    for w, v, x in zip(
                        answer_workers[lo:hi],
                        answer_labels[lo:hi],
                        answer_weights[lo:hi],
                        strict=True,
                    )
                ],
            }
            changed.append(
                _ResultRow(
                    pk=pk,
                    state=state,
                    source=source,
                    n_labels=n_labels,
                    posterior=posterior,
                    agreement=None if np.isnan(agreement[t]) else float(agreement[t]),
                    result_meta=meta,
                    label=classes[top] if settled else label,
                    confidence=float(result.posteriors[t][top]) if settled else None,
                    updated_at=now,
                )
            )
        return changed, moved

    def write(items: list[_ResultRow]) -> set[int]:
        written: set[int] = set()
        evidence = ["posterior", "agreement", "result_meta", "updated_at"]
        expect = ["n_labels", "state", "source"]
        settled = [item for item in items if item.state == Item.State.SETTLED]
        others = [item for item in items if item.state != Item.State.SETTLED]
        for group, fields in ((settled, [*evidence, "label", "confidence"]), (others, evidence)):
            written.update(
                bulk_compare_and_set(
                    Item, group, fields, expect=expect, batch_size=ITEM_RESULTS_BATCH
                )
            )
        return written

    changed, moved = changed_items(arrays.item_ids.tolist())
    written = write(changed)
    skipped = [item.pk for item in changed if item.pk not in written]
    retried = moved_again = 0
    if skipped:
        # Skipped rows were locked by a submit or had moved: read them again and write what
        # still has the labels this run read.
        again, moved_again = changed_items(skipped)
        moved += moved_again
        retried = len(write(again))
    return ResultsWritten(
        written=len(written) + retried,
        moved=moved,
        skipped=len(skipped) - retried - moved_again if skipped else 0,
    )


@dataclass(frozen=True)
class ResultsWritten:
    """What a run's write-back did: results written, items skipped because a newer label
    came in since the run read (`moved`), and rows still locked after a second try."""

    written: int
    moved: int
    skipped: int


# --------------------------------------------------------------------------- gold and rules


def gold_pick(*, job: Job, worker: Worker, rng: random.Random) -> Item | None:
    """A gold item of the job for this worker, or None: not retired, never assigned to them.

    Class-balanced: among the gold classes the worker can still get, the class they have
    answered least often as gold in this job (ties broken by `rng`), then a uniformly random
    candidate of that class, so that workers do not all meet gold in one order. At most
    three queries; the item carries only id, external_id, payload, prediction, gold_label.
    """
    # NOT EXISTS in WHERE (not inside an aggregate) lets PostgreSQL plan an anti-join
    # against the worker's assignments instead of probing once per gold item. A missing
    # exposure row (LEFT JOIN) counts as not retired.
    candidates = Item.objects.filter(
        job_id=job.pk, gold_label__isnull=False, gold_exposure__retired_at__isnull=True
    ).filter(~Exists(Assignment.objects.filter(item_id=OuterRef("pk"), worker_id=worker.pk)))
    available = dict(candidates.values_list("gold_label").annotate(n=Count("id")).order_by())
    if not available:
        return None
    chosen = next(iter(available))
    if len(available) > 1:
        answered = dict(
            Label.objects.filter(job_id=job.pk, worker_id=worker.pk, is_gold=True)
            .values_list("item__gold_label")
            .annotate(n=Count("id"))
            .order_by()
        )
        fewest = min(answered.get(name, 0) for name in available)
        chosen = rng.choice(sorted(n for n in available if answered.get(n, 0) == fewest))
    offset = rng.randrange(available[chosen])
    # Empty only if candidates were retired or taken since the count: no gold this time.
    found = list(
        candidates.filter(gold_label=chosen)
        .order_by("id")
        .only("id", "external_id", "payload", "prediction", "gold_label")[offset : offset + 1]
    )
    return found[0] if found else None


def gold_rate_for(*, job: Job, worker_id: int, base_rate: float) -> float:
    """The worker's gold rate in this job (adaptive): more gold while they are new, less once
    their gold accuracy is proven, the job's base rate otherwise. At most one query."""
    if base_rate <= 0:
        return 0.0
    policy = quality_policy(job)
    stats = Label.objects.filter(job_id=job.pk, worker_id=worker_id, is_gold=True).aggregate(
        n=Count("id"), correct=Count("id", filter=Q(is_correct=True))
    )
    n = int(stats["n"])
    if n < int(policy["gold_min_answers"]):
        return min(1.0, base_rate * float(policy["gold_new_factor"]))
    if n >= int(policy["gold_proven_answers"]):
        low, _ = algorithms.wilson_interval(np.array([stats["correct"]]), np.array([n]))
        if float(low[0]) >= float(policy["gold_proven_accuracy"]):
            return min(1.0, base_rate * float(policy["gold_proven_factor"]))
    return min(1.0, base_rate)


def gold_rate_ceiling(*, job: Job, base_rate: float) -> float:
    """The highest rate gold_rate_for can return for this job, without a query: a random
    draw at or above it means no gold whoever the worker is."""
    if base_rate <= 0:
        return 0.0
    policy = quality_policy(job)
    factor = max(1.0, float(policy["gold_new_factor"]), float(policy["gold_proven_factor"]))
    return min(1.0, base_rate * factor)


def _gold_exposure_update(*, item_id: int, job_id: int, **changes: Any) -> None:
    """Apply the changes to the item's exposure row, creating the row first if needed.

    Safe under concurrency without a savepoint: the insert ignores a conflict on the
    one-to-one (a concurrent first exposure won), and the update is a single atomic statement.
    """
    if GoldExposure.objects.filter(item_id=item_id).update(**changes):
        return
    GoldExposure.objects.bulk_create(
        [GoldExposure(item_id=item_id, job_id=job_id)], ignore_conflicts=True
    )
    GoldExposure.objects.filter(item_id=item_id).update(**changes)


def gold_record_shown(*, item_id: int, job_id: int, max_exposures: int) -> None:
    """Count one showing of a gold item (a lease); retire it at `max_exposures` showings,
    since a gold item seen too often leaks. One query once the item was shown before."""
    # Both expressions read the row's old values, so `shown + 1 >= max` is `shown >= max - 1`.
    _gold_exposure_update(
        item_id=item_id,
        job_id=job_id,
        shown=F("shown") + 1,
        retired_at=Case(
            When(
                retired_at__isnull=True,
                shown__gte=max(int(max_exposures), 1) - 1,
                then=Value(timezone.now()),
            ),
            default=F("retired_at"),
        ),
    )


def gold_record_answer(*, item_id: int, job_id: int, correct: bool) -> None:
    """Count one answer to a gold item and whether it was correct."""
    _gold_exposure_update(
        item_id=item_id,
        job_id=job_id,
        answered=F("answered") + 1,
        correct=F("correct") + (1 if correct else 0),
    )


def worker_rules_check(*, worker_id: int, job_id: int) -> QualityDecision | None:
    """Apply the job's rules to one worker: suspend on confidently poor gold accuracy or
    implausibly fast answers, record why, and reopen the items they touched."""
    job = Job.objects.get(pk=job_id)
    policy = quality_policy(job)
    worker = Worker.objects.get(pk=worker_id)
    if worker.status in INACTIVE:
        return None
    gold = Label.objects.filter(job=job, worker=worker, is_gold=True).aggregate(
        n=Count("id"), correct=Count("id", filter=Q(is_correct=True))
    )
    if gold["n"] >= int(policy["gold_min_answers"]):
        low, high = algorithms.wilson_interval(np.array([gold["correct"]]), np.array([gold["n"]]))
        if float(high[0]) < float(policy["gold_min_accuracy"]):
            return worker_quality_suspend(
                worker=worker,
                job=job,
                reason=QualityDecision.Reason.GOLD_ACCURACY,
                details={
                    "gold_answers": gold["n"],
                    "gold_correct": gold["correct"],
                    "wilson_high": round(float(high[0]), 4),
                    "threshold": policy["gold_min_accuracy"],
                },
            )
    floor = policy.get("min_median_duration_ms")
    if floor:
        window = int(policy["speed_window"])
        durations = list(
            Label.objects.filter(job=job, worker=worker, duration_ms__isnull=False)
            .order_by("-id")
            .values_list("duration_ms", flat=True)[:window]
        )
        if len(durations) >= window and float(np.median(durations)) < float(floor):
            return worker_quality_suspend(
                worker=worker,
                job=job,
                reason=QualityDecision.Reason.TOO_FAST,
                details={
                    "median_duration_ms": float(np.median(durations)),
                    "threshold_ms": floor,
                    "window": window,
                },
            )
    return None


def worker_quality_suspend(
    *, worker: Worker, job: Job, reason: str, details: dict
) -> QualityDecision:
    """Suspend a worker for a quality reason and reopen what their labels helped settle."""
    from apps.workforce.services import worker_suspend

    with transaction.atomic():
        worker_suspend(worker=worker, reason=f"quality: {reason}")
        decision = QualityDecision.objects.create(
            worker=worker,
            job=job,
            action=QualityDecision.Action.SUSPEND,
            reason=reason,
            details=details,
        )
        reopened = items_reconsider_without(worker_id=worker.pk, job=job)
        if reopened:
            QualityDecision.objects.create(
                worker=worker,
                job=job,
                action=QualityDecision.Action.REOPEN,
                reason=reason,
                details={"items": reopened[:500], "count": len(reopened)},
            )
    return decision


def items_reconsider_without(*, worker_id: int, job: Job) -> list[int]:
    """Recompute every crowd item the worker labeled with their labels dropped; items that
    are no longer confident go back to the queue for one more label. Returns reopened ids."""
    item_ids = list(
        Label.objects.filter(job=job, worker_id=worker_id, is_gold=False).values_list(
            "item_id", flat=True
        )
    )
    reopened = []
    target = float(quality_policy(job)["target_confidence"])
    for item in (
        Item.objects.select_for_update()
        .filter(pk__in=item_ids, state__in=[Item.State.OPEN, Item.State.SETTLED])
        .filter(Q(source__isnull=True) | Q(source=Item.Source.CROWD))
    ):
        answers, statuses = item_answers(item_id=item.pk)
        posterior, contributors = item_posterior_from_labels(
            job=job, answers=answers, statuses=statuses
        )
        top = int(np.argmax(posterior))
        fields: dict[str, Any] = {
            "posterior": [round(float(p), 6) for p in posterior],
            "result_meta": {**(item.result_meta or {}), "workers": contributors},
            "updated_at": timezone.now(),
        }
        if item.state == Item.State.SETTLED and float(posterior[top]) < target:
            fields.update(
                state=Item.State.OPEN,
                label=None,
                confidence=None,
                source=None,
                settled_at=None,
                labels_needed=item.n_labels + item.n_leases + 1,
            )
            reopened.append(item.pk)
        elif item.state == Item.State.OPEN and item.labels_needed <= item.n_labels + item.n_leases:
            fields["labels_needed"] = item.n_labels + item.n_leases + 1
            reopened.append(item.pk)
        elif item.state == Item.State.SETTLED:
            fields.update(label=job.classes[top], confidence=float(posterior[top]))
        Item.objects.filter(pk=item.pk).update(**fields)
    if reopened:
        Job.objects.filter(pk=job.pk, status=Job.Status.COMPLETED).update(
            status=Job.Status.RUNNING, completed_at=None
        )
    return reopened


# --------------------------------------------------------------------------- engine hooks


def item_decide_after_label(
    *, job: Job, item: Item, known: tuple[list, dict, dict] | None = None
) -> ItemDecision:
    """The decision for an open item whose newest label is already stored.

    `known`: the item's (answers, worker statuses, stored matrices) when the caller already
    read them with the label's write (the PostgreSQL hot path); otherwise read here.
    Precondition: the item's row is locked in the current transaction.
    """
    if known is not None:
        answers, statuses, stored = known
    else:
        answers, statuses = item_answers(item_id=item.pk)
        stored = None
    return item_decide(
        job=job,
        answers=answers,
        labels_needed=item.labels_needed,
        statuses=statuses,
        item_id=item.pk,
        stored=stored,
    )


def quality_after_label(*, job: Job, item: Item, worker_id: int, value: str) -> None:
    """Bookkeeping after any label: gold exposure and the worker's rule check for gold
    answers, and the job's re-aggregation trigger. Heavy work runs after commit."""
    if item.gold_label is not None:
        gold_record_answer(item_id=item.pk, job_id=job.pk, correct=value == item.gold_label)
        from workers.tasks_quality import worker_rules_check as rules_task

        transaction.on_commit(lambda: rules_task.delay(worker_id, job.pk))
    maybe_schedule_aggregation(job=job)
