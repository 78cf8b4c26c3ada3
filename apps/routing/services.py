"""Routing writes: retrain a job's model (versioned, with a model card, never silently worse),
score and route its items (auto-accept with audits, queue priorities, experts), and the cheap
retrain trigger.

The decisions are apps.routing.policy's (the same code bench/routing.py drives): a model on
features (or the client's prediction) calibrated by temperature on out-of-fold scores of
settled items, an auto-accept threshold with memory (the last qualifying one holds until its
audits fail the claim), a random audit share, the model's vote weight, and the query strategy
ordering everything else. One retrain is one round of `policy.RoutingLoop`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.core.cache import cache
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from apps.assignments.models import Assignment
from apps.assignments.records import item_send_to_expert, job_complete_if_done
from apps.common.bulk import bulk_update_rows
from apps.common.tasks import enqueue_on_commit
from apps.jobs.models import Item, Job
from apps.jobs.policy import Routing
from apps.reviews.services import review_audit_maybe
from apps.routing import algorithms, policy
from apps.routing.models import ItemScore, ModelVersion, PrelabelExposure
from apps.routing.selectors import (
    HUMAN_SOURCES,
    JobArrays,
    job_arrays,
    job_audits,
    job_people_only_evidence,
    job_routing_cached,
)

MAX_SLICES = 50
# What a model card says about its threshold: in force, why, and its audits against its claim.
_THRESHOLD_CARD_KEYS = (
    "threshold",
    "threshold_reason",
    "threshold_floor",
    "claimed_accuracy",
    "audited_accuracy",
    "n_audited",
)
# Small models: extra intra-op threads only add synchronization (40x slower on a shared box).
TORCH_THREADS = 1


@dataclass(frozen=True)
class RoutingOutcome:
    """What one routing pass did to the job's items."""

    scored: int = 0
    accepted: int = 0
    audited: int = 0
    prioritized: int = 0
    to_expert: int = 0


@dataclass(frozen=True)
class RetrainResult:
    """The version trained (None when there was too little data), whether it became active,
    why, and the routing pass run with the active version afterwards."""

    version: ModelVersion | None
    activated: bool
    reason: str
    routing: RoutingOutcome | None = None


@dataclass(frozen=True)
class _Scorer:
    """How a version turns a job's arrays into calibrated probabilities."""

    kind: str
    model: algorithms.RoutingModel | None
    temperature: float

    def usable(self, data: JobArrays) -> np.ndarray:
        return data.has_features if self.kind == ModelVersion.Kind.FEATURES else data.has_prediction

    def probs(self, data: JobArrays, rows: np.ndarray) -> np.ndarray:
        if len(rows) == 0:
            return np.zeros((0, data.predictions.shape[1]))
        if self.kind == ModelVersion.Kind.FEATURES:
            return algorithms.predict_proba(
                self.model, data.features[rows], temperature=self.temperature
            )
        return algorithms.calibrate_probabilities(data.predictions[rows], self.temperature)

    @classmethod
    def of(cls, version: ModelVersion) -> _Scorer:
        model = (
            algorithms.model_from_bytes(bytes(version.weights))
            if version.kind == ModelVersion.Kind.FEATURES
            else None
        )
        return cls(kind=version.kind, model=model, temperature=version.temperature)


# --------------------------------------------------------------------------- training


_soft_correct = policy.soft_correct


def _nll(probs: np.ndarray, targets: np.ndarray) -> float:
    return float(-(targets * np.log(np.clip(probs, 1e-12, 1.0))).sum(axis=1).mean())


def _group_accuracy(keys: list, correct: np.ndarray, *, limit: int) -> dict[str, dict]:
    groups: dict[str, list[float]] = {}
    for key, ok in zip(keys, correct.tolist(), strict=True):
        groups.setdefault(str(key), []).append(ok)
    largest = sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))[:limit]
    return {
        key: {"n": len(vals), "accuracy": round(float(np.mean(vals)), 6)} for key, vals in largest
    }


def _thresholds(
    *,
    probs: np.ndarray,
    correct: np.ndarray,
    pool_confidence: np.ndarray,
    cfg: Routing,
    classes: list[str],
) -> tuple[algorithms.ThresholdChoice, dict[str, float | None]]:
    """The global auto-accept threshold, and a stricter one per class with its own target."""
    confidence = probs.max(axis=1)
    level = cfg.bound_level
    choice = algorithms.choose_threshold(
        confidence,
        correct,
        target_accuracy=cfg.target_accuracy,
        level=level,
        pool_confidence=pool_confidence,
    )
    per_class: dict[str, float | None] = {}
    predicted = probs.argmax(axis=1)
    for name, target in cfg.class_targets.items():
        if name not in classes:
            continue
        rows = predicted == classes.index(name)
        c = algorithms.choose_threshold(
            confidence[rows], correct[rows], target_accuracy=float(target), level=level
        )
        per_class[name] = c.threshold if c.qualified else None
    return choice, per_class


def _compare(
    *,
    job: Job,
    active: ModelVersion | None,
    data: JobArrays,
    train_rows: np.ndarray,
    candidate_probs: np.ndarray,
    cfg: Routing,
) -> tuple[bool, dict[str, Any]]:
    """Whether the candidate may replace the active version, and the evidence.

    Both are scored on the same settled items that the active version never saw (settled
    after its data cutoff): the candidate by its out-of-fold probabilities, the active
    version directly. Higher soft accuracy wins; on a tie the lower NLL. Too few such items
    keeps the active version.
    """
    if active is None:
        return True, {"reason": "first version"}
    cutoff = active.data_cutoff
    unseen = np.array(
        [
            cutoff is None or (data.settled_at[r] is not None and data.settled_at[r] > cutoff)
            for r in train_rows
        ],
        dtype=bool,
    )
    scorer = _Scorer.of(active)
    unseen &= scorer.usable(data)[train_rows]
    n = int(unseen.sum())
    evidence: dict[str, Any] = {"compared_with": active.pk, "n_compared": n}
    if n < cfg.min_compare:
        evidence["reason"] = (
            f"kept v{active.number}: only {n} settled items unseen by it "
            f"(need {cfg.min_compare}) to compare on"
        )
        return False, evidence
    rows = train_rows[unseen]
    targets = data.posterior[rows]
    old = scorer.probs(data, rows)
    new = candidate_probs[unseen]
    old_acc, new_acc = (
        float(_soft_correct(old, targets).mean()),
        float(_soft_correct(new, targets).mean()),
    )
    old_nll, new_nll = _nll(old, targets), _nll(new, targets)
    evidence.update(
        active_accuracy=round(old_acc, 6),
        candidate_accuracy=round(new_acc, 6),
        active_nll=round(old_nll, 6),
        candidate_nll=round(new_nll, 6),
    )
    better = (new_acc, -new_nll) >= (old_acc, -old_nll)
    evidence["reason"] = (
        f"replaced v{active.number}: held-out accuracy {new_acc:.4f} vs {old_acc:.4f}"
        if better
        else f"kept v{active.number}: candidate held-out accuracy {new_acc:.4f} "
        f"(NLL {new_nll:.4f}) below the active {old_acc:.4f} (NLL {old_nll:.4f})"
    )
    return better, evidence


def _model_card(
    *,
    job: Job,
    data: JobArrays,
    rows: np.ndarray,
    raw_probs: np.ndarray,
    probs: np.ndarray,
    temperature: algorithms.TemperatureFit,
    choice: algorithms.ThresholdChoice,
    class_thresholds: dict,
    parent: ModelVersion | None,
    cfg: Routing,
    n_settled: int,
) -> dict[str, Any]:
    classes = job.classes
    targets = data.posterior[rows]
    correct = _soft_correct(probs, targets)
    truth = targets.argmax(axis=1)
    per_class = _group_accuracy([classes[t] for t in truth], correct, limit=len(classes))
    card: dict[str, Any] = {
        "training_size": int(len(rows)),
        "n_settled": n_settled,
        "heldout": "out-of-fold (cross-fitting)",
        "heldout_accuracy": round(float(correct.mean()), 6),
        "heldout_nll": round(_nll(probs, targets), 6),
        "per_class_accuracy": per_class,
        "ece_before": round(algorithms.expected_calibration_error(raw_probs, targets), 6),
        "ece": round(algorithms.expected_calibration_error(probs, targets), 6),
        "temperature": round(temperature.temperature, 6),
        "nll_before_temperature": round(temperature.nll_before, 6),
        "threshold": None if not choice.qualified else choice.threshold,
        "threshold_qualified": choice.qualified,
        "threshold_lower_bound": round(choice.lower_bound, 6),
        "threshold_accuracy": None if math.isnan(choice.accuracy) else round(choice.accuracy, 6),
        "coverage": round(choice.coverage, 6),
        "target_accuracy": cfg.target_accuracy,
        "bound_level": cfg.bound_level,
        "class_thresholds": class_thresholds,
        "parent": parent.number if parent else None,
        "model_kind": cfg.model_kind,
        "epochs": cfg.epochs,
    }
    if cfg.slice_field:
        slices = _group_accuracy([data.slices[r] for r in rows], correct, limit=MAX_SLICES)
        card["slice_field"] = cfg.slice_field
        card["per_slice_accuracy"] = slices
        # Forgetting shows as a slice that was fine under the parent and dropped now.
        before = (parent.card or {}).get("per_slice_accuracy", {}) if parent else {}
        card["slice_drops"] = {
            key: round(before[key]["accuracy"] - value["accuracy"], 6)
            for key, value in slices.items()
            if key in before and before[key]["accuracy"] - value["accuracy"] > 0.05
        }
    return card


def job_retrain(*, job_id: int, seed: int = 0) -> RetrainResult:
    """Train a new model version of the job on its settled items and route with the best.

    Training data: items settled by people (crowd, expert, QC — never by the model), with
    their posterior as soft targets; on features when at least the seed set's size
    (policy.seed_size: `seed_share` of the job, at least `min_train`) of them have
    features, else a temperature calibration of the client's `prediction`. The candidate is
    stored with its card either way; it becomes active only if it is at least as good as
    the active version on the same unseen held-out items. Then every open item is routed
    with the active version (job_route). Safe to run twice: the second run adds a version.
    """

    algorithms.set_torch_threads(TORCH_THREADS)
    started = time.perf_counter()
    job = Job.objects.get(pk=job_id)
    cfg = job.spec.routing
    if cfg.mode != "model":
        return RetrainResult(version=None, activated=False, reason="routing is off")
    classes = job.classes
    data = job_arrays(job=job, slice_field=cfg.slice_field)
    settled = data.human_settled()
    # The first model waits for the seed set (a share of the job with bounds); later
    # versions train on whatever people settled.
    min_train = policy.seed_size(n_items=len(data.ids), cfg=cfg)
    rows_features = np.flatnonzero(settled & data.has_features)
    rows_prediction = np.flatnonzero(settled & data.has_prediction)
    active = ModelVersion.objects.filter(job=job, is_active=True).first()
    if data.features is not None and len(rows_features) >= min_train:
        kind, rows = ModelVersion.Kind.FEATURES, rows_features
        targets = data.posterior[rows]
        fit = policy.fit_round(
            x=data.features[rows].astype(np.float64), targets=targets, cfg=cfg, seed=seed
        )
        model, temperature, raw_probs, probs = fit.model, fit.temperature, fit.raw_probs, fit.probs
        weights: bytes | None = algorithms.model_to_bytes(model)
    elif len(rows_prediction) >= min_train:
        # One temperature barely overfits: fitted and measured on the same settled items.
        kind, rows = ModelVersion.Kind.PREDICTION, rows_prediction
        targets = data.posterior[rows]
        raw_probs = data.predictions[rows]
        temperature = algorithms.fit_temperature_from_probabilities(raw_probs, targets)
        probs = algorithms.calibrate_probabilities(raw_probs, temperature.temperature)
        model, weights = None, None
    else:
        return RetrainResult(
            version=None,
            activated=False,
            reason=f"too few settled items: {int(settled.sum())} (need {min_train})",
            routing=job_route(job=job, data=data) if active else None,
        )
    scorer = _Scorer(kind=kind, model=model, temperature=temperature.temperature)
    pool = np.flatnonzero((data.state != Item.State.SETTLED) & scorer.usable(data))
    pool_confidence = scorer.probs(data, pool).max(axis=1)
    correct = _soft_correct(probs, targets)
    choice, class_thresholds = _thresholds(
        probs=probs, correct=correct, pool_confidence=pool_confidence, cfg=cfg, classes=classes
    )
    # Memory: the active version's threshold holds unless this round qualifies or its
    # audits (people alone on items it would have accepted) fail the claim.
    memory = (active.card or {}) if active else {}
    state = policy.threshold_with_memory(
        choice=choice,
        previous=active.threshold if active else None,
        previous_claim=memory.get("claimed_accuracy"),
        audits=job_audits(job=job, threshold=active.threshold if active else None),
        cfg=cfg,
        floor=memory.get("threshold_floor"),
    )
    people_only, first_likelihood = job_people_only_evidence(job=job, item_ids=data.ids[rows])
    # The first answer counts as a routed item's answers do: at the crowd's weight.
    first_likelihood = first_likelihood ** policy.crowd_weight(job.spec.policy)
    limit = np.inf if state.threshold is None else state.threshold
    vote = policy.vote_weight(
        probs=probs[people_only],
        targets=targets[people_only],
        first_likelihood=first_likelihood[people_only],
        routed=probs[people_only].max(axis=1) < limit,
    )
    dependence = algorithms.model_crowd_dependence(
        probs[people_only], targets[people_only], first_likelihood[people_only]
    )
    activate, evidence = _compare(
        job=job, active=active, data=data, train_rows=rows, candidate_probs=probs, cfg=cfg
    )
    card = _model_card(
        job=job,
        data=data,
        rows=rows,
        raw_probs=raw_probs,
        probs=probs,
        temperature=temperature,
        choice=choice,
        class_thresholds=class_thresholds,
        parent=active,
        cfg=cfg,
        n_settled=int(settled.sum()),
    )
    card.update(
        threshold=state.threshold,  # the one in force (memory), not only this round's
        threshold_reason=state.reason,
        threshold_floor=state.floor,
        claimed_accuracy=None if state.claimed is None else round(state.claimed, 6),
        audited_accuracy=None if state.audited is None else round(state.audited, 6),
        n_audited=state.n_audited,
        vote_weight=vote.weight,
        vote_weight_reason=vote.reason,
        vote_weight_nll=vote.nll,
        # The vote weight per band of the model's confidence (item_model_vote applies it).
        vote_weight_by_band=vote.as_card(),
        # The model's confusion and its joint errors with the crowd, on people-only items.
        dependence=dependence.as_card(),
    )
    cutoff = max((data.settled_at[r] for r in rows if data.settled_at[r]), default=None)
    with transaction.atomic():
        # The job row lock serializes concurrent retrains of one job (numbering, activation).
        Job.objects.select_for_update().filter(pk=job.pk).values_list("id", flat=True).first()
        number = (ModelVersion.objects.filter(job=job).aggregate(n=Max("number"))["n"] or 0) + 1
        if activate:
            ModelVersion.objects.filter(job=job, is_active=True).update(is_active=False)
        elif active is not None and state.floor != memory.get("threshold_floor"):
            # Audits overturned the threshold in force: the active version takes the raised
            # one even when the candidate does not replace it.
            active.threshold = state.threshold
            active.card = {**memory, **{key: card[key] for key in _THRESHOLD_CARD_KEYS}}
            active.save(update_fields=["threshold", "card"])
        version = ModelVersion.objects.create(
            job=job,
            number=number,
            kind=kind,
            parent=active,
            is_active=activate,
            weights=weights,
            temperature=temperature.temperature,
            threshold=state.threshold,
            target_accuracy=cfg.target_accuracy,
            n_train=len(rows),
            n_heldout=len(rows),
            data_cutoff=cutoff,
            card=card,
            decision={"activated": activate, **evidence},
            seconds=round(time.perf_counter() - started, 3),
        )
    routed = job_route(job=job, data=data)
    return RetrainResult(
        version=version, activated=activate, reason=evidence["reason"], routing=routed
    )


# --------------------------------------------------------------------------- routing


def _uniform_draw(ids: np.ndarray, salt: int) -> np.ndarray:
    """A fixed draw in [0, 1) per item id: an item drawn for audit stays drawn on every pass.

    SplitMix64 finalizer on (id, salt); uint64 arithmetic wraps, which is the point.
    """
    z = ids.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(salt)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def _write_scores(
    *,
    job: Job,
    version: ModelVersion,
    data: JobArrays,
    rows: np.ndarray,
    probs: np.ndarray,
    audit: np.ndarray,
) -> None:
    classes = job.classes
    predicted = probs.argmax(axis=1)
    objs = [
        ItemScore(
            item_id=int(data.ids[r]),
            job_id=job.pk,
            model_version_id=version.pk,
            probs=[round(float(p), 6) for p in probs[i]],
            confidence=float(probs[i, predicted[i]]),
            predicted=classes[predicted[i]],
            audit=bool(audit[i]),
        )
        for i, r in enumerate(rows.tolist())
    ]
    ItemScore.objects.bulk_create(
        objs,
        batch_size=1000,
        update_conflicts=True,
        unique_fields=["item"],
        update_fields=["model_version", "probs", "confidence", "predicted", "audit", "updated_at"],
    )


def _accept(
    *, job: Job, version: ModelVersion, data: JobArrays, rows: np.ndarray, probs: np.ndarray
) -> list[int]:
    """Settle confident items as the model's result; returns the ids actually settled.

    Only items still open with no label and no live lease are taken (re-checked under row
    locks), so a worker's lease taken in the meantime is never overtaken.
    """
    if len(rows) == 0:
        return []
    classes = job.classes
    card = version.card or {}
    now = timezone.now()
    by_id = {int(data.ids[r]): i for i, r in enumerate(rows.tolist())}
    with transaction.atomic():
        free = list(
            Item.objects.select_for_update(skip_locked=True)
            .filter(pk__in=list(by_id), state=Item.State.OPEN, n_labels=0, n_leases=0)
            .values_list("id", flat=True)
        )
        objs = []
        for item_id in free:
            p = probs[by_id[item_id]]
            top = int(p.argmax())
            objs.append(
                Item(
                    pk=item_id,
                    state=Item.State.SETTLED,
                    source=Item.Source.MODEL,
                    label=classes[top],
                    confidence=float(p[top]),
                    posterior=[round(float(v), 6) for v in p],
                    result_meta={
                        "method": "model",
                        "route": "model",
                        "model_version": version.pk,
                        "model_number": version.number,
                        "threshold": version.threshold,
                        # Why the model settled it: its confidence against the threshold in
                        # force, why that threshold holds, and what its audits found so far.
                        "why": {
                            "model_confidence": round(float(p[top]), 6),
                            "threshold": version.threshold,
                            "threshold_reason": card.get("threshold_reason"),
                            "claimed_accuracy": card.get("claimed_accuracy"),
                            "audited_accuracy": card.get("audited_accuracy"),
                            "n_audited": card.get("n_audited"),
                        },
                    },
                    settled_at=now,
                    updated_at=now,
                )
            )
        bulk_update_rows(
            Item,
            objs,
            [
                "state",
                "source",
                "label",
                "confidence",
                "posterior",
                "result_meta",
                "settled_at",
                "updated_at",
            ],
        )
    return free


def _mark_audits(
    *,
    version: ModelVersion,
    data: JobArrays,
    rows: np.ndarray,
    probs: np.ndarray,
    classes: list[str],
) -> None:
    if len(rows) == 0:
        return
    meta = {
        int(i): m
        for i, m in Item.objects.filter(pk__in=data.ids[rows].tolist()).values_list(
            "id", "result_meta"
        )
    }
    objs = [
        Item(
            pk=int(data.ids[r]),
            result_meta={
                **(meta.get(int(data.ids[r])) or {}),
                "audit": True,
                "model_version": version.pk,
                "model_label": classes[int(probs[i].argmax())],
            },
        )
        for i, r in enumerate(rows.tolist())
    ]
    bulk_update_rows(Item, objs, ["result_meta"])


def job_route(*, job: Job, data: JobArrays | None = None, seed: int = 0) -> RoutingOutcome:
    """Score the job's unsettled items with the active version and route them.

    Confident open items nobody has touched are auto-accepted (source model), except a
    fixed random `audit_rate` share kept open for people; the other open items get the
    job's query strategy as priority (bulk) and a label budget of `min_labels` so that the
    cost-aware rule can stop early; open items the model is unsure about and the crowd split
    on go to an expert. Every scored item keeps its calibrated probabilities (ItemScore) for
    the model-as-voter.
    """

    algorithms.set_torch_threads(TORCH_THREADS)
    version = ModelVersion.objects.filter(job=job, is_active=True).first()
    if version is None:
        return RoutingOutcome()
    cfg = job.spec.routing
    classes = job.classes
    data = data or job_arrays(job=job, slice_field=cfg.slice_field)
    scorer = _Scorer.of(version)
    rows = np.flatnonzero((data.state != Item.State.SETTLED) & scorer.usable(data))
    probs = scorer.probs(data, rows)
    confidence = probs.max(axis=1) if len(rows) else np.zeros(0)
    predicted = probs.argmax(axis=1) if len(rows) else np.zeros(0, dtype=np.int64)

    # Per-row acceptance threshold: the global one, stricter for classes with own targets.
    thresholds = np.full(len(rows), np.inf if version.threshold is None else version.threshold)
    class_thresholds = (version.card or {}).get("class_thresholds") or {}
    for name, value in class_thresholds.items():
        if name in classes:
            mine = predicted == classes.index(name)
            thresholds[mine] = np.maximum(thresholds[mine], np.inf if value is None else value)
    untouched = (
        (data.state[rows] == Item.State.OPEN)
        & (data.n_labels[rows] == 0)
        & (data.n_leases[rows] == 0)
        & ~data.is_gold[rows]
    )
    # Once drawn for audit, an item stays an audit item under later versions: people judge
    # it alone, so it keeps measuring what auto-accept would have delivered.
    drawn_before = np.isin(
        data.ids[rows],
        np.fromiter(
            ItemScore.objects.filter(job=job, audit=True).values_list("item_id", flat=True),
            dtype=np.int64,
        ),
    )
    features = scorer.kind == ModelVersion.Kind.FEATURES
    training = data.human_settled() & scorer.usable(data)
    plan = policy.route_plan(
        probs=probs,
        threshold=thresholds,
        untouched=untouched,
        audit_draw=_uniform_draw(data.ids[rows], salt=job.pk),
        cfg=cfg,
        seed=seed + version.number,
        pool_features=data.features[rows] if features else None,
        labeled_features=data.features[training] if features else None,
        labeled_targets=data.posterior[training].argmax(axis=1) if features else None,
    )
    audit = plan.audit | (drawn_before & (data.state[rows] == Item.State.OPEN))
    accept = plan.accept & ~audit

    _write_scores(job=job, version=version, data=data, rows=rows, probs=probs, audit=audit)
    accepted = _accept(job=job, version=version, data=data, rows=rows[accept], probs=probs[accept])
    _mark_audits(version=version, data=data, rows=rows[audit], probs=probs[audit], classes=classes)
    accepted_set = set(accepted)
    taken = np.isin(
        data.ids[rows], np.fromiter(accepted_set, dtype=np.int64, count=len(accepted_set))
    )

    # The crowd queue: open, not gold, not just accepted.
    queue = (data.state[rows] == Item.State.OPEN) & ~data.is_gold[rows] & ~taken
    queue_rows = rows[queue]
    scores = plan.priority[queue]
    bulk_update_rows(
        Item,
        [
            Item(pk=int(data.ids[r]), priority=float(s))
            for r, s in zip(queue_rows, scores, strict=True)
        ],
        ["priority"],
    )
    # A conditional UPDATE: a lease taken since the read keeps its slot (the budget constraint).
    min_labels = cfg.min_labels
    Item.objects.filter(
        pk__in=data.ids[queue_rows].tolist(),
        state=Item.State.OPEN,
        n_labels=0,
        n_leases=0,
        labels_needed__gt=min_labels,
    ).update(labels_needed=min_labels)

    # Unsure model and a split crowd: more crowd labels rarely settle these; an expert does.
    unsure = (
        queue
        & (data.n_labels[rows] >= 2)
        & data.split_votes[rows]
        & (confidence < cfg.expert_below)
    )
    experts = data.ids[rows[unsure]][: cfg.max_expert_per_pass].tolist()
    if experts:
        for item_id in experts:
            item_send_to_expert(item_id=int(item_id))
    if accepted:
        _after_accept(job=job, item_ids=accepted)
    return RoutingOutcome(
        scored=len(rows),
        accepted=len(accepted),
        audited=int(audit.sum()),
        prioritized=len(queue_rows),
        to_expert=len(experts),
    )


def _after_accept(*, job: Job, item_ids: list[int]) -> None:
    """QC audit sampling of model results (the job's policy audit_rate) and job completion."""

    if job.spec.policy.audit_rate > 0.0:
        for item in Item.objects.filter(pk__in=item_ids).only("id", "job_id"):
            review_audit_maybe(item=item, job=job, source=Item.Source.MODEL)
    job_complete_if_done(job_id=job.pk)


# --------------------------------------------------------------------------- trigger


def job_retrain_due(*, job: Job) -> bool:
    """Whether enough people-settled items arrived since the last version (the seed set
    before the first one; three small queries at most)."""
    cfg = job.spec.routing
    if cfg.mode != "model":
        return False
    settled = Item.objects.filter(
        job=job, state=Item.State.SETTLED, source__in=HUMAN_SOURCES, gold_label__isnull=True
    ).count()
    last = (
        ModelVersion.objects.filter(job=job).order_by("-id").values_list("card", flat=True).first()
    )
    if last is None:
        n_items = Item.objects.filter(job=job, gold_label__isnull=True).count()
        return settled >= policy.seed_size(n_items=n_items, cfg=cfg)
    return settled - int(last.get("n_settled", 0)) >= cfg.retrain_every


def _lock_key(job_id: int) -> str:
    return f"concord:routing:retrain-lock:{job_id}"


def job_retrain_enqueue(*, job: Job) -> bool:
    """Queue a retrain after the current transaction commits; False if one is already queued.

    A cache lock (released by the task) keeps two triggers from training the same job twice.
    """
    if not cache.add(_lock_key(job.pk), 1, timeout=900):
        return False
    enqueue_on_commit("routing.retrain_job", job.pk)
    return True


def job_retrain_release(*, job_id: int) -> None:
    cache.delete(_lock_key(job_id))


def job_retrain_maybe(*, job: Job) -> bool:
    """The cheap trigger the beat (or a settle path) calls: enqueue a retrain when due."""
    return job_retrain_due(job=job) and job_retrain_enqueue(job=job)


def jobs_retrain_check() -> int:
    """Check every running job with model routing; returns how many retrains were queued."""
    jobs = Job.objects.filter(status=Job.Status.RUNNING, routing__mode="model").only(
        "id", "routing"
    )
    return sum(job_retrain_maybe(job=job) for job in jobs)


# --------------------------------------------------------------------------- pre-labels


def prelabel_for_lease(*, job: Job, item: Item) -> str | None:
    """The pre-label to show with a task just leased, recorded as shown; None when off.

    Off by default (routing "prelabels"). The suggestion is the routing model's most likely
    class, else the client's prediction. The routing config is read from a one-minute
    cache because the engine's job rows do not carry it (no query per lease while off).
    Precondition: inside the lease transaction, right after the assignment was created;
    the newest live assignment of the item is that one.
    """
    if "routing" in job.get_deferred_fields():
        cfg = job_routing_cached(job_id=job.pk)
    else:
        cfg = job.spec.routing
    if cfg.mode != "model" or not cfg.prelabels:
        return None
    classes = job.classes
    suggestion = (
        ItemScore.objects.filter(item_id=item.pk).values_list("predicted", flat=True).first()
    )
    source = "model"
    prediction = item.prediction
    if suggestion is None and isinstance(prediction, list) and len(prediction) == len(classes):
        suggestion = classes[max(range(len(classes)), key=lambda i: prediction[i])]
        source = "client"
    if suggestion is None:
        return None
    assignment_id = (
        Assignment.objects.filter(item_id=item.pk, state=Assignment.State.LEASED)
        .order_by("-id")
        .values_list("id", flat=True)
        .first()
    )
    if assignment_id is not None:
        PrelabelExposure.objects.bulk_create(
            [
                PrelabelExposure(
                    assignment_id=assignment_id,
                    job_id=job.pk,
                    item_id=item.pk,
                    prelabel=suggestion,
                    source=source,
                )
            ],
            ignore_conflicts=True,
        )
    return suggestion
