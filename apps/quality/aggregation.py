"""Job aggregation: when a job is re-aggregated (the label countdown), the run itself
(label rows to arrays, the kernels in apps.quality.algorithms, worker matrices and item
results written back in bulk, never over a newer label), and the check of stored results
against a fresh run (result_violations)."""

from __future__ import annotations

import io
import logging
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import Q, TextField
from django.db.models.functions import Cast
from django.utils import timezone

from apps.assignments.models import Label
from apps.common.bulk import bulk_compare_and_set, copy_compare_and_set
from apps.common.retry import retry_on_deadlock
from apps.common.tasks import enqueue_on_commit
from apps.jobs.kinds import answer_value
from apps.jobs.models import Item, Job
from apps.jobs.policy import Policy
from apps.quality import algorithms
from apps.quality.kinds import JobKind, job_kind
from apps.quality.matrices import (
    CLASS_PRIORS,
    INACTIVE,
    classes_key,
    history_confusions,
    one_coin_confusion,
    prior_cache_key,
)
from apps.quality.models import AggregationRun, WorkerJobQuality

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- worker matrices


def local_caches_clear() -> None:
    """Forget this process's pending label counts (tests)."""
    with _PENDING_LOCK:
        _PENDING_LABELS.clear()


# --------------------------------------------------------------------------- per-label decision


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
    policy = job.spec.policy
    interval = max(policy.reaggregate_every, math.ceil(policy.reaggregate_growth * n_labels))
    cache.set(_countdown_key(job.pk), interval, timeout=None)
    return interval


def maybe_schedule_aggregation(*, job: Job) -> bool:
    """Enqueue a job re-aggregation when its countdown of new labels runs out."""
    every = job.spec.policy.reaggregate_every
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
    enqueue_on_commit("quality.aggregate_job", job.pk)
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
    """Every label of the job as (task, worker, class) integer arrays (one query).

    On PostgreSQL the rows come by a binary COPY (`_label_rows_copy`: fixed-width rows read
    with one `np.frombuffer`, 1M labels in a fraction of the ORM's time), elsewhere through
    the ORM (`_label_rows_orm`); both give the same columns and `_label_arrays` builds the
    result from them (tests/quality/test_aggregation.py compares the two)."""
    rows = (
        _label_rows_copy(job=job, max_label_id=max_label_id)
        if connection.vendor == "postgresql"
        else _label_rows_orm(job=job, max_label_id=max_label_id)
    )
    return _label_arrays(rows, drop_inactive=drop_inactive)


@dataclass(frozen=True)
class _LabelRows:
    """A job's label rows in id order: id, item id, worker id, class code (-1: a value that
    is not one of the job's classes) and whether the worker is inactive."""

    ids: np.ndarray
    items: np.ndarray
    workers: np.ndarray
    codes: np.ndarray
    inactive: np.ndarray


def _label_rows_orm(*, job: Job, max_label_id: int | None) -> _LabelRows:
    """The label rows through the ORM (`values_list`)."""
    index = {name: i for i, name in enumerate(job.classes)}
    qs = Label.objects.filter(job=job)
    if max_label_id is not None:
        qs = qs.filter(id__lte=max_label_id)
    rows = list(
        qs.order_by("id").values_list("id", "item_id", "worker_id", "value", "worker__status")
    )
    n = len(rows)
    return _LabelRows(
        ids=np.fromiter((r[0] for r in rows), dtype=np.int64, count=n),
        items=np.fromiter((r[1] for r in rows), dtype=np.int64, count=n),
        workers=np.fromiter((r[2] for r in rows), dtype=np.int64, count=n),
        codes=np.fromiter((index.get(r[3], -1) for r in rows), dtype=np.int64, count=n),
        inactive=np.fromiter((r[4] in INACTIVE for r in rows), dtype=bool, count=n),
    )


# One row of `_label_rows_copy`'s binary COPY: a field count, then (length, value) per field.
_LABEL_ROW = np.dtype(
    [
        ("fields", ">i2"),
        ("n0", ">i4"),
        ("id", ">i8"),
        ("n1", ">i4"),
        ("item", ">i8"),
        ("n2", ">i4"),
        ("worker", ">i8"),
        ("n3", ">i4"),
        ("code", ">i4"),
        ("n4", ">i4"),
        ("inactive", "u1"),
    ]
)
_LABEL_ROW_LENGTHS = {"fields": 5, "n0": 8, "n1": 8, "n2": 8, "n3": 4, "n4": 1}
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00"


def _label_rows_copy(*, job: Job, max_label_id: int | None) -> _LabelRows:
    """The label rows by `COPY ... TO STDOUT (FORMAT binary)` (PostgreSQL): every column is
    fixed-width and NOT NULL, so the rows are one structured array, sorted by id here."""
    label = Label._meta.db_table
    worker = Label._meta.get_field("worker").related_model._meta.db_table
    sql = (
        f"SELECT l.id::int8, l.item_id::int8, l.worker_id::int8, "
        f"(coalesce(array_position(%s::text[], l.value::text), 0) - 1)::int4, "
        f"coalesce(w.status = ANY(%s::text[]), false) "
        f'FROM "{label}" l JOIN "{worker}" w ON w.id = l.worker_id WHERE l.job_id = %s'
        + (" AND l.id <= %s" if max_label_id is not None else "")
    )  # unordered: sorting 1M rows by id here is a third of PostgreSQL's time, np.argsort less
    params: list[Any] = [list(job.classes), [str(s) for s in INACTIVE], job.pk]
    if max_label_id is not None:
        params.append(max_label_id)
    buf = io.BytesIO()
    with connection.cursor() as cursor:
        query = cursor.mogrify(sql, params).decode()
        cursor.copy_expert(f"COPY ({query}) TO STDOUT (FORMAT binary)", buf)
    data = buf.getbuffer()
    if bytes(data[: len(_COPY_HEADER)]) != _COPY_HEADER:
        raise RuntimeError("unexpected COPY header")
    start = len(_COPY_HEADER) + 4
    start += 4 + int.from_bytes(data[start : start + 4], "big")  # header extension
    body = len(data) - start - 2  # the trailer: a field count of -1
    rows = np.frombuffer(data, dtype=_LABEL_ROW, count=body // _LABEL_ROW.itemsize, offset=start)
    if body % _LABEL_ROW.itemsize or any(
        (rows[name] != length).any() for name, length in _LABEL_ROW_LENGTHS.items()
    ):
        raise RuntimeError("unexpected COPY row layout")
    rows = rows[np.argsort(rows["id"], kind="stable")]
    return _LabelRows(
        ids=rows["id"].astype(np.int64),
        items=rows["item"].astype(np.int64),
        workers=rows["worker"].astype(np.int64),
        codes=rows["code"].astype(np.int64),
        inactive=rows["inactive"].astype(bool),
    )


def _label_arrays(rows: _LabelRows, *, drop_inactive: bool) -> LabelArrays:
    """LabelArrays from the label rows: the rows of inactive workers (when `drop_inactive`)
    and values that are no class are left out; `read_counts` counts every row read."""
    excluded = (
        sorted(int(w) for w in np.unique(rows.workers[rows.inactive])) if drop_inactive else []
    )
    keep = rows.codes >= 0
    if drop_inactive:
        keep &= ~rows.inactive
    max_id = int(rows.ids.max()) if rows.ids.size else 0
    if not keep.any():
        empty = np.zeros(0, dtype=np.int64)
        return LabelArrays(empty, empty, empty, empty, empty, max_id, excluded)
    item_ids, tasks = np.unique(rows.items[keep], return_inverse=True)
    worker_ids, worker_idx = np.unique(rows.workers[keep], return_inverse=True)
    every = rows.items
    read_counts = np.bincount(
        np.searchsorted(item_ids, every)[np.isin(every, item_ids)], minlength=len(item_ids)
    )
    return LabelArrays(
        tasks,
        worker_idx,
        rows.codes[keep],
        item_ids,
        worker_ids,
        max_id,
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
    kind = job_kind(job.label_schema)
    if kind is not None:
        return _kind_aggregate(job=job, jk=kind, started=started)
    policy = job.spec.policy
    method = method or policy.aggregation
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
    cache.set(prior_cache_key(job.pk), run.class_prior, timeout=60)
    CLASS_PRIORS.invalidate()
    run.seconds = time.perf_counter() - started
    run.save(update_fields=["seconds"])
    return run


def _kind_aggregate(*, job: Job, jk: JobKind, started: float) -> AggregationRun | None:
    """A job of another kind than single_choice: its kernel over every answer of the job,
    gold items' included (workers' coins, biases, spreads and noise estimated across items;
    the gold answers let the kind calibrate, e.g. a numeric interval's width; answers of
    suspended or banned workers left out), and each settled crowd item's result, confidence
    and details rewritten where the kernel's differ, never over a newer label
    (compare-and-set on n_labels, state and source). The run records Krippendorff's alpha
    with the kind's distance (mean IoU for boxes) over the non-gold items."""
    rows = list(
        Label.objects.filter(job=job)
        .order_by("id")
        .values_list("id", "item_id", "worker_id", "value", "worker__status", "item__gold_label")
    )
    aggregation_countdown_reset(job=job, n_labels=len(rows))
    aggregation_dequeued(job_id=job.pk)
    excluded = sorted({r[2] for r in rows if r[4] in INACTIVE})
    kept = [r for r in rows if r[4] not in INACTIVE]
    if not kept:
        return None
    item_ids, tasks = np.unique([r[1] for r in kept], return_inverse=True)
    worker_ids, workers = np.unique([r[2] for r in kept], return_inverse=True)
    answers = [answer_value(r[3]) for r in kept]
    gold = {int(t): answer_value(r[5]) for t, r in zip(tasks, kept, strict=True) if r[5]}
    known = set(item_ids.tolist())
    read_counts = np.bincount(
        np.searchsorted(item_ids, [r[1] for r in rows if r[1] in known]), minlength=len(item_ids)
    )
    results = jk.adapter.job_results(
        kind=jk.kind,
        schema=jk.schema,
        tasks=tasks,
        workers=workers,
        answers=answers,
        n_tasks=len(item_ids),
        n_workers=len(worker_ids),
        gold=gold,
    )
    crowd = np.array([r[5] is None for r in kept])
    alpha = (
        jk.adapter.job_agreement(
            kind=jk.kind,
            tasks=tasks[crowd],
            answers=[a for a, c in zip(answers, crowd, strict=True) if c],
        )
        if crowd.any()
        else float("nan")
    )
    run = AggregationRun.objects.create(
        job=job,
        method=jk.name,
        version=algorithms.VERSION,
        max_label_id=max(r[0] for r in rows),
        excluded_workers=excluded,
        n_labels=len(kept),
        n_items=len(item_ids),
        n_workers=len(worker_ids),
        class_prior=[],
        detail=f"alpha ({jk.adapter.distance})={alpha:.6f}" if math.isfinite(alpha) else "",
    )
    position = {item_id: t for t, item_id in enumerate(item_ids.tolist())}
    now = timezone.now()
    changed = []
    for pk, state, source, n_labels, label, confidence, agreement, meta in (
        Item.objects.filter(pk__in=item_ids.tolist(), state=Item.State.SETTLED)
        .filter(source=Item.Source.CROWD, gold_label__isnull=True)
        .values_list(
            "id", "state", "source", "n_labels", "label", "confidence", "agreement", "result_meta"
        )
    ):
        t = position[pk]
        new_label, new_confidence, details = results[t]
        if n_labels != int(read_counts[t]) or new_label is None:
            continue
        if new_label == label and _close(new_confidence, confidence):
            continue
        changed.append(
            _ResultRow(
                pk=pk,
                state=state,
                source=source,
                n_labels=n_labels,
                posterior=[],
                agreement=agreement,
                result_meta={**(meta or {}), **details, "run": run.pk, "job_method": jk.name},
                label=new_label,
                confidence=new_confidence,
                updated_at=now,
            )
        )
    written = bulk_compare_and_set(
        Item,
        changed,
        ["label", "confidence", "result_meta", "updated_at"],
        expect=["n_labels", "state", "source"],
        batch_size=ITEM_RESULTS_BATCH,
    )
    logger.info(
        "aggregation run %s of %s job %s: %s results rewritten",
        run.pk,
        jk.name,
        job.pk,
        len(written),
    )
    run.seconds = time.perf_counter() - started
    run.save(update_fields=["seconds"])
    return run


def _close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return abs(a - b) <= RESULT_REWRITE_TOLERANCE


def _aggregate_arrays(
    *, job: Job, arrays: LabelArrays, method: str, policy: Policy
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
        if job_kind(job.label_schema) is not None:
            # Another kind's results are checked by its kernel at each run, not by classes.
            continue
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
    policy = job.spec.policy
    # The labels the job's latest run read: labels since then change the workers' matrices,
    # and with them results the next run will rewrite; those are not wrong yet.
    arrays = job_label_arrays(job=job, max_label_id=run.max_label_id)
    if arrays.tasks.size == 0:
        return []
    result = _aggregate_arrays(job=job, arrays=arrays, method=run.method, policy=policy)
    confident_at = policy.target_confidence
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
    *, job: Job, worker_ids: np.ndarray, k: int, policy: Policy
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Initial matrices from this job's last run, and Dirichlet priors from history."""
    ids = [int(w) for w in worker_ids]
    own = dict(
        WorkerJobQuality.objects.filter(
            job=job, worker_id__in=ids, source="aggregation"
        ).values_list("worker_id", "confusion")
    )
    history = history_confusions(job=job, worker_ids=[w for w in ids if w not in own])
    if not own and not history:
        return None, None
    init = np.empty((len(ids), k, k))
    prior = np.full((len(ids), k, k), 0.01)
    default = one_coin_confusion(policy.new_worker_accuracy, k)
    strength = policy.history_strength
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
# Beyond this many results to write, they go by COPY (`copy_compare_and_set`, 20,000 rows per
# commit): per row it is about a third of the statements' cost, which at a few hundred
# thousand moved results was most of a re-aggregation (bench/reaggregate.py).
COPY_RESULTS_ABOVE = 5000
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
    # The cheap tests first: most moved results differ in their posterior.
    if (old_meta.get("method"), old_meta.get("version")) != (method, version):
        return False
    if settled_label is not None and settled_label != label:
        return False
    if len(old_posterior) != len(posterior) or any(
        abs(a - b) > RESULT_REWRITE_TOLERANCE for a, b in zip(old_posterior, posterior, strict=True)
    ):
        return False
    return [(w.get("worker"), w.get("label")) for w in old_meta.get("workers", ())] == answers


def _posteriors_near(rows: list[tuple], position: dict, rounded: np.ndarray) -> np.ndarray:
    """Per item row (`rows[i][5]` its stored posterior as JSON text): whether the stored
    posterior has the run's length and every probability within RESULT_REWRITE_TOLERANCE of
    `rounded[position[id]]`, as `_result_unchanged` requires; all rows at once."""
    n, k = len(rows), rounded.shape[1]
    near = np.zeros(n, dtype=bool)
    if not n:
        return near
    stored = orjson.loads("[" + ",".join(r[5] or "null" for r in rows) + "]")
    fits = [
        i
        for i, (p, r) in enumerate(zip(stored, rows, strict=True))
        if isinstance(p, list) and len(p) == k and r[0] in position
    ]
    try:
        old = np.array([stored[i] for i in fits], dtype=np.float64).reshape(len(fits), k)
    except (TypeError, ValueError):  # a stored entry that is no number: not near
        fits = [i for i in fits if all(type(x) in (float, int) for x in stored[i])]
        old = np.array([stored[i] for i in fits], dtype=np.float64).reshape(len(fits), k)
    if not fits:
        return near
    new = rounded[[position[rows[i][0]] for i in fits]]
    near[fits] = (np.abs(old - new) <= RESULT_REWRITE_TOLERANCE).all(axis=1)
    return near


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
    # Per answer, its entry of result_meta["workers"]: one dict per (worker, class) pair,
    # shared by every item that answer pair appears on (they are only serialized).
    pairs, first, which = np.unique(
        arrays.workers[order] * len(classes) + arrays.labels[order],
        return_index=True,
        return_inverse=True,
    )
    entries = [
        {"worker": answer_workers[i], "label": answer_labels[i], "weight": answer_weights[i]}
        for i in first.tolist()
    ]
    answer_entries = [entries[i] for i in which.tolist()]
    bounds_list = bounds.tolist()
    tops = np.argmax(result.posteriors, axis=1).tolist()
    rounded_array = np.round(result.posteriors, 6)
    rounded = rounded_array.tolist()
    read_counts = arrays.read_counts.tolist()
    agreements = [None if np.isnan(a) else a for a in agreement.tolist()]
    confidences = result.posteriors[np.arange(len(tops)), tops].tolist()

    def changed_items(item_ids: list[int] | None) -> tuple[list[_ResultRow], int]:
        """The items (of `item_ids`, or of the job's items this run read labels of when
        None) whose stored result differs from the run's, and how many moved on.

        Plain rows (values, JSON decoded with orjson), not model instances: a big job has a
        few hundred thousand of them."""
        where = Q(job=job) if item_ids is None else Q(pk__in=item_ids)
        rows = (
            Item.objects.filter(where)
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
        rows = list(rows)
        near = _posteriors_near(rows, position, rounded_array)
        for i, (pk, state, source, n_labels, label, posterior_text, meta_text) in enumerate(rows):
            t = position.get(pk)
            if t is None:
                continue  # no label read by this run
            if n_labels != read_counts[t]:
                moved += 1  # labeled since the run read its labels: its own result is newer
                continue
            lo, hi = bounds_list[t], bounds_list[t + 1]
            posterior = rounded[t]
            top = tops[t]
            settled = state == Item.State.SETTLED
            # `near` is necessary for an unchanged result: most moved ones stop there,
            # without decoding their stored result_meta.
            if near[i] and _result_unchanged(
                old_meta=(orjson.loads(meta_text) if meta_text else None) or {},
                old_posterior=(orjson.loads(posterior_text) if posterior_text else None) or [],
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
                "workers": answer_entries[lo:hi],
            }
            changed.append(
                _ResultRow(
                    pk=pk,
                    state=state,
                    source=source,
                    n_labels=n_labels,
                    posterior=posterior,
                    agreement=agreements[t],
                    result_meta=meta,
                    label=classes[top] if settled else label,
                    confidence=confidences[t] if settled else None,
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
            if len(group) > COPY_RESULTS_ABOVE:
                written.update(copy_compare_and_set(Item, group, fields, expect=expect))
            else:
                written.update(
                    bulk_compare_and_set(
                        Item, group, fields, expect=expect, batch_size=ITEM_RESULTS_BATCH
                    )
                )
        return written

    changed, moved = changed_items(None)
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


# --------------------------------------------------------------------------- engine hooks
