"""Routing services on a digits job: retrain and model cards, auto-accept with audits, version
comparison, strategy priorities, the model as a voter, cost-aware stopping and pre-labels."""

from __future__ import annotations

import random
from datetime import timedelta
from functools import cache

import numpy as np
import pytest
from django.core.cache import cache as django_cache
from django.utils import timezone
from sklearn.datasets import load_digits

from apps.assignments.fastpath import forget_open_jobs
from apps.jobs.models import Item, Job
from apps.pipeline.decide import decide_by_posterior
from apps.pipeline.next import assignment_next
from apps.pipeline.submit import assignment_submit, label_evidence
from apps.quality.matrices import one_coin_confusion
from apps.quality.posterior import item_posterior, item_posterior_from_labels
from apps.routing import algorithms
from apps.routing.models import ItemScore, ModelVersion, PrelabelExposure
from apps.routing.policy import model_vote
from apps.routing.selectors import item_model_vote, job_prelabel_effect
from apps.routing.services import (
    job_retrain,
    job_retrain_due,
    job_route,
    jobs_retrain_check,
)
from tests.routing.factories import score_item, voter_job
from tests.workforce.factories import ClientOrgFactory, make_pool, make_worker

pytestmark = pytest.mark.django_db

DIGITS = [str(c) for c in range(10)]
FAST = {"epochs": 120, "folds": 4, "hidden": 32}


@cache
def digits() -> tuple[np.ndarray, np.ndarray]:
    x, y = load_digits(return_X_y=True)
    # The file is ordered by writer; a client's items arrive mixed, so shuffle once.
    order = np.random.default_rng(0).permutation(len(y))
    return x[order].astype(np.float32), y[order]


@pytest.fixture(autouse=True)
def _fresh_cache():
    # Routing configs are cached per job id; ids repeat across tests on SQLite.
    django_cache.clear()
    yield
    django_cache.clear()


def _posterior(job, answers, item):
    """The item's posterior as a label's decision sees it (the model votes when it routes)."""
    evidence = label_evidence(job=job, item=item, answers=answers, statuses={})
    return item_posterior(
        classes=job.classes, answers=answers, matrices=evidence.matrices, prior=evidence.prior
    )


def _decide(job, item, answers, labels_needed):
    evidence = label_evidence(job=job, item=item, answers=answers, statuses={})
    return decide_by_posterior(
        job=job, evidence=evidence, labels_needed=labels_needed, policy=job.spec.policy
    )


def one_hot_posterior(c: int, k: int = 10, mass: float = 0.999) -> list[float]:
    post = [(1 - mass) / (k - 1)] * k
    post[c] = mass
    return post


def digits_job(
    *,
    n_settled: int,
    n_open: int,
    routing: dict | None = None,
    offset: int = 0,
    settled_at=None,
    policy: dict | None = None,
) -> tuple[Job, np.ndarray]:
    """A running job over digits: the first n_settled settled by the crowd, then open items.

    Returns the job and the true class of every item in id order.
    """
    x, y = digits()
    job = Job.objects.create(
        organization=ClientOrgFactory(),
        name="digits",
        status=Job.Status.RUNNING,
        label_schema={"kind": "single_choice", "classes": DIGITS},
        policy=policy or {"gold_rate": 0.0, "min_labels": 3, "max_labels": 5},
        routing={
            "mode": "model",
            "strategy": "margin",
            "audit_rate": 0.1,
            **FAST,
            **(routing or {}),
        },
        feature_dim=64,
    )
    add_digits(job, range(offset, offset + n_settled), settled=True, settled_at=settled_at)
    add_digits(job, range(offset + n_settled, offset + n_settled + n_open), settled=False)
    return job, y[offset : offset + n_settled + n_open]


def add_digits(job: Job, rows, *, settled: bool, settled_at=None) -> None:
    x, y = digits()
    now = settled_at or timezone.now()
    Item.objects.bulk_create(
        [
            Item(
                job=job,
                external_id=f"d{i}",
                payload={"group": "even" if i % 2 == 0 else "odd"},
                features=x[i].astype("<f4").tobytes(),
                labels_needed=3,
                **(
                    {
                        "state": Item.State.SETTLED,
                        "source": Item.Source.CROWD,
                        "label": DIGITS[y[i]],
                        "confidence": 0.999,
                        "posterior": one_hot_posterior(int(y[i])),
                        "settled_at": now,
                    }
                    if settled
                    else {}
                ),
            )
            for i in rows
        ]
    )


def truth_of(job: Job) -> dict[int, str]:
    _, y = digits()
    return {
        pk: DIGITS[y[int(ext[1:])]]
        for pk, ext in Item.objects.filter(job=job).values_list("id", "external_id")
    }


# --------------------------------------------------------------------------- retrain


def test_retrain_stores_a_version_with_a_complete_card_and_auto_accepts_accurately():
    job, _ = digits_job(
        n_settled=400, n_open=500, routing={"slice_field": "group", "target_accuracy": 0.97}
    )

    result = job_retrain(job_id=job.pk)

    version = result.version
    assert result.activated
    assert version.is_active
    assert version.number == 1
    assert version.kind == "features"
    assert version.parent is None
    assert version.n_train == 400
    assert version.temperature > 0
    assert version.threshold is not None
    model = algorithms.model_from_bytes(bytes(version.weights))
    assert (model.n_features, model.n_classes) == (64, 10)
    card = version.card
    assert set(card) >= {
        "training_size",
        "per_class_accuracy",
        "per_slice_accuracy",
        "ece",
        "ece_before",
        "threshold",
        "temperature",
        "parent",
        "coverage",
    }
    assert card["training_size"] == 400
    assert set(card["per_class_accuracy"]) == set(DIGITS)
    assert set(card["per_slice_accuracy"]) == {"even", "odd"}
    assert sum(s["n"] for s in card["per_slice_accuracy"].values()) == 400
    assert 0 <= card["ece"] < 0.1
    assert version.decision["reason"] == "first version"

    truth = truth_of(job)
    accepted = list(
        Item.objects.filter(job=job, source="model").values_list("id", "label", "result_meta")
    )
    assert result.routing.accepted == len(accepted) > 200
    accuracy = np.mean([truth[pk] == label for pk, label, _ in accepted])
    assert accuracy >= 0.97
    assert all(meta["model_version"] == version.pk for _, _, meta in accepted)
    # The audit share stays open for people, and the model does not vote on it.
    audits = Item.objects.filter(job=job, state="open", result_meta__audit=True)
    assert 0.04 < audits.count() / (len(accepted) + audits.count()) < 0.2
    assert set(ItemScore.objects.filter(audit=True).values_list("item_id", flat=True)) == set(
        audits.values_list("id", flat=True)
    )
    # A second pass keeps the same audit items open and accepts nothing new.
    again = job_route(job=job)
    assert again.accepted == 0
    assert Item.objects.filter(job=job, state="open", result_meta__audit=True).count() == (
        audits.count()
    )
    # Every unsettled item is scored; routed open items may stop after one label.
    assert ItemScore.objects.filter(job=job).count() == 500
    assert not Item.objects.filter(job=job, state="open", labels_needed__gt=1).exists()


def test_a_worse_candidate_does_not_replace_the_active_version():
    early = timezone.now() - timedelta(hours=1)
    job, _ = digits_job(n_settled=300, n_open=100, settled_at=early)
    first = job_retrain(job_id=job.pk).version
    add_digits(job, range(400, 500), settled=True)
    # A crippling weight decay: the candidate underfits badly.
    job.routing = {**job.routing, "model_kind": "softmax", "weight_decay": 30.0}
    job.save(update_fields=["routing"])

    result = job_retrain(job_id=job.pk)

    first.refresh_from_db()
    assert first.is_active
    candidate = result.version
    assert not result.activated
    assert not candidate.is_active
    assert candidate.parent_id == first.pk
    assert candidate.number == 2
    evidence = candidate.decision
    assert evidence["n_compared"] == 100
    assert evidence["candidate_accuracy"] < evidence["active_accuracy"]
    assert evidence["reason"].startswith("kept v1")
    assert ModelVersion.objects.filter(job=job, is_active=True).get() == first


def test_a_better_candidate_replaces_the_active_version():
    early = timezone.now() - timedelta(hours=1)
    job, _ = digits_job(
        n_settled=300,
        n_open=100,
        settled_at=early,
        routing={"model_kind": "softmax", "weight_decay": 30.0},
    )
    weak = job_retrain(job_id=job.pk).version
    add_digits(job, range(400, 500), settled=True)
    routing = {k: v for k, v in job.routing.items() if k not in ("model_kind", "weight_decay")}
    Job.objects.filter(pk=job.pk).update(routing=routing)

    result = job_retrain(job_id=job.pk)

    weak.refresh_from_db()
    assert result.activated
    assert result.version.is_active
    assert not weak.is_active
    assert result.version.decision["reason"].startswith("replaced v1")


def test_too_few_unseen_items_keeps_the_active_version():
    job, _ = digits_job(n_settled=200, n_open=50)
    first = job_retrain(job_id=job.pk).version

    result = job_retrain(job_id=job.pk)

    assert not result.activated
    assert result.version.decision["n_compared"] == 0
    first.refresh_from_db()
    assert first.is_active


def test_no_version_below_min_train_and_none_when_routing_is_off():
    job, _ = digits_job(n_settled=20, n_open=10)
    assert job_retrain(job_id=job.pk).version is None
    assert job_route(job=job).scored == 0
    Job.objects.filter(pk=job.pk).update(routing={"mode": "off"})
    assert job_retrain(job_id=job.pk).reason == "routing is off"
    assert not ModelVersion.objects.exists()


def test_client_predictions_are_calibrated_when_items_have_no_features():
    job = Job.objects.create(
        organization=ClientOrgFactory(),
        name="predictions",
        status=Job.Status.RUNNING,
        label_schema={"kind": "single_choice", "classes": ["a", "b"]},
        policy={"gold_rate": 0.0},
        routing={"mode": "model", "audit_rate": 0.0, "min_train": 50, "target_accuracy": 0.9},
    )
    rng = np.random.default_rng(0)
    # An overconfident client: it says 0.99 and is right 85% of the time.
    truth = rng.integers(0, 2, 400)
    said = np.where(rng.random(400) < 0.85, truth, 1 - truth)
    rows = []
    for i in range(400):
        pred = [0.01, 0.99] if said[i] else [0.99, 0.01]
        settled = i < 300
        rows.append(
            Item(
                job=job,
                external_id=f"p{i}",
                prediction=pred,
                **(
                    {
                        "state": "settled",
                        "source": "crowd",
                        "label": "ab"[truth[i]],
                        "posterior": one_hot_posterior(int(truth[i]), k=2),
                        "settled_at": timezone.now(),
                    }
                    if settled
                    else {}
                ),
            )
        )
    # The model is unsure on this one and the crowd split on it: an expert decides.
    rows.append(
        Item(
            job=job,
            external_id="split",
            prediction=[0.5, 0.5],
            n_labels=2,
            labels_needed=3,
            vote_counts={"a": 1, "b": 1},
        )
    )
    Item.objects.bulk_create(rows)

    result = job_retrain(job_id=job.pk)

    version = result.version
    assert version.kind == "prediction"
    assert version.weights is None
    # Temperature scaling softens 0.99 toward the client's real 85% accuracy.
    assert version.temperature > 1.5
    scores = ItemScore.objects.filter(job=job).exclude(item__external_id="split")
    assert {round(c, 2) for c in scores.values_list("confidence", flat=True)} <= {0.85, 0.86, 0.84}
    # 85% cannot meet a 90% target: nothing is auto-accepted.
    assert version.threshold is None
    assert result.routing.accepted == 0
    assert result.routing.to_expert == 1
    assert Item.objects.get(job=job, external_id="split").state == "expert"


# --------------------------------------------------------------------------- strategies


@pytest.mark.parametrize(
    ("strategy", "kernel"),
    [
        ("margin", algorithms.margin_scores),
        ("entropy", algorithms.entropy_scores),
        ("least_confidence", algorithms.least_confidence_scores),
        ("random", None),
        ("medium_mix", None),
        ("density", None),
        ("committee", None),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_strategy_sets_priorities_and_the_engine_asks_the_top_item_first(strategy, kernel):
    # An unreachable target: nothing is auto-accepted, every open item is queued.
    job, _ = digits_job(
        n_settled=150, n_open=60, routing={"strategy": strategy, "target_accuracy": 0.99999}
    )

    job_retrain(job_id=job.pk)

    rows = list(
        Item.objects.filter(job=job, state="open")
        .order_by("id")
        .values_list("id", "priority", "routing_score__probs")
    )
    assert len(rows) == 60
    priorities = np.array([p for _, p, _ in rows])
    # A committee's vote entropy takes few distinct values; the others are continuous.
    assert np.unique(priorities).size > (1 if strategy == "committee" else 30)
    if kernel is not None:
        # Stored probabilities are rounded to 6 decimals: compare at that resolution.
        expected = kernel(np.array([probs for _, _, probs in rows]))
        np.testing.assert_allclose(priorities, expected, atol=2e-4)
    worker = make_worker()
    make_pool(jobs=[job], workers=[worker])
    task = assignment_next(worker=worker, rng=random.Random(0))
    assert task.item == rows[int(np.argmax(priorities))][0]


def test_fifo_resets_priorities_so_the_queue_runs_in_arrival_order():
    job, _ = digits_job(
        n_settled=100, n_open=20, routing={"strategy": "fifo", "target_accuracy": 0.99999}
    )
    Item.objects.filter(job=job, state="open").update(priority=3.0)

    job_retrain(job_id=job.pk)

    assert set(Item.objects.filter(job=job, state="open").values_list("priority", flat=True)) == {
        0.0
    }


# --------------------------------------------------------------------------- model as voter


def test_the_model_votes_in_the_item_posterior():
    job = voter_job()
    item = Item.objects.create(job=job, external_id="x")
    worker = make_worker()
    answers = [(worker.pk, "dog", "crowd")]
    score_item(item, [0.6, 0.3, 0.1])

    with_model, _ = _posterior(job, answers, item)
    without, _ = item_posterior_from_labels(job=job, answers=answers)

    # A newcomer is a one-coin worker at 0.7: P(dog | y) = 0.7 if y is dog else 0.15.
    column = one_coin_confusion(0.7, 3)[:, 1]
    expected = np.array([0.6, 0.3, 0.1]) * column
    np.testing.assert_allclose(with_model, expected / expected.sum(), rtol=1e-9)
    np.testing.assert_allclose(without, column / column.sum(), rtol=1e-9)


def test_the_model_votes_at_the_weight_of_its_confidence_band():
    # Given a version whose card discounts the vote in [0.5, 0.8) (model and crowd err
    # together there) and keeps it whole in [0.8, 0.9).
    job = voter_job()
    low = Item.objects.create(job=job, external_id="low")
    high = Item.objects.create(job=job, external_id="high")
    score_item(low, [0.6, 0.3, 0.1])
    score_item(high, [0.85, 0.1, 0.05])
    ModelVersion.objects.filter(job=job).update(
        card={
            "vote_weight": 0.75,
            "vote_weight_by_band": {
                "edges": [0.5, 0.8, 0.9, 0.95, 0.99],
                "weights": [0.75, 0.25, 1.0, 0.75, 0.75, 0.75],
                "n": [0, 40, 40, 0, 0, 0],
            },
        }
    )

    low_vote, _ = item_model_vote(item_id=low.pk, n_classes=3)
    high_vote, _ = item_model_vote(item_id=high.pk, n_classes=3)

    np.testing.assert_allclose(low_vote, model_vote(np.array([0.6, 0.3, 0.1]), 0.25))
    np.testing.assert_allclose(high_vote, [0.85, 0.1, 0.05])


def test_an_unsure_people_only_item_asks_the_crowd_up_to_the_reference_cap():
    # Given a routed job's item the model does not vote on, split 3-2 after five labels
    # (below the policy's 0.95): the reference cap buys crowd labels before an expert.
    job = voter_job()
    item = Item.objects.create(job=job, external_id="x", labels_needed=5)
    answers = [(make_worker().pk, label, "crowd") for label in ("cat",) * 3 + ("dog",) * 2]

    decision = _decide(job, item, answers, 5)

    assert job.spec.routing.reference_max_labels > 5
    assert (decision.state, decision.labels_needed) == ("open", 6)
    assert decision.extra["stopping"] == "people_only"


def test_the_model_does_not_vote_on_audit_items_nor_when_routing_is_off():
    job = voter_job()
    audit_item = Item.objects.create(job=job, external_id="audit")
    score_item(audit_item, [0.9, 0.05, 0.05], audit=True)
    off_job = voter_job(mode="off")
    off_item = Item.objects.create(job=off_job, external_id="off")
    score_item(off_item, [0.9, 0.05, 0.05])
    worker = make_worker()
    answers = [(worker.pk, "dog", "crowd")]

    audit_post, _ = _posterior(job, answers, audit_item)
    off_post, _ = _posterior(off_job, answers, off_item)

    column = one_coin_confusion(0.7, 3)[:, 1]
    np.testing.assert_allclose(audit_post, column / column.sum(), rtol=1e-9)
    np.testing.assert_allclose(off_post, column / column.sum(), rtol=1e-9)


@pytest.mark.parametrize(
    ("model_probs", "state", "labels_needed", "stopping"),
    [
        # The model agrees: one label is enough.
        ([0.97, 0.02, 0.01], "settled", 1, "cost_aware"),
        # No model vote: people settle it alone, at the policy's target confidence.
        (None, "open", 2, "people_only"),
        # The model leans the other way: ask again.
        ([0.3, 0.6, 0.1], "open", 2, "cost_aware"),
    ],
    ids=["model-agrees", "no-model", "model-disagrees"],
)
def test_cost_aware_stopping_stops_earlier_when_the_model_agrees(
    model_probs, state, labels_needed, stopping
):
    job = voter_job()
    item = Item.objects.create(job=job, external_id="x", labels_needed=1)
    if model_probs:
        score_item(item, model_probs)
    worker = make_worker()

    decision = _decide(job, item, [(worker.pk, "cat", "crowd")], 1)

    assert (decision.state, decision.labels_needed) == (state, labels_needed)
    assert decision.extra["stopping"] == stopping


def test_a_routed_settle_says_why_the_model_vote_the_posterior_and_the_stop():
    job = voter_job()
    item = Item.objects.create(job=job, external_id="x", labels_needed=1)
    score_item(item, [0.97, 0.02, 0.01])
    worker = make_worker()

    decision = _decide(job, item, [(worker.pk, "cat", "crowd")], 1)

    why = decision.extra["why"]
    assert decision.extra["route"] == "crowd+model"
    assert (why["model_vote"], why["model_vote_confidence"]) == ("cat", 0.97)
    # The stop reads the discounted posterior; the item reports the undiscounted one
    # (apps.routing.policy.reported_confidence), on the same label.
    assert why["posterior_confidence"] == round(max(decision.posterior), 6)
    assert why["reported_confidence"] == round(decision.confidence, 6)
    assert decision.confidence > why["posterior_confidence"]
    assert why["n_labels"] == 1
    assert why["stopped"] == "confident"


def test_class_targets_demand_more_evidence_for_that_class():
    job = voter_job(class_targets={"cat": 0.9999})
    item = Item.objects.create(job=job, external_id="x", labels_needed=1)
    score_item(item, [0.97, 0.02, 0.01])
    worker = make_worker()

    decision = _decide(job, item, [(worker.pk, "cat", "crowd")], 1)

    assert decision.state == "open"


def test_routing_off_keeps_the_quality_engine_unchanged():
    job = voter_job(mode="off")
    item = Item.objects.create(job=job, external_id="x", labels_needed=1)
    score_item(item, [0.97, 0.02, 0.01])
    worker = make_worker()

    decision = _decide(job, item, [(worker.pk, "cat", "crowd")], 1)

    # The policy's min_labels (3) still applies, and no cost-aware metadata is written.
    assert (decision.state, decision.labels_needed) == ("open", 3)
    assert "stopping" not in decision.extra


def test_a_submitted_label_settles_a_routed_item_the_model_agrees_with():
    job = voter_job()
    item = Item.objects.create(job=job, external_id="x", labels_needed=1)
    score_item(item, [0.97, 0.02, 0.01])
    worker = make_worker()
    make_pool(jobs=[job], workers=[worker])

    task = assignment_next(worker=worker, rng=random.Random(0))
    assignment_submit(worker=worker, assignment_id=task.id, label="cat")

    item.refresh_from_db()
    assert (item.state, item.label, item.source, item.n_labels) == ("settled", "cat", "crowd", 1)
    assert item.result_meta["method"] == "posterior+model"


# --------------------------------------------------------------------------- triggers, pre-labels


def test_retrain_is_due_after_retrain_every_newly_settled_items(
    django_capture_on_commit_callbacks,
):
    job, _ = digits_job(n_settled=60, n_open=10, routing={"retrain_every": 30, "min_train": 50})
    assert job_retrain_due(job=job)

    with django_capture_on_commit_callbacks(execute=True):
        assert jobs_retrain_check() == 1  # eager Celery: trains on commit

    assert ModelVersion.objects.filter(job=job).count() == 1
    assert not job_retrain_due(job=job)
    add_digits(job, range(100, 130), settled=True)
    assert job_retrain_due(job=job)


def test_prelabels_show_the_model_suggestion_and_are_measured_on_gold():
    job = voter_job()
    job.routing = {**job.routing, "prelabels": True}
    job.save(update_fields=["routing"])
    item = Item.objects.create(job=job, external_id="x")
    # Gold is mixed in only while real work is left for the worker.
    Item.objects.create(job=job, external_id="y")
    gold = Item.objects.create(job=job, external_id="g", gold_label="dog")
    score_item(item, [0.1, 0.8, 0.1])
    score_item(gold, [0.1, 0.8, 0.1])
    shown, plain = make_worker(), make_worker()
    make_pool(jobs=[job], workers=[shown, plain])

    task = assignment_next(worker=shown, rng=random.Random(0))
    assert task.prelabel == "dog"
    exposure = PrelabelExposure.objects.get()
    assert (exposure.assignment_id, exposure.prelabel, exposure.source) == (task.id, "dog", "model")

    # A gold answer with a pre-label and one without (the switch turned off meanwhile).
    Job.objects.filter(pk=job.pk).update(policy={**job.policy, "gold_rate": 1.0})
    # A bare UPDATE reaches the engine's per-process job cache within a moment; now here.
    forget_open_jobs()
    gold_task = assignment_next(worker=shown, rng=random.Random(0))
    assert gold_task.item == gold.pk
    assignment_submit(worker=shown, assignment_id=gold_task.id, label="dog")
    Job.objects.filter(pk=job.pk).update(routing={**job.routing, "prelabels": False})
    django_cache.clear()
    forget_open_jobs()
    plain_task = assignment_next(worker=plain, rng=random.Random(0))
    assert plain_task.item == gold.pk
    assert plain_task.prelabel is None
    assignment_submit(worker=plain, assignment_id=plain_task.id, label="cat")

    effect = job_prelabel_effect(job=job)

    assert effect["with_prelabel"] == {"n": 1, "correct": 1, "followed": 1, "accuracy": 1.0}
    assert effect["without_prelabel"] == {"n": 1, "correct": 0, "accuracy": 0.0}
    assert effect["difference"] == 1.0


def test_audits_that_fail_the_claim_raise_the_threshold_and_the_card_says_so():
    job, _ = digits_job(n_settled=400, n_open=500, routing={"audit_min": 5})
    first = job_retrain(job_id=job.pk).version
    accepted = Item.objects.filter(job=job, source="model").values_list("result_meta", flat=True)
    audit_items = list(Item.objects.filter(job=job, state="open", result_meta__audit=True))
    # People settle every audit item, each with a label other than the model's.
    for item in audit_items:
        model_label = item.result_meta["model_label"]
        wrong = DIGITS[(DIGITS.index(model_label) + 1) % 10]
        item.state, item.source, item.label = "settled", "crowd", wrong
        item.posterior = one_hot_posterior(DIGITS.index(wrong))
        item.settled_at = timezone.now()
        item.save(update_fields=["state", "source", "label", "posterior", "settled_at"])

    second = job_retrain(job_id=job.pk).version

    assert first.card["claimed_accuracy"] >= 0.95
    assert first.card["threshold_reason"].startswith("qualified")
    why = next(iter(accepted))["why"]
    assert why["threshold"] == first.threshold
    assert why["threshold_reason"] == first.card["threshold_reason"]
    assert why["model_confidence"] >= first.threshold
    assert len(audit_items) >= 5
    assert second.card["n_audited"] == len(audit_items)
    assert second.card["audited_accuracy"] == 0.0
    assert second.card["threshold_reason"].startswith(f"audits 0/{len(audit_items)}")
    assert second.threshold > first.threshold
    assert second.card["threshold_floor"] == second.threshold
    assert 0.0 <= second.card["vote_weight"] <= 1.0
