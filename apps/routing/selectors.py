"""Reads for routing: a job's items as arrays, model versions, the model's vote on an item,
nearest items by features, strategy replays and the measured effect of pre-labels."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from django.db.models import QuerySet
from django.db.models.fields.json import KT
from rest_framework import status

from apps.assignments.models import Label
from apps.common import caches
from apps.common.errors import ApplicationError, ErrorCode
from apps.jobs.models import Item, Job
from apps.jobs.policy import Routing, routing_from_stored
from apps.quality.matrices import worker_confusions
from apps.routing import algorithms
from apps.routing.models import ItemScore, ModelVersion, PrelabelExposure
from apps.routing.policy import Audits, band_weights, model_vote

# Every routing knob with its default; a job's `routing` JSON overrides any of them.
HUMAN_SOURCES = (Item.Source.CROWD, Item.Source.EXPERT, Item.Source.QC)
SIMILAR_MAX_K = 50
EVALUATE_MAX_ITEMS = 3000
EVALUATE_MAX_ROUNDS = 20
EVALUATE_MAX_BATCH = 200
_ROUTING_CACHE_SECONDS = 60


def _not_found(what: str) -> ApplicationError:
    return ApplicationError(
        f"No such {what}.", code=ErrorCode.NOT_FOUND, status_code=status.HTTP_404_NOT_FOUND
    )


def job_routing_cached(*, job_id: int) -> Routing:
    """The job's routing config, cached for a minute.

    The assignment engine loads jobs without their routing column; reading it per lease
    would add a query to every `next`, so the pre-label switch comes from here.
    """
    key = f"concord:routing:config:{job_id}"
    routing = caches.shared_get(key)
    if routing is None:
        routing = Job.objects.filter(pk=job_id).values_list("routing", flat=True).first() or {}
        caches.shared_set(key, routing, timeout=_ROUTING_CACHE_SECONDS)
    return routing_from_stored(routing)


@dataclass(frozen=True)
class JobArrays:
    """A job's items as aligned arrays (one query); rows without an input are masked."""

    ids: np.ndarray
    external_ids: list[str]
    features: np.ndarray | None  # (n, d) float32, zeros where has_features is False
    has_features: np.ndarray
    predictions: np.ndarray  # (n, K), zeros where has_prediction is False
    has_prediction: np.ndarray
    state: np.ndarray
    source: np.ndarray
    posterior: np.ndarray  # (n, K) settled posterior, zeros where has_posterior is False
    has_posterior: np.ndarray
    n_labels: np.ndarray
    n_leases: np.ndarray
    split_votes: np.ndarray  # more than one class was voted
    is_gold: np.ndarray
    settled_at: list
    slices: list

    def human_settled(self) -> np.ndarray:
        """Settled by people (not the model), not gold, with a usable posterior."""
        return (
            (self.state == Item.State.SETTLED)
            & np.isin(self.source, HUMAN_SOURCES)
            & self.has_posterior
            & ~self.is_gold
        )


def _prob_row(value: Any, k: int) -> np.ndarray | None:
    if not isinstance(value, list) or len(value) != k:
        return None
    try:
        row = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if not np.isfinite(row).all() or (row < 0).any() or row.sum() <= 0:
        return None
    return row / row.sum()


def job_arrays(*, job: Job, slice_field: str | None = None) -> JobArrays:
    """Every item of the job with what routing reads, as numpy arrays."""
    k = len(job.classes)
    d = job.feature_dim
    columns = [
        "id",
        "external_id",
        "features",
        "prediction",
        "state",
        "source",
        "posterior",
        "n_labels",
        "n_leases",
        "vote_counts",
        "gold_label",
        "settled_at",
    ]
    qs = Item.objects.filter(job=job).order_by("id")
    if slice_field:
        # The slice value is read in SQL: the whole payload never leaves the database.
        qs = qs.annotate(slice_value=KT(f"payload__{slice_field}"))
        columns.append("slice_value")
    rows = list(qs.values_list(*columns))
    n = len(rows)
    features = np.zeros((n, d), dtype=np.float32) if d else None
    has_features = np.zeros(n, dtype=bool)
    predictions = np.zeros((n, k))
    has_prediction = np.zeros(n, dtype=bool)
    posterior = np.zeros((n, k))
    has_posterior = np.zeros(n, dtype=bool)
    for i, row in enumerate(rows):
        raw = row[2]
        if features is not None and raw is not None and len(raw) == 4 * d:
            features[i] = np.frombuffer(bytes(raw), dtype="<f4")
            has_features[i] = True
        pred = _prob_row(row[3], k)
        if pred is not None:
            predictions[i] = pred
            has_prediction[i] = True
        post = _prob_row(row[6], k)
        if post is not None:
            posterior[i] = post
            has_posterior[i] = True
    return JobArrays(
        ids=np.fromiter((r[0] for r in rows), dtype=np.int64, count=n),
        external_ids=[r[1] for r in rows],
        features=features,
        has_features=has_features,
        predictions=predictions,
        has_prediction=has_prediction,
        state=np.array([r[4] for r in rows], dtype=object),
        source=np.array([r[5] or "" for r in rows], dtype=object),
        posterior=posterior,
        has_posterior=has_posterior,
        n_labels=np.fromiter((r[7] for r in rows), dtype=np.int64, count=n),
        n_leases=np.fromiter((r[8] for r in rows), dtype=np.int64, count=n),
        split_votes=np.array(
            [sum(1 for v in (r[9] or {}).values() if v) > 1 for r in rows], dtype=bool
        ),
        is_gold=np.array([r[10] is not None for r in rows], dtype=bool),
        settled_at=[r[11] for r in rows],
        slices=[(r[12] if slice_field else None) for r in rows],
    )


def model_version_list(*, job: Job) -> QuerySet[ModelVersion]:
    """The job's versions, newest first, without their weights."""
    return ModelVersion.objects.filter(job=job).defer("weights").order_by("-id")


def model_version_active(*, job_id: int) -> ModelVersion | None:
    return ModelVersion.objects.filter(job_id=job_id, is_active=True).first()


def item_model_vote(*, item_id: int, n_classes: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The model's vote on the item: its calibrated probabilities tempered by the vote
    weight of the version that scored it (apps.routing.policy.vote_weight: the weight of
    the band the item's confidence falls in, or the version's one weight when its card has
    none per band), and the calibrated probabilities themselves (the reported posterior's
    prior, apps.routing.policy.reported_confidence); None for an audit item (people judge
    it alone: the model must not vouch for itself there) and where the weight is 0 (the
    model's errors go with the crowd's: it does not vote)."""
    row = (
        ItemScore.objects.filter(item_id=item_id, audit=False)
        .values_list(
            "probs", "model_version__card__vote_weight", "model_version__card__vote_weight_by_band"
        )
        .first()
    )
    if row is None:
        return None
    probs = _prob_row(row[0], n_classes)
    if probs is None:
        return None
    # Versions trained before the vote weight existed voted at full weight.
    weight = 1.0 if row[1] is None else float(row[1])
    bands = row[2] if isinstance(row[2], dict) else {}
    weight = float(
        band_weights(
            float(probs.max()),
            edges=bands.get("edges") or [],
            by_band=bands.get("weights") or [],
            weight=weight,
        )[0]
    )
    if weight <= 0.0:
        return None
    return model_vote(probs, weight), probs


def job_people_only_evidence(*, job: Job, item_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For settled items: whether people settled each alone (the model did not vote), and
    P(first crowd answer | class) under its worker's matrix (ones where there is none).

    Two queries for the items and their crowd answers, one for the workers' matrices.
    """
    k = len(job.classes)
    ids = [int(i) for i in item_ids]
    methods = dict(Item.objects.filter(pk__in=ids).values_list("id", KT("result_meta__method")))
    people_only = np.array([methods.get(i) != "posterior+model" for i in ids], dtype=bool)
    first: dict[int, tuple[int, str]] = {}
    for item_id, worker_id, value in (
        Label.objects.filter(item_id__in=ids, tier="crowd", is_gold=False)
        .order_by("item_id", "created_at", "id")
        .values_list("item_id", "worker_id", "value")
    ):
        first.setdefault(item_id, (worker_id, value))
    matrices = worker_confusions(job=job, worker_ids=sorted({w for w, _ in first.values()}))
    index = {c: i for i, c in enumerate(job.classes)}
    likelihood = np.ones((len(ids), k))
    for row, item_id in enumerate(ids):
        answer = first.get(item_id)
        if answer is not None and answer[1] in index and answer[0] in matrices:
            likelihood[row] = np.asarray(matrices[answer[0]])[:, index[answer[1]]]
    return people_only, likelihood


def job_audits(*, job: Job, threshold: float | None) -> Audits:
    """The audits of a threshold: items drawn for audit whose model confidence reaches it
    (it would have accepted them) and that people have settled alone; how many, and how many
    carry the label the model would have given. No threshold, no audits."""
    if threshold is None:
        return Audits()
    pairs = list(
        ItemScore.objects.filter(
            job=job,
            audit=True,
            confidence__gte=threshold,
            item__state=Item.State.SETTLED,
            item__source__in=HUMAN_SOURCES,
        ).values_list("predicted", "item__label")
    )
    return Audits(n=len(pairs), correct=float(sum(p == label for p, label in pairs)))


def item_get_for_job(*, job: Job, external_id: str) -> Item:
    item = Item.objects.filter(job=job, external_id=external_id).only("id", "features").first()
    if item is None:
        raise _not_found("item")
    return item


def item_similar(*, job: Job, external_id: str, k: int = 10) -> list[dict[str, Any]]:
    """The k items of the job nearest to the given one by cosine similarity of features.

    One query loads the job's feature matrix; similarities are one matrix-vector product.
    An item without features is a 400; an unknown item a 404.
    """
    item = item_get_for_job(job=job, external_id=external_id)
    d = job.feature_dim
    if item.features is None or not d or len(item.features) != 4 * d:
        raise ApplicationError(
            "This item has no features to compare.",
            code=ErrorCode.INVALID,
            details={"external_id": external_id},
        )
    k = max(1, min(int(k), SIMILAR_MAX_K))
    rows = list(
        Item.objects.filter(job=job, features__isnull=False)
        .exclude(pk=item.pk)
        .values_list("id", "features")
    )
    rows = [r for r in rows if len(r[1]) == 4 * d]
    if not rows:
        return []
    ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    matrix = np.frombuffer(b"".join(bytes(r[1]) for r in rows), dtype="<f4").reshape(-1, d)
    query = np.frombuffer(bytes(item.features), dtype="<f4").astype(np.float64)
    norms = np.linalg.norm(matrix, axis=1) * np.linalg.norm(query)
    with np.errstate(divide="ignore", invalid="ignore"):
        sims = np.where(norms > 0, (matrix @ query) / norms, 0.0)
    # argpartition finds the k best in O(n); only those k are sorted (ties by id).
    top = np.argpartition(-sims, min(k, len(sims)) - 1)[:k]
    top = top[np.lexsort((ids[top], -sims[top]))]
    found = {
        r["id"]: r
        for r in Item.objects.filter(pk__in=ids[top].tolist()).values(
            "id", "external_id", "state", "label"
        )
    }
    return [
        {**found[int(ids[i])], "similarity": round(float(sims[i]), 6)}
        for i in top
        if int(ids[i]) in found
    ]


def job_evaluate_strategy(
    *, job: Job, strategy: str, rounds: int, batch: int, seed: int = 0
) -> dict[str, Any]:
    """Replay the job's settled items: learning curves of `strategy` and of random picks.

    Only people's settled labels count (their posterior's top class is the truth here).
    Capped so it can run inside a request: at most EVALUATE_MAX_ITEMS items (a random
    sample beyond), EVALUATE_MAX_ROUNDS rounds of at most EVALUATE_MAX_BATCH labels.
    """
    if strategy not in algorithms.STRATEGIES:
        raise ApplicationError(
            f"Unknown strategy {strategy!r}.", details={"strategy": list(algorithms.STRATEGIES)}
        )
    # Tiny models: extra intra-op threads only add synchronization (see bench/routing.py).
    algorithms.set_torch_threads(1)
    rounds = max(1, min(int(rounds), EVALUATE_MAX_ROUNDS))
    batch = max(1, min(int(batch), EVALUATE_MAX_BATCH))
    data = job_arrays(job=job)
    usable = np.flatnonzero(data.human_settled() & data.has_features)
    if len(usable) < 3 * batch or data.features is None:
        raise ApplicationError(
            "Too few settled items with features to replay.",
            code=ErrorCode.INVALID_STATE,
            status_code=status.HTTP_409_CONFLICT,
            details={"settled_with_features": int(len(usable)), "needed": 3 * batch},
        )
    rng = np.random.default_rng(seed)
    if len(usable) > EVALUATE_MAX_ITEMS:
        usable = np.sort(rng.choice(usable, EVALUATE_MAX_ITEMS, replace=False))
    curves = algorithms.replay_learning_curves(
        data.features[usable],
        data.posterior[usable].argmax(axis=1),
        n_classes=len(job.classes),
        strategy=strategy,
        rounds=rounds,
        batch=batch,
        seed=seed,
    )
    return {
        "strategy": strategy,
        "baseline": "random",
        "n_items": int(len(usable)),
        "n_test": curves.n_test,
        "labels": [int(n) for n in curves.n_labels],
        "strategy_accuracy": [round(float(a), 6) for a in curves.strategy],
        "random_accuracy": [round(float(a), 6) for a in curves.random],
        "area_gain": round(float((curves.strategy - curves.random).mean()), 6),
    }


def job_prelabel_effect(*, job: Job) -> dict[str, Any]:
    """Gold accuracy of labels given with a pre-label shown against labels given without.

    A pre-label that annotators copy blindly shows as a gap here: gold items are the only
    items whose truth is known independently of the crowd and the model.
    """
    shown = dict(PrelabelExposure.objects.filter(job=job).values_list("assignment_id", "prelabel"))
    rows = Label.objects.filter(job=job, is_gold=True).values_list(
        "assignment_id", "is_correct", "value"
    )
    groups = {
        "with_prelabel": {"n": 0, "correct": 0, "followed": 0},
        "without_prelabel": {"n": 0, "correct": 0},
    }
    for assignment_id, correct, value in rows:
        group = groups["with_prelabel" if assignment_id in shown else "without_prelabel"]
        group["n"] += 1
        group["correct"] += int(bool(correct))
        if assignment_id in shown:
            group["followed"] += int(value == shown[assignment_id])
    for group in groups.values():
        group["accuracy"] = round(group["correct"] / group["n"], 6) if group["n"] else None
    with_acc = groups["with_prelabel"]["accuracy"]
    without_acc = groups["without_prelabel"]["accuracy"]
    groups["difference"] = (
        round(with_acc - without_acc, 6)
        if with_acc is not None and without_acc is not None
        else None
    )
    return groups
