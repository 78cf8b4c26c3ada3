"""Tests of the default aggregator on every shape of input, its calibration, and the
leave-one-dataset-out fit of its constants (no database)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from apps.quality.algorithms import METHODS, aggregate, dawid_skene
from apps.quality.algorithms._answers import Answers
from apps.quality.algorithms.aggregation import one_coin_dawid_skene
from apps.quality.algorithms.confidence import (
    calibrate,
    expected_calibration_error,
    fit_calibration,
)
from apps.quality.algorithms.default import DEFAULTS, _class_prior_pseudo
from apps.quality.algorithms.dependence import dependent_pairs
from bench import default_fit
from bench.aggregation import synthetic
from bench.default_fit import MIN_APW, lodo_choose

from .test_algorithms import _clique_crowd

# ----------------------------------------------------------------------------- input shapes

SHAPES = {
    "zero-answers": (np.zeros(0, int), np.zeros(0, int), np.zeros(0, int), 3, 5, 2),
    "one-worker": (np.arange(6), np.zeros(6, int), np.array([0, 1, 2, 0, 1, 2]), 3, 6, 1),
    "one-class-observed": (
        np.repeat(np.arange(4), 3),
        np.tile(np.arange(3), 4),
        np.zeros(12, int),
        3,
        4,
        3,
    ),
    "items-without-answers": (
        np.array([0, 0, 2, 2]),
        np.array([0, 1, 0, 1]),
        np.array([1, 1, 0, 1]),
        2,
        4,
        2,
    ),
    "duplicate-rows": (
        np.array([0, 0, 0, 1, 1]),
        np.array([0, 0, 1, 0, 1]),
        np.array([0, 1, 1, 1, 1]),
        2,
        2,
        2,
    ),
    "workers-without-answers": (np.array([0, 1]), np.array([0, 0]), np.array([1, 0]), 2, 2, 4),
}


@pytest.mark.parametrize("method", sorted(METHODS), ids=sorted(METHODS))
@pytest.mark.parametrize("shape", sorted(SHAPES), ids=sorted(SHAPES))
def test_every_method_handles_every_shape_without_nan(method, shape):
    tasks, workers, labels, k, n_tasks, n_workers = SHAPES[shape]
    r = aggregate(tasks, workers, labels, k, method=method, n_tasks=n_tasks, n_workers=n_workers)
    assert r.posteriors.shape == (n_tasks, k)
    assert r.confusions.shape == (n_workers, k, k)
    assert np.isfinite(r.posteriors).all()
    assert np.isfinite(r.confusions).all()
    assert np.isfinite(r.class_prior).all()
    np.testing.assert_allclose(r.posteriors.sum(axis=1), 1.0, atol=1e-9)


def test_zero_answers_give_the_uniform_prior():
    r = aggregate(np.zeros(0, int), np.zeros(0, int), np.zeros(0, int), 3, n_tasks=4, n_workers=2)
    np.testing.assert_allclose(r.posteriors, 1.0 / 3)
    assert r.labels.tolist() == [0, 0, 0, 0]


def test_duplicate_rows_keep_the_last_answer():
    # Worker 0 answered item 0 twice (0, then 1): the default counts only the 1.
    tasks, workers, labels = np.array([0, 0, 0]), np.array([0, 0, 1]), np.array([0, 1, 1])
    r = aggregate(tasks, workers, labels, 2, method="default")
    once = aggregate(np.array([0, 0]), np.array([0, 1]), np.array([1, 1]), 2, method="default")
    np.testing.assert_allclose(r.posteriors, once.posteriors)
    assert r.labels.tolist() == [1]


def test_items_without_answers_get_the_class_prior():
    tasks, workers, labels, k, n_tasks, n_workers = SHAPES["items-without-answers"]
    r = aggregate(tasks, workers, labels, k, n_tasks=n_tasks, n_workers=n_workers)
    np.testing.assert_allclose(r.posteriors[1], r.class_prior)
    np.testing.assert_allclose(r.posteriors[3], r.class_prior)


@pytest.mark.parametrize(
    "labels",
    [np.array([0.0, 1.5]), np.array([0.0, np.nan]), np.array([0, None], dtype=object)],
    ids=["fractional", "nan", "none"],
)
@pytest.mark.parametrize("method", sorted(METHODS), ids=sorted(METHODS))
def test_non_integer_labels_are_rejected(method, labels):
    with pytest.raises(ValueError, match="integer"):
        aggregate(np.arange(2), np.arange(2), labels, 2, method=method)


def test_whole_floats_are_accepted():
    r = aggregate(np.arange(2), np.arange(2), np.array([0.0, 1.0]), 2, method="default")
    assert r.labels.tolist() == [0, 1]


def _crowd(n_tasks: int, n_workers: int, per_task: int, k: int, seed: int, acc=(0.55, 0.95)):
    """One-coin workers with known accuracies; distinct workers per task."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, k, n_tasks)
    skill = rng.uniform(*acc, n_workers)
    workers = np.argsort(rng.random((n_tasks, n_workers)), axis=1)[:, :per_task].ravel()
    tasks = np.repeat(np.arange(n_tasks), per_task)
    right = rng.random(tasks.size) < skill[workers]
    wrong = (truth[tasks] + rng.integers(1, k, tasks.size)) % k
    labels = np.where(right, truth[tasks], wrong)
    return tasks, workers, labels, truth


def test_one_answer_per_item_returns_the_answer():
    # 1,000 items, 3 classes, one answer each from 50 workers, no history and no gold.
    tasks, workers, labels, truth = _crowd(1000, 50, 1, 3, seed=1)
    r = aggregate(tasks, workers, labels, 3, method="default")
    np.testing.assert_array_equal(r.labels, labels)
    # The confidence is that of a lone answer: one value, between chance and certainty.
    conf = r.posteriors.max(axis=1)
    assert np.ptp(conf) == 0.0
    assert 1 / 3 < conf[0] < 1.0


def test_one_answer_per_item_confidence_comes_from_gold():
    tasks, workers, labels, truth = _crowd(1000, 50, 1, 3, seed=2, acc=(0.6, 0.8))
    gold = np.full(1000, -1)
    gold[:200] = truth[:200]
    r = aggregate(tasks, workers, labels, 3, method="default", gold=gold)
    np.testing.assert_array_equal(r.labels[200:], labels[200:])
    observed = np.mean(labels[:200] == truth[:200])
    assert abs(r.posteriors[500].max() - observed) < 0.05


def test_two_hundred_classes_within_a_point_of_majority_vote():
    tasks, workers, labels, truth = synthetic(2000, 100, 5, 200, seed=11)
    acc = {
        m: np.mean(aggregate(tasks, workers, labels, 200, method=m).labels == truth)
        for m in ("mv", "default")
    }
    assert acc["default"] >= acc["mv"] - 0.01, acc


# ----------------------------------------------------------------------------- calibration


def test_calibration_keeps_every_label():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(4) * 0.3, 500)
    q = calibrate(p, 3.0, 0.1)
    np.testing.assert_array_equal(p.argmax(axis=1), q.argmax(axis=1))
    np.testing.assert_allclose(q.sum(axis=1), 1.0)
    assert q.max() <= 1 - 0.1 * 3 / 4 + 1e-12


def test_fit_calibration_recovers_a_known_temperature():
    # Posteriors that are the truth's distribution sharpened by T=3: fitting finds T near 3.
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 1.5, (4000, 3))
    true_p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    truth = (rng.random(4000)[:, None] > np.cumsum(true_p, axis=1)).sum(axis=1)
    sharp = np.exp(3 * logits)
    sharp /= sharp.sum(axis=1, keepdims=True)
    cal = fit_calibration(sharp, truth, temperature=1.0, floor=0.0, strength=0.0)
    assert 2.4 < cal.temperature < 3.6
    assert cal.floor < 0.02


def test_expected_calibration_error_of_a_perfect_forecaster_is_small():
    rng = np.random.default_rng(2)
    conf = rng.uniform(0.5, 1.0, 20000)
    hit = rng.random(20000) < conf
    # Sampling noise alone: about 0.01 with 15 bins of 1,333 items.
    assert expected_calibration_error(conf, hit) < 0.02
    assert expected_calibration_error(np.full(1000, 0.99), np.zeros(1000)) == pytest.approx(0.99)


def test_confidence_is_calibrated_on_a_crowd_with_known_worker_matrices():
    """A crowd that follows the model (one-coin workers of known accuracy, 3 answers per item,
    4 classes) with 5% gold. Around a neutral prior the delivered confidence is the accuracy
    (ECE < 0.02); with the production prior (fitted on real crowds, which are more
    overconfident than the model) the 300 gold items pull it most of the way back (< 0.05)."""
    tasks, workers, labels, truth = _crowd(6000, 60, 3, 4, seed=3)
    gold = np.full(truth.size, -1)
    marked = np.random.default_rng(4).choice(truth.size, 300, replace=False)
    gold[marked] = truth[marked]
    scored = gold < 0
    neutral = replace(DEFAULTS, temperature=1.0, floor=0.0)
    for constants, limit in ((neutral, 0.02), (DEFAULTS, 0.05)):
        r = aggregate(tasks, workers, labels, 4, method="default", gold=gold, constants=constants)
        hit = r.labels[scored] == truth[scored]
        assert expected_calibration_error(r.posteriors[scored].max(axis=1), hit) < limit
        assert hit.mean() > 0.85


# ----------------------------------------------------------------------------- scale paths


def test_task_sampled_fit_matches_the_full_fit():
    tasks, workers, labels, truth = _crowd(4000, 40, 5, 3, seed=5)
    full = aggregate(tasks, workers, labels, 3, method="default")
    small = replace(DEFAULTS, fit_answers=5000)
    sampled = aggregate(tasks, workers, labels, 3, method="default", constants=small)
    assert "sampled tasks" in sampled.detail
    assert np.mean(sampled.labels == full.labels) > 0.99
    assert abs(np.mean(sampled.labels == truth) - np.mean(full.labels == truth)) < 0.01


def test_dependence_test_on_sampled_tasks_still_finds_a_clique():
    tasks, workers, labels, _ = _clique_crowd(True)
    ans = Answers(tasks, workers, labels, 2)
    ref = one_coin_dawid_skene(tasks, workers, labels, 2, stopping="objective")
    full = dependent_pairs(ans, ref.confusions, ref.class_prior)
    sampled = dependent_pairs(ans, ref.confusions, ref.class_prior, max_pair_rows=20_000)
    assert sampled.flagged_pairs == full.flagged_pairs == [(8, 9)]
    # The links cover every shared task again, not only the sampled ones.
    assert sorted(sampled.source.tolist()) == sorted(full.source.tolist())


# ----------------------------------------------------------------------------- LODO


def test_lodo_choice_never_lets_a_set_score_itself():
    # Dataset i scores 1.0 on key i and 0.5 elsewhere; a choice that saw its own scores
    # would pick its own key. LODO must pick another.
    names = [f"set{i}" for i in range(5)]
    scores = {
        n: {f"key{j}": (1.0 if i == j else 0.5) for j in range(5)} for i, n in enumerate(names)
    }
    chosen = lodo_choose(scores)
    for i, name in enumerate(names):
        assert chosen[name] != f"key{i}"
    # And a set's own scores cannot move its choice, however large.
    for name in names:
        changed = {n: dict(v) for n, v in scores.items()}
        changed[name] = {key: (100.0 if key == "key4" else -100.0) for key in changed[name]}
        assert lodo_choose(changed)[name] == chosen[name]


def test_lodo_fit_trains_each_fold_without_its_own_data_set(monkeypatch):
    """fit_all on three fake data sets: the accuracy choice and the calibration fit of each
    fold see only the other sets' cases (a dataset-identity check on what reaches them)."""

    names = ["a", "b", "c"]
    keys = [(5.0, 0.0, 0.0, 0.0, 0.0, 9.0, 4.0), (2.5, 0.0, 1.0, 0.0, 0.0, 9.0, 4.0)]
    monkeypatch.setattr(
        default_fit,
        "accuracy_table",
        lambda d: {keys[0]: 0.9 if d == "a" else 0.5, keys[1]: 0.6},
    )

    class FakeRaw:
        def __init__(self, name):
            self.name = name

    monkeypatch.setattr(default_fit, "raw_case", lambda d, case, c: FakeRaw(d))
    monkeypatch.setattr(default_fit, "cases_for", lambda d: [None, None])
    seen: list[set[str]] = []

    def fake_fit(raw, base):
        seen.append({r.name for r in raw})
        return base

    monkeypatch.setattr(default_fit, "fit_calibration_constants", fake_fit)
    fit = default_fit.fit_all({n: n for n in names}, log=lambda m: None)
    # Fold a: on b and c, key 1 wins (0.6 + 0.6 > 0.5 + 0.5); folds b, c see a's 0.9.
    assert fit.fold["a"].shrinkage == 2.5
    assert fit.fold["b"].shrinkage == 5.0
    assert seen[:3] == [{"b", "c"}, {"a", "c"}, {"a", "b"}]
    assert seen[3] == {"a", "b", "c"}  # production: all sets


def test_lodo_ties_go_to_majority_vote():
    """Where the other data sets cannot tell two vote thresholds apart, the fold takes the
    first key of the grid, which is the largest threshold: majority vote rather than a
    model nothing in the training sets supports at that density."""

    assert list(MIN_APW) == sorted(MIN_APW, reverse=True)
    keys = [(2.5, 0.0, 0.0, 0.0, apw, 9.0, 4.0) for apw in MIN_APW]
    scores = {n: dict.fromkeys(keys, 0.8) for n in ("a", "b", "c")}
    assert {key[4] for key in lodo_choose(scores).values()} == {max(MIN_APW)}


# ----------------------------------------------------------------------------- class prior


def test_class_prior_pseudo_counts_follow_the_vote_shares():
    # Two items with votes (2 x class 0) and (class 0, class 1), one item unanswered:
    # soft vote shares over the answered items are (0.75, 0.25).
    ans = Answers(np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1]), np.array([0, 0, 0, 1]), 2, 3)
    c = replace(DEFAULTS, class_prior_strength=0.0, class_prior_anchor=2.0)
    np.testing.assert_allclose(
        _class_prior_pseudo(ans, c), [1.0 + 2 * 2 * 0.75, 1.0 + 2 * 2 * 0.25]
    )
    uniform = replace(DEFAULTS, class_prior_strength=0.5, class_prior_anchor=0.0)
    np.testing.assert_allclose(_class_prior_pseudo(ans, uniform), [2.0, 2.0])


def test_pooled_shrinkage_keeps_the_crowds_class_specific_errors():
    """Every worker says class 1 for a fifth of the class-0 items and never errs on class 1.
    With few answers each, shrinkage toward the pooled matrix keeps that asymmetry in every
    worker's matrix; toward each worker's one-coin form it is flattened."""
    rng = np.random.default_rng(7)
    n, n_workers = 400, 80
    truth = rng.integers(0, 2, n)
    workers = np.argsort(rng.random((n, n_workers)), axis=1)[:, :5].ravel()
    tasks = np.repeat(np.arange(n), 5)
    slip = (truth[tasks] == 0) & (rng.random(tasks.size) < 0.2)
    labels = np.where(slip, 1, truth[tasks])
    common = {"prior": 0.01, "class_prior_smoothing": 1.0, "stopping": "objective"}
    pooled = dawid_skene(tasks, workers, labels, 2, shrinkage=0.0, pooled_shrinkage=5.0, **common)
    onecoin = dawid_skene(tasks, workers, labels, 2, shrinkage=5.0, shrink_to="onecoin", **common)
    # P(answer 1 | truth 0) against P(answer 0 | truth 1), averaged over workers.
    asym = {
        name: float(np.mean(r.confusions[:, 0, 1] - r.confusions[:, 1, 0]))
        for name, r in (("pooled", pooled), ("onecoin", onecoin))
    }
    assert asym["pooled"] > 0.1
    assert asym["pooled"] > asym["onecoin"] + 0.05
