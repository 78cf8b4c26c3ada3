"""Routing kernels: model, calibration, threshold, query strategies and the model as a voter (no DB)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize_scalar
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from statsmodels.stats.proportion import proportion_confint

from apps.routing.algorithms import (
    CROWD,
    EXPERT,
    STOP,
    apply_temperature,
    calibrate_probabilities,
    choose_threshold,
    clopper_pearson_lower_bound,
    committee_probabilities,
    cost_aware_decision,
    density_weighted_scores,
    entropy_scores,
    expected_calibration_error,
    expected_error_after_labels,
    fit_temperature,
    fit_temperature_from_probabilities,
    kl_disagreement_scores,
    least_confidence_scores,
    margin_scores,
    medium_confidence_order,
    model_crowd_dependence,
    model_crowd_posterior,
    model_from_bytes,
    model_to_bytes,
    negative_log_likelihood,
    one_coin_confusions,
    order_to_scores,
    predict_logits,
    predict_proba,
    query_by_committee_scores,
    random_scores,
    select_batch,
    stream_decisions,
    train_routing_model,
    vote_entropy_scores,
    wilson_lower_bound,
)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    # The models are tiny: extra intra-op threads only add contention on a shared box.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(return_X_y=True)
    return train_test_split(x, y, test_size=0.5, random_state=0, stratify=y)


def _random_probs(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    z = rng.normal(size=(n, k)) * 2
    p = np.exp(z)
    return p / p.sum(axis=1, keepdims=True)


# ----------------------------------------------------------------------------- model


def test_softmax_regression_on_digits_reaches_known_accuracy(digits):
    x_tr, x_te, y_tr, y_te = digits

    model = train_routing_model(x_tr, y_tr, kind="softmax", seed=0)

    accuracy = (predict_proba(model, x_te).argmax(axis=1) == y_te).mean()
    assert accuracy >= 0.955
    assert model.n_train == len(x_tr)
    assert model.n_classes == 10


def test_mlp_on_digits_reaches_known_accuracy(digits):
    x_tr, x_te, y_tr, y_te = digits

    model = train_routing_model(x_tr, y_tr, kind="mlp", hidden=64, seed=0, epochs=300)

    accuracy = (predict_proba(model, x_te).argmax(axis=1) == y_te).mean()
    assert accuracy >= 0.965


@pytest.mark.parametrize("kind", ["softmax", "mlp"], ids=["softmax", "mlp"])
def test_training_is_deterministic_for_a_seed(digits, kind):
    x_tr, x_te, y_tr, _ = digits

    a = train_routing_model(x_tr[:300], y_tr[:300], kind=kind, seed=3, epochs=50)
    b = train_routing_model(x_tr[:300], y_tr[:300], kind=kind, seed=3, epochs=50)

    np.testing.assert_array_equal(predict_logits(a, x_te), predict_logits(b, x_te))


def test_weights_round_trip_through_bytes(digits):
    x_tr, x_te, y_tr, _ = digits
    model = train_routing_model(x_tr, y_tr, kind="mlp", seed=0, epochs=30, device="cpu")

    restored = model_from_bytes(model_to_bytes(model))

    assert isinstance(model_to_bytes(model), bytes)
    assert (restored.kind, restored.hidden, restored.n_features) == ("mlp", 64, 64)
    np.testing.assert_array_equal(predict_logits(restored, x_te), predict_logits(model, x_te))


def test_one_hot_soft_targets_train_the_same_model_as_hard_labels(digits):
    x_tr, x_te, y_tr, _ = digits

    hard = train_routing_model(x_tr, y_tr, seed=0, epochs=40)
    soft = train_routing_model(x_tr, np.eye(10)[y_tr], seed=0, epochs=40)

    np.testing.assert_allclose(predict_proba(soft, x_te), predict_proba(hard, x_te), atol=1e-6)


def test_soft_targets_pull_probabilities_toward_the_posteriors():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    # Every item's label posterior is (0.7, 0.3): the fitted model should say about that.
    targets = np.tile([0.7, 0.3], (200, 1))

    model = train_routing_model(x, targets, seed=0, weight_decay=1e-2)

    np.testing.assert_allclose(predict_proba(model, x).mean(axis=0), [0.7, 0.3], atol=0.01)


def test_zero_sample_weight_equals_dropping_the_rows(digits):
    x_tr, x_te, y_tr, _ = digits
    weight = np.ones(len(x_tr))
    weight[::3] = 0.0
    keep = weight > 0

    weighted = train_routing_model(x_tr, y_tr, sample_weight=weight, seed=0, epochs=60)
    dropped = train_routing_model(x_tr[keep], y_tr[keep], seed=0, epochs=60)

    unweighted = train_routing_model(x_tr, y_tr, seed=0, epochs=60)
    # LBFGS in float32 takes slightly different steps, hence the tolerance; ignoring
    # the weights moves the probabilities an order of magnitude more.
    np.testing.assert_allclose(
        predict_proba(weighted, x_te), predict_proba(dropped, x_te), atol=5e-3
    )
    assert np.abs(predict_proba(unweighted, x_te) - predict_proba(dropped, x_te)).max() > 0.05


# ----------------------------------------------------------------------------- calibration


def _overconfident(seed: int, n: int = 4000, k: int = 5, factor: float = 3.0):
    """True logits z generate the labels; the 'model' reports factor * z (overconfident)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, k)) * 1.5
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    labels = (rng.random(n)[:, None] > np.cumsum(p, axis=1)).sum(axis=1)
    return factor * z, np.minimum(labels, k - 1)


def _reference_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    def nll(log_t: float) -> float:
        z = logits / math.exp(log_t)
        z = z - z.max(axis=1, keepdims=True)
        log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        return float(-log_p[np.arange(len(labels)), labels].mean())

    return math.exp(minimize_scalar(nll, bounds=(-4, 4), method="bounded").x)


def test_temperature_scaling_fixes_an_overconfident_model():
    logits, labels = _overconfident(0)

    fit = fit_temperature(logits, labels)

    before = apply_temperature(logits, 1.0)
    after = apply_temperature(logits, fit.temperature)
    assert fit.temperature == pytest.approx(3.0, rel=0.08)
    assert fit.temperature == pytest.approx(_reference_temperature(logits, labels), rel=1e-3)
    assert fit.nll_after < fit.nll_before
    assert fit.nll_after == pytest.approx(negative_log_likelihood(after, labels), rel=1e-6)
    assert expected_calibration_error(after, labels) < 0.03
    assert expected_calibration_error(before, labels) > 0.1


def test_client_probabilities_calibrate_like_their_logits():
    logits, labels = _overconfident(1)
    probs = apply_temperature(logits, 1.0)

    from_probs = fit_temperature_from_probabilities(probs, labels)
    from_logits = fit_temperature(logits, labels)

    assert from_probs.temperature == pytest.approx(from_logits.temperature, rel=1e-5)
    np.testing.assert_allclose(
        calibrate_probabilities(probs, from_probs.temperature),
        apply_temperature(logits, from_logits.temperature),
        atol=1e-6,
    )


def test_soft_labels_with_one_hot_rows_fit_the_same_temperature():
    logits, labels = _overconfident(2, n=500)

    hard = fit_temperature(logits, labels)
    soft = fit_temperature(logits, np.eye(5)[labels])

    assert soft.temperature == pytest.approx(hard.temperature, rel=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2], ids=["s0", "s1", "s2"])
def test_ece_matches_a_naive_loop(seed):
    rng = np.random.default_rng(seed)
    probs = _random_probs(rng, 300, 4)
    labels = rng.integers(0, 4, 300)
    n_bins = 10

    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    expected = 0.0
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        inside = [i for i in range(300) if lo < conf[i] <= hi]
        if inside:
            gap = np.mean(correct[inside]) - np.mean(conf[inside])
            expected += len(inside) / 300 * abs(gap)

    assert expected_calibration_error(probs, labels, n_bins=n_bins) == pytest.approx(expected)


# ----------------------------------------------------------------------------- threshold


@pytest.mark.parametrize("level", [0.9, 0.95], ids=["90", "95"])
def test_lower_bounds_match_statsmodels(level):
    k = np.array([0, 5, 50, 99, 100, 390])
    n = np.array([10, 10, 60, 100, 100, 400])

    wilson = wilson_lower_bound(k, n, level=level)
    exact = clopper_pearson_lower_bound(k, n, level=level)

    alpha = 2 * (1 - level)  # one-sided bound = lower end of a two-sided interval
    ref_w = [
        proportion_confint(a, b, alpha=alpha, method="wilson")[0]
        for a, b in zip(k, n, strict=False)
    ]
    ref_b = [
        proportion_confint(a, b, alpha=alpha, method="beta")[0] for a, b in zip(k, n, strict=False)
    ]
    np.testing.assert_allclose(wilson, ref_w, atol=1e-9)
    np.testing.assert_allclose(exact, ref_b, atol=1e-9)


def _brute_force_threshold(conf, correct, target, level, bound):
    best = None
    for t in sorted(set(conf.tolist())):
        accepted = conf >= t
        n, k = accepted.sum(), correct[accepted].sum()
        alpha = 2 * (1 - level)
        method = "wilson" if bound == "wilson" else "beta"
        lower = proportion_confint(k, n, alpha=alpha, method=method)[0]
        if lower >= target and (best is None or t < best):
            best = t
    return best


@pytest.mark.parametrize(
    ("seed", "bound"),
    [(0, "wilson"), (1, "wilson"), (2, "clopper_pearson"), (3, "clopper_pearson")],
    ids=["wilson-0", "wilson-1", "cp-0", "cp-1"],
)
def test_threshold_is_the_smallest_that_meets_the_target(seed, bound):
    rng = np.random.default_rng(seed)
    # Rounded confidences create ties, which must be accepted together.
    conf = np.round(rng.uniform(0.3, 1.0, 400), 2)
    correct = (rng.random(400) < conf**0.5).astype(float)

    choice = choose_threshold(conf, correct, target_accuracy=0.9, level=0.95, bound=bound)

    expected = _brute_force_threshold(conf, correct, 0.9, 0.95, bound)
    assert expected is not None
    assert choice.qualified
    assert choice.threshold == expected
    accepted = conf >= choice.threshold
    assert choice.n_accepted == accepted.sum()
    assert choice.accuracy == pytest.approx(correct[accepted].mean())
    assert choice.lower_bound >= 0.9
    assert choice.coverage == pytest.approx(accepted.mean())


def test_no_threshold_qualifies_returns_inf():
    conf = np.linspace(0.5, 1.0, 50)
    correct = np.zeros(50)

    choice = choose_threshold(conf, correct, target_accuracy=0.9)

    assert choice.threshold == math.inf
    assert not choice.qualified
    assert choice.coverage == 0.0
    assert choice.n_accepted == 0


def test_an_unqualified_choice_reports_the_best_cut_not_the_top_item():
    # Given 40 held-out items: the most confident one wrong, the next 30 right, 9 more wrong
    conf = np.linspace(0.99, 0.6, 40)
    correct = np.r_[0.0, np.ones(30), np.zeros(9)]

    # When no cut reaches 0.99
    choice = choose_threshold(conf, correct, target_accuracy=0.99, level=0.9)

    # Then the reported bound is that of the best cut (the top 31 items, 30 right), not of
    # the single top item (0 of 1, bound 0)
    expected = float(wilson_lower_bound(np.array(30), np.array(31), level=0.9))
    assert not choice.qualified
    assert choice.best_n == 31
    assert choice.best_cut == pytest.approx(conf[30])
    assert choice.accuracy == pytest.approx(30 / 31)
    assert choice.lower_bound == pytest.approx(expected)
    assert expected > 0.85


def test_threshold_on_held_out_digits_holds_on_fresh_data(digits):
    # Given a model, a calibration split and an untouched test split
    x_tr, x_rest, y_tr, y_rest = digits
    x_cal, x_te, y_cal, y_te = train_test_split(
        x_rest, y_rest, test_size=0.5, random_state=1, stratify=y_rest
    )
    model = train_routing_model(x_tr, y_tr, kind="softmax", seed=0)
    temp = fit_temperature(predict_logits(model, x_cal), y_cal)
    p_cal = predict_proba(model, x_cal, temperature=temp.temperature)
    p_te = predict_proba(model, x_te, temperature=temp.temperature)

    # When the threshold is chosen on calibration labels for 97% accuracy
    choice = choose_threshold(
        p_cal.max(axis=1),
        (p_cal.argmax(axis=1) == y_cal).astype(float),
        target_accuracy=0.97,
        pool_confidence=p_te.max(axis=1),
    )

    # Then the auto-accepted test items meet the target and cover most of the pool
    accepted = p_te.max(axis=1) >= choice.threshold
    assert choice.qualified
    assert (p_te.argmax(axis=1)[accepted] == y_te[accepted]).mean() >= 0.97
    assert choice.coverage == pytest.approx(accepted.mean())
    assert choice.coverage > 0.7


# ----------------------------------------------------------------------------- strategies


def test_uncertainty_scores_match_naive_definitions():
    rng = np.random.default_rng(0)
    probs = _random_probs(rng, 40, 5)

    lc = [1 - max(row) for row in probs]
    mg = [1 - (sorted(row)[-1] - sorted(row)[-2]) for row in probs]
    en = [-sum(p * math.log(p) for p in row) for row in probs]

    np.testing.assert_allclose(least_confidence_scores(probs), lc)
    np.testing.assert_allclose(margin_scores(probs), mg)
    np.testing.assert_allclose(entropy_scores(probs), en)


def test_random_scores_are_reproducible():
    np.testing.assert_array_equal(random_scores(10, seed=4), random_scores(10, seed=4))
    assert not np.array_equal(random_scores(10, seed=4), random_scores(10, seed=5))


def _naive_medium_order(probs, band, seed):
    conf = probs.max(axis=1)
    band_items = [i for i in range(len(conf)) if band[0] <= conf[i] <= band[1]]
    low = sorted(band_items, key=lambda i: (conf[i], i))
    high = low[::-1]
    rand = list(np.random.default_rng(seed).permutation(len(conf)))
    order, seen = [], set()
    for j in range(len(conf)):
        for stream in (low, high, rand):
            if j < len(stream) and stream[j] not in seen:
                seen.add(stream[j])
                order.append(stream[j])
    return order


@pytest.mark.parametrize("seed", [0, 1, 2], ids=["s0", "s1", "s2"])
def test_medium_confidence_order_matches_naive_round_robin(seed):
    probs = _random_probs(np.random.default_rng(seed), 30, 4)

    order = medium_confidence_order(probs, band=(0.4, 0.8), seed=seed)

    assert order.tolist() == _naive_medium_order(probs, (0.4, 0.8), seed)
    assert sorted(order.tolist()) == list(range(30))
    scores = order_to_scores(order)
    assert np.argsort(-scores, kind="stable").tolist() == order.tolist()


def test_density_weighted_scores_match_a_double_loop():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(25, 4))
    u = rng.random(25)

    scores = density_weighted_scores(u, x, beta=2.0, n_reference=100)

    expected = []
    for i in range(25):
        sims = [
            (1 + x[i] @ x[j] / (np.linalg.norm(x[i]) * np.linalg.norm(x[j]))) / 2 for j in range(25)
        ]
        expected.append(u[i] * np.mean(sims) ** 2)
    np.testing.assert_allclose(scores, expected)


def test_density_weighted_scores_subsample_the_reference_for_large_pools():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 4))
    u = rng.random(300)

    scores = density_weighted_scores(u, x, n_reference=50, seed=7)

    reference = np.random.default_rng(7).choice(300, 50, False)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    expected = u * ((1 + unit @ unit[reference].T) / 2).mean(axis=1)
    np.testing.assert_allclose(scores, expected)


def test_committee_disagreement_matches_naive_counts():
    rng = np.random.default_rng(0)
    committee = np.stack([_random_probs(rng, 12, 3) for _ in range(4)])

    ve = vote_entropy_scores(committee)
    kl = kl_disagreement_scores(committee)

    for i in range(12):
        votes = [int(np.argmax(committee[m, i])) for m in range(4)]
        shares = [votes.count(c) / 4 for c in range(3)]
        assert ve[i] == pytest.approx(-sum(s * math.log(s) for s in shares if s > 0))
        mean = committee[:, i].mean(axis=0)
        divs = [
            sum(p * math.log(p / q) for p, q in zip(committee[m, i], mean, strict=False))
            for m in range(4)
        ]
        assert kl[i] == pytest.approx(np.mean(divs))


def test_query_by_committee_disagrees_most_on_uncertain_items(digits):
    x_tr, x_te, y_tr, y_te = digits

    committee = committee_probabilities(x_tr[:150], y_tr[:150], x_te, n_classes=10, seed=0)
    scores = query_by_committee_scores(
        x_tr[:150], y_tr[:150], x_te, n_classes=10, measure="kl", seed=0
    )

    assert committee.shape == (5, len(x_te), 10)
    np.testing.assert_allclose(scores, kl_disagreement_scores(committee))
    wrong = committee.mean(axis=0).argmax(axis=1) != y_te
    # Items the committee gets wrong are where its members disagree.
    assert scores[wrong].mean() > 2 * scores[~wrong].mean()


def test_select_batch_takes_top_k_outside_the_excluded():
    scores = np.array([0.1, 0.9, 0.5, 0.9, 0.7, 0.3])
    exclude = np.array([False, False, False, True, False, False])

    batch = select_batch(scores, 3, exclude=exclude)

    assert batch.tolist() == [1, 4, 2]
    assert select_batch(scores, 10, exclude=exclude).tolist() == [1, 4, 2, 5, 0]


def test_stream_mode_asks_below_threshold_and_audits_a_share():
    conf = np.random.default_rng(0).uniform(0.5, 1.0, 20000)

    decision = stream_decisions(conf, threshold=0.9, audit_rate=0.05, seed=1)

    below = conf < 0.9
    assert decision.ask[below].all()
    assert not decision.audit[below].any()
    assert (decision.ask[~below] == decision.audit[~below]).all()
    assert decision.audit[~below].mean() == pytest.approx(0.05, abs=0.01)
    single = stream_decisions(0.95, threshold=0.9)
    assert single.ask.tolist() == [False]


# ----------------------------------------------------------------------------- voting


def test_model_crowd_posterior_matches_a_hand_computation():
    # Given model probabilities for one item and two workers' confusion matrices
    model = np.array([[0.5, 0.3, 0.2]])
    c0 = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.1, 0.8]])
    c1 = np.array([[0.6, 0.2, 0.2], [0.3, 0.5, 0.2], [0.25, 0.25, 0.5]])

    # When worker 0 says 1 and worker 1 says 0
    post = model_crowd_posterior(model, [0, 0], [0, 1], [1, 0], np.stack([c0, c1]))

    # Then posterior ∝ model(y) * c0[y, 1] * c1[y, 0]
    unnorm = np.array([0.5 * 0.1 * 0.6, 0.3 * 0.7 * 0.3, 0.2 * 0.1 * 0.25])
    np.testing.assert_allclose(post, [unnorm / unnorm.sum()])


def test_model_crowd_posterior_vectorized_matches_per_item_loop():
    rng = np.random.default_rng(0)
    n, k, w = 20, 4, 6
    model = _random_probs(rng, n, k)
    conf = np.stack([_random_probs(rng, k, k) for _ in range(w)])
    items = rng.integers(0, n, 60)
    workers = rng.integers(0, w, 60)
    labels = rng.integers(0, k, 60)

    post = model_crowd_posterior(model, items, workers, labels, conf)

    for i in range(n):
        p = model[i].copy()
        for it, wk, lb in zip(items, workers, labels, strict=False):
            if it == i:
                p *= conf[wk, :, lb]
        np.testing.assert_allclose(post[i], p / p.sum(), rtol=1e-9)


@pytest.mark.parametrize(
    ("answer_weight", "expected_b"),
    [(1.0, 0.81 / 0.82), (0.5, 0.9), ([1.0, 0.0], 0.9), (0.0, 0.5)],
    ids=["independent", "tempered-by-half", "second-dropped", "dropped"],
)
def test_answer_weight_tempers_each_labels_log_likelihood(answer_weight, expected_b):
    # Given two workers at 0.9 (one-coin, two classes) who both say b, a uniform prior
    conf = one_coin_confusions(np.array([0.9, 0.9]), 2)

    # When their labels count at `answer_weight`
    post = model_crowd_posterior(
        None, [0, 0], [0, 1], [1, 1], conf, n_items=1, answer_weight=answer_weight
    )

    # Then P(b) = 0.9^(w1+w2) / (0.9^(w1+w2) + 0.1^(w1+w2)): two independent labels give
    # 0.81/0.82, two at half weight count as one label (0.9), none leaves the prior
    assert post[0, 1] == pytest.approx(expected_b)


def test_crowd_only_posterior_uses_the_class_prior():
    conf = one_coin_confusions(np.array([0.9]), 2)

    post = model_crowd_posterior(None, [0], [0], [1], conf, n_items=2, class_prior=[0.8, 0.2])

    np.testing.assert_allclose(post[0], [0.8 * 0.1, 0.2 * 0.9] / np.array(0.08 + 0.18))
    np.testing.assert_allclose(post[1], [0.8, 0.2])


@pytest.mark.parametrize("n_labels", [1, 2, 3], ids=["h1", "h2", "h3"])
def test_expected_error_after_labels_matches_enumeration(n_labels):
    rng = np.random.default_rng(n_labels)
    post = _random_probs(rng, 5, 3)
    conf = _random_probs(rng, 3, 3)

    got = expected_error_after_labels(post, conf, n_labels)

    for i in range(5):
        expected_correct = 0.0
        for seq in itertools.product(range(3), repeat=n_labels):
            joint = post[i] * np.prod([conf[:, s] for s in seq], axis=0)
            expected_correct += joint.max()
        assert got[i] == pytest.approx(1 - expected_correct)


def _decide(post, n_labels=1, **overrides):
    kwargs = dict(
        crowd_confusion=one_coin_confusions(np.array([0.8]), 3)[0],
        label_price=1.0,
        value_per_correct=20.0,
        max_labels=5,
        target_confidence=0.95,
    )
    kwargs.update(overrides)
    return cost_aware_decision(np.asarray(post, dtype=float), np.asarray(n_labels), **kwargs)


def test_cost_aware_stopping_stops_when_confident_and_asks_when_not():
    decision = _decide([[0.97, 0.02, 0.01], [0.5, 0.4, 0.1]], n_labels=[2, 1])

    assert decision.action.tolist() == [STOP, CROWD]
    assert decision.confident.tolist() == [True, False]
    np.testing.assert_allclose(decision.error_now, [0.03, 0.5])


def test_cost_aware_stopping_respects_the_price():
    post = [[0.6, 0.3, 0.1]]

    cheap = _decide(post, label_price=0.5)
    dear = _decide(post, label_price=50.0)

    assert cheap.action.tolist() == [CROWD]
    assert dear.action.tolist() == [STOP]
    # The net value of asking is exactly value x error reduction minus the price paid.
    err_1 = expected_error_after_labels(np.array(post), one_coin_confusions([0.8], 3)[0], 1)
    err_2 = expected_error_after_labels(np.array(post), one_coin_confusions([0.8], 3)[0], 2)
    best = max(20 * (0.4 - err_1[0]) - 0.5, 20 * (0.4 - err_2[0]) - 1.0)
    assert cheap.crowd_value[0] == pytest.approx(best)


def test_cost_aware_stopping_honours_per_class_targets():
    post = [[0.96, 0.03, 0.01], [0.03, 0.96, 0.01]]

    per_class = _decide(post, value_per_correct=500.0, target_confidence=[0.95, 0.99, 0.95])
    uniform = _decide(post, value_per_correct=500.0, target_confidence=0.95)

    assert per_class.action.tolist() == [STOP, CROWD]
    assert uniform.action.tolist() == [STOP, STOP]


def test_cost_aware_stopping_caps_labels_and_escalates_to_an_expert():
    post = [[0.5, 0.45, 0.05]]
    expert = one_coin_confusions(np.array([0.99]), 3)[0]

    capped = _decide(post, n_labels=5)
    escalated = _decide(post, n_labels=5, expert_confusion=expert, expert_price=5.0)
    too_dear = _decide(post, n_labels=5, expert_confusion=expert, expert_price=100.0)

    assert capped.action.tolist() == [STOP]
    assert capped.crowd_value[0] == -np.inf
    assert escalated.action.tolist() == [EXPERT]
    assert too_dear.action.tolist() == [STOP]


_SAYS_0, _SAYS_1, _NO_ANSWER = [0.8, 0.2], [0.2, 0.8], [1.0, 1.0]


@pytest.mark.parametrize(
    ("first", "together", "lift"),
    [
        # Where the model is wrong (truth 1), the first answer says the model's class too.
        ([_SAYS_0, _SAYS_0, _SAYS_0, _SAYS_0], 0.5, 2.0),
        # The first answer errs as often (one of each pair), no more on the model's errors.
        ([_SAYS_0, _SAYS_1, _SAYS_0, _SAYS_1], 0.25, 1.0),
    ],
    ids=["err-together", "independent"],
)
def test_model_crowd_dependence_measures_joint_errors_against_independence(first, together, lift):
    # Four items in the [0.5, 0.8) band, all labelled 0 by the model; two are truly 1.
    # A fifth, in the top band, has no crowd answer: counted for the model, not the crowd.
    probs = np.array([[0.7, 0.3]] * 4 + [[0.995, 0.005]])
    targets = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
    likelihood = np.array([*first, _NO_ANSWER])

    dep = model_crowd_dependence(probs, targets, likelihood)

    low, top = dep.n.index(4), len(dep.edges)
    assert dep.n[top] == 1
    assert (dep.model_error[low], dep.crowd_error[low]) == (0.5, 0.5)
    assert dep.together[low] == together
    assert dep.lift[low] == pytest.approx(lift)
    assert (dep.model_error[top], dep.crowd_error[top], dep.lift[top]) == (0.0, 0.0, None)
    # Every item was labelled 0 (three truly 0, two truly 1), each cell starting at 0.5.
    np.testing.assert_allclose(dep.confusion, [[3.5 / 4, 0.5 / 4], [2.5 / 3, 0.5 / 3]])
    assert list(dep.as_card()["by_confidence"]) == ["[0.5, 0.8)", "[0.99, 1]"]
