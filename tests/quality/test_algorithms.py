"""Tests of the pure quality kernels against hand-made cases and independent references.

No database is touched. Crowd-Kit 1.4.2, krippendorff, statsmodels and scikit-learn are
the references; Crowd-Kit runs are cached per session because some of them are slow.
Duplicated (task, worker) rows keep the LAST answer, identically for both sides
(tests/quality/crowd_data.py).
"""

from __future__ import annotations

import warnings

import krippendorff
import numpy as np
import pytest
from crowdkit.aggregation import (
    GLAD,
    MACE,
    DawidSkene,
    MajorityVote,
    OneCoinDawidSkene,
    Wawa,
)
from sklearn.metrics import cohen_kappa_score
from statsmodels.stats.inter_rater import fleiss_kappa as sm_fleiss
from statsmodels.stats.proportion import proportion_confint

from apps.quality.algorithms import (
    METHODS,
    aggregate,
    cohen_kappa,
    cohen_kappa_ci,
    count_matrix,
    dawid_skene,
    dedupe_last,
    dependence,
    fleiss_kappa,
    fleiss_kappa_ci,
    gold_scores,
    item_agreement,
    item_posterior,
    krippendorff_alpha,
    krippendorff_alpha_ci,
    one_coin_dawid_skene,
    worker_consensus_kappa,
    worker_pair_labels,
)
from apps.quality.algorithms._answers import Answers
from apps.quality.algorithms.dependence import dependent_pairs

from .crowd_data import dataset_names, load

ALL = dataset_names()
FIXED_RATERS = ["duck", "sentiment", "dog", "rte", "temp", "wsd", "polarity_amt", "product"]
SMALL = ["duck", "wsd", "temp"]  # where Crowd-Kit's GLAD / MACE take seconds, not minutes
TOLERANCE_PTS = 0.5


# ----------------------------------------------------------------------------- crowd-kit cache


def _ck_predict(model, frame, n_tasks: int) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lab = model.fit_predict(frame)
    pred = np.full(n_tasks, -1)
    pred[lab.index.to_numpy()] = lab.to_numpy()
    return pred


@pytest.fixture(scope="session")
def crowdkit():
    """Lazily computed Crowd-Kit accuracies, cached for the whole session by (method, dataset)."""

    cache: dict[tuple[str, str], tuple[float, object]] = {}

    def run(method: str, name: str) -> tuple[float, object]:
        if (method, name) not in cache:
            d = load(name)
            frame = d.frame()
            model = {
                "mv": MajorityVote,
                "wmv": Wawa,
                "ds": lambda: DawidSkene(n_iter=100),
                "ds_full": lambda: DawidSkene(n_iter=100, tol=-np.inf),
                "onecoin": lambda: OneCoinDawidSkene(n_iter=100),
                "onecoin_full": lambda: OneCoinDawidSkene(n_iter=100, tol=-np.inf),
                "glad": GLAD,
                "mace": MACE,
            }[method]()
            if method == "mace":
                # Crowd-Kit's MACE indexes its strategy counts by sorted worker / label names
                # but its E-step by order of appearance; feeding rows in sorted order makes the
                # two agree, so we compare with the model as published, not with that mix-up.
                frame = frame.sort_values(["worker", "label"], kind="stable")
            pred = _ck_predict(model, frame, d.n_tasks)
            cache[(method, name)] = (d.accuracy(pred), model)
        return cache[(method, name)]

    return run


def _ours(method: str, name: str, **options) -> float:
    d = load(name)
    r = aggregate(
        d.tasks,
        d.workers,
        d.labels,
        d.n_classes,
        method=method,
        n_tasks=d.n_tasks,
        n_workers=d.n_workers,
        **options,
    )
    return d.accuracy(r.labels)


# ----------------------------------------------------------------------------- tiny inputs


def _perfect_and_spammer(n_tasks: int = 40, seed: int = 0):
    """Three good workers (90%), one perfect worker and one spammer who always answers 0."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 2, n_tasks)
    rows = []
    for w, acc in enumerate([1.0, 0.9, 0.9, 0.9]):
        correct = rng.random(n_tasks) < acc
        rows.append(
            np.column_stack(
                [np.arange(n_tasks), np.full(n_tasks, w), np.where(correct, truth, 1 - truth)]
            )
        )
    rows.append(np.column_stack([np.arange(n_tasks), np.full(n_tasks, 4), np.zeros(n_tasks, int)]))
    a = np.concatenate(rows)
    return a[:, 0], a[:, 1], a[:, 2], truth


@pytest.mark.parametrize("method", sorted(METHODS), ids=sorted(METHODS))
def test_perfect_worker_and_spammer_recover_truth(method):
    tasks, workers, labels, truth = _perfect_and_spammer()
    r = aggregate(tasks, workers, labels, 2, method=method)
    assert r.posteriors.shape == (40, 2)
    np.testing.assert_allclose(r.posteriors.sum(axis=1), 1.0, atol=1e-12)
    assert (r.labels == truth).mean() >= 0.95
    assert r.confusions.shape == (5, 2, 2)
    if method not in ("mv",):
        assert r.skills[0] > r.skills[4]


def test_dawid_skene_spots_the_spammer():
    tasks, workers, labels, truth = _perfect_and_spammer()
    r = dawid_skene(tasks, workers, labels, 2)
    assert (r.labels == truth).mean() >= 0.95
    # The spammer answers 0 whatever the truth: both rows of their matrix put mass on 0.
    assert r.confusions[4, 1, 0] > 0.95
    assert r.confusions[4, 0, 0] > 0.95
    assert r.confusions[0, 0, 0] > 0.9
    assert r.confusions[0, 1, 1] > 0.9
    assert r.converged
    assert r.n_iter < 100


def test_convergence_flag_reports_max_iter():
    d = load("web")
    r = dawid_skene(d.tasks, d.workers, d.labels, d.n_classes, max_iter=2, tol=0.0)
    assert (r.n_iter, r.converged) == (2, False)
    r = dawid_skene(d.tasks, d.workers, d.labels, d.n_classes, max_iter=500, tol=1e-6)
    assert r.converged
    assert r.n_iter < 500


@pytest.mark.parametrize("method", sorted(METHODS), ids=sorted(METHODS))
def test_deterministic_for_fixed_seed(method):
    d = load("wsd")
    options = {"seed": 3} if method == "mace" else {}
    a = aggregate(d.tasks, d.workers, d.labels, d.n_classes, method=method, **options)
    b = aggregate(d.tasks, d.workers, d.labels, d.n_classes, method=method, **options)
    np.testing.assert_array_equal(a.posteriors, b.posteriors)
    np.testing.assert_array_equal(a.confusions, b.confusions)


def test_warm_start_prior_flips_a_first_label_posterior():
    # Given worker 0 who, in earlier jobs, always answered 1 for true 0 and 0 for true 1,
    # and a new task that only worker 0 has labeled (with label 1).
    tasks, workers, labels, _ = _perfect_and_spammer()
    workers = workers + 1  # make room for worker 0
    tasks = np.append(tasks, 40)
    workers = np.append(workers, 0)
    labels = np.append(labels, 1)
    history = np.zeros((6, 2, 2))
    history[0] = [[0.0, 50.0], [50.0, 0.0]]
    # When aggregated without, then with that history as a Dirichlet prior,
    cold = dawid_skene(tasks, workers, labels, 2)
    warm = dawid_skene(tasks, workers, labels, 2, prior=history + 0.01)
    # Then the new task follows the label without history, and is flipped with it.
    assert cold.posteriors[40, 1] > 0.5
    assert warm.posteriors[40, 0] > 0.95
    # And item_posterior from stored matrices gives the same answer without any EM.
    post = item_posterior([0], [1], warm.confusions, warm.class_prior)
    np.testing.assert_allclose(post, warm.posteriors[40], atol=1e-9)


def test_warm_start_from_previous_run_converges_immediately():
    d = load("dog")
    first = dawid_skene(d.tasks, d.workers, d.labels, d.n_classes, tol=1e-10, max_iter=500)
    again = dawid_skene(
        d.tasks,
        d.workers,
        d.labels,
        d.n_classes,
        init_confusions=first.confusions,
        init_class_prior=first.class_prior,
        tol=1e-10,
    )
    assert again.n_iter <= 2
    np.testing.assert_allclose(again.posteriors, first.posteriors, atol=5e-3)


def test_item_posterior_matches_hand_computation():
    conf = np.array([[[0.9, 0.1], [0.2, 0.8]], [[0.6, 0.4], [0.4, 0.6]]])
    prior = np.array([0.7, 0.3])
    post = item_posterior([0, 1, -1], [1, 1, 0], conf, prior)
    mean = conf.mean(axis=0)
    un = prior * conf[0, :, 1] * conf[1, :, 1] * mean[:, 0]
    np.testing.assert_allclose(post, un / un.sum(), rtol=1e-12)
    np.testing.assert_allclose(item_posterior([], [], conf, prior), prior)


def test_dedupe_keeps_last_answer():
    keep = dedupe_last(np.array([0, 0, 1, 0]), np.array([5, 5, 5, 6]))
    np.testing.assert_array_equal(keep, [False, True, True, True])


def test_one_coin_skills_are_accuracies():
    tasks, workers, labels, truth = _perfect_and_spammer(n_tasks=400)
    r = one_coin_dawid_skene(tasks, workers, labels, 2)
    assert r.skills[0] > 0.97
    assert 0.85 < r.skills[1] < 0.95
    assert 0.4 < r.skills[4] < 0.6


# ----------------------------------------------------------------------------- vs Crowd-Kit


@pytest.mark.parametrize("name", ["duck", "wsd", "dog"], ids=["duck", "wsd", "dog"])
def test_dawid_skene_matches_crowdkit_posteriors(name):
    """Same model, same start (soft MV), same number of EM steps: same posteriors."""

    d = load(name)
    ck = DawidSkene(n_iter=5, tol=-np.inf)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ck.fit(d.frame())
    ours = dawid_skene(
        d.tasks,
        d.workers,
        d.labels,
        d.n_classes,
        prior=1e-10,
        class_prior_smoothing=0.0,
        max_iter=5,
        tol=-1.0,
    )
    theirs = ck.probas_.reindex(index=range(d.n_tasks), columns=range(d.n_classes)).to_numpy()
    # Crowd-Kit clips counts at 1e-10 where we add 1e-10: differences stay below 1e-4.
    np.testing.assert_allclose(ours.posteriors, theirs, atol=1e-4)


@pytest.mark.parametrize(
    "method", ["mv", "wmv", "ds", "onecoin"], ids=["mv", "wawa", "ds", "onecoin"]
)
def test_accuracy_not_below_crowdkit(method, crowdkit):
    names = [n for n in ALL if not (method == "onecoin" and n == "relevance")]  # 40 s in Crowd-Kit
    worst = []
    for name in names:
        # Our DS / one-coin stop as Crowd-Kit does by default (when its per-answer ELBO
        # surrogate stops rising, which on the zencrowd sets and web is after 2-3 steps), so
        # they are compared with Crowd-Kit's default runs.
        ref, _ = crowdkit(method, name)
        worst.append((_ours(method, name) - ref) * 100)
    assert min(worst) >= -TOLERANCE_PTS, str(
        dict(zip(names, np.round(worst, 2).tolist(), strict=True))
    )


@pytest.mark.parametrize("name", ["zencrowd_us", "web"], ids=["zencrowd_us", "web"])
def test_run_to_convergence_matches_crowdkit_run_to_convergence(name, crowdkit):
    """With stopping="objective" EM runs to convergence; so does Crowd-Kit with tol=-inf."""
    d = load(name)
    for method, fn in (("ds", dawid_skene), ("onecoin", one_coin_dawid_skene)):
        ref, _ = crowdkit(f"{method}_full", name)
        r = fn(
            d.tasks,
            d.workers,
            d.labels,
            d.n_classes,
            n_tasks=d.n_tasks,
            n_workers=d.n_workers,
            stopping="objective",
            tol=1e-9,
            max_iter=500,
        )
        assert r.converged
        assert (d.accuracy(r.labels) - ref) * 100 >= -TOLERANCE_PTS, method


@pytest.mark.parametrize("method", ["glad", "mace"], ids=["glad", "mace"])
@pytest.mark.parametrize("name", SMALL, ids=SMALL)
def test_slow_methods_not_below_crowdkit(method, name, crowdkit):
    ref, _ = crowdkit(method, name)
    assert (_ours(method, name) - ref) * 100 >= -TOLERANCE_PTS


def test_default_beats_crowdkit_best_fast_method_mean(crowdkit):
    """Default vs Crowd-Kit's MV / Wawa / DS / OneCoin (GLAD and MACE are too slow to sweep here;
    in bench/aggregation.py they are below DS on these sets anyway)."""
    ck_means = {}
    for m in ["mv", "wmv", "ds"]:
        ck_means[m] = np.mean([crowdkit(m, n)[0] for n in ALL])
    ours = np.mean([_ours("default", n) for n in ALL])
    assert ours >= max(ck_means.values()), (ours, ck_means)
    assert ours >= 0.855


@pytest.mark.xfail(
    strict=True,
    reason="2.1.0: in-sample mean 0.8612 against 0.8618 needed; the leave-one-dataset-out "
    "fit (bench/default_fit.py) now weighs shortfalls below majority vote at 2-5 answers per "
    "item, which costs 0.2 points of the all-answers mean (F8 puts sparse robustness first)",
)
def test_default_reaches_one_point_above_crowdkit_best(crowdkit):
    best = max(np.mean([crowdkit(m, n)[0] for n in ALL]) for m in ["mv", "wmv", "ds"])
    assert np.mean([_ours("default", n) for n in ALL]) >= best + 0.01


def test_default_within_two_points_of_crowdkit_best_on_every_dataset(crowdkit):
    """Against the best of Crowd-Kit's MV / Wawa / DS / OneCoin per dataset (GLAD and MACE
    are not swept here for time; bench/aggregation.py includes them where it runs them).

    2.5 points since 2.0.0: the 2-point bound held for constants chosen while looking at
    these sets; the constants fitted leave-one-dataset-out (bench/default_fit.py) trade
    zencrowd_all (-2.16) and zencrowd_in (-2.01) for sparse-density robustness."""
    gaps = {}
    for name in ALL:
        methods = ["mv", "wmv", "ds"] + ([] if name == "relevance" else ["onecoin"])
        best = max(crowdkit(m, name)[0] for m in methods)
        gaps[name] = round((_ours("default", name) - best) * 100, 2)
    assert min(gaps.values()) >= -2.5, gaps


# ----------------------------------------------------------------------------- agreement


@pytest.mark.parametrize("name", ALL, ids=ALL)
def test_krippendorff_alpha_matches_package(name):
    d = load(name)
    counts = count_matrix(d.tasks, d.labels, d.n_classes, d.n_tasks)
    ref = krippendorff.alpha(value_counts=counts, level_of_measurement="nominal")
    assert krippendorff_alpha(counts) == pytest.approx(ref, abs=1e-9)


@pytest.mark.parametrize("name", FIXED_RATERS, ids=FIXED_RATERS)
def test_fleiss_kappa_matches_statsmodels(name):
    d = load(name)
    counts = count_matrix(d.tasks, d.labels, d.n_classes, d.n_tasks)
    assert fleiss_kappa(counts) == pytest.approx(sm_fleiss(counts), abs=1e-9)


@pytest.mark.parametrize(
    "name", ["dog", "sentiment", "rte", "web"], ids=["dog", "sentiment", "rte", "web"]
)
def test_cohen_kappa_matches_sklearn(name):
    d = load(name)
    busiest = np.argsort(-np.bincount(d.workers))[:2]
    a, b = worker_pair_labels(d.tasks, d.workers, d.labels, *busiest)
    assert a.size > 10
    assert cohen_kappa(a, b, d.n_classes) == pytest.approx(cohen_kappa_score(a, b), abs=1e-9)
    # Every worker vs the consensus label, vectorised, against sklearn one worker at a time.
    consensus = aggregate(d.tasks, d.workers, d.labels, d.n_classes, method="ds").labels[d.tasks]
    kappas = worker_consensus_kappa(d.workers, d.labels, consensus, d.n_classes, d.n_workers)
    for w in busiest:
        sel = d.workers == w
        assert kappas[w] == pytest.approx(
            cohen_kappa_score(d.labels[sel], consensus[sel]), abs=1e-9
        )


def test_item_agreement_is_top_share():
    counts = np.array([[3, 1, 0], [0, 0, 0], [1, 1, 2]])
    np.testing.assert_allclose(item_agreement(counts), [0.75, np.nan, 0.5])


def test_bootstrap_intervals_bracket_estimates_and_per_class_matches_one_vs_rest():
    d = load("dog")
    counts = count_matrix(d.tasks, d.labels, d.n_classes, d.n_tasks)
    for fn, point in ((krippendorff_alpha_ci, krippendorff_alpha), (fleiss_kappa_ci, fleiss_kappa)):
        est = fn(counts, n_boot=400, seed=1)
        assert est.value == pytest.approx(point(counts), abs=1e-12)
        assert est.low < est.value < est.high
        assert est.high - est.low < 0.1
        assert np.all(est.per_class_low <= est.per_class)
        assert np.all(est.per_class <= est.per_class_high)
        again = fn(counts, n_boot=400, seed=1)  # seeded: identical
        assert (again.low, again.high) == (est.low, est.high)
        np.testing.assert_array_equal(again.per_class_low, est.per_class_low)
    c = 2
    ovr = np.column_stack([counts[:, c], counts.sum(axis=1) - counts[:, c]])
    est = krippendorff_alpha_ci(counts, n_boot=50)
    assert est.per_class[c] == pytest.approx(
        krippendorff.alpha(value_counts=ovr, level_of_measurement="nominal"), abs=1e-9
    )
    a, b = worker_pair_labels(
        d.tasks, d.workers, d.labels, *np.argsort(-np.bincount(d.workers))[:2]
    )
    k = cohen_kappa_ci(a, b, d.n_classes, n_boot=400)
    assert k.low <= k.value <= k.high
    assert k.value == pytest.approx(cohen_kappa(a, b, d.n_classes), abs=1e-12)


# ----------------------------------------------------------------------------- gold


def test_gold_scores_wilson_and_posterior():
    workers = np.array([0, 0, 0, 0, 1, 1, 2])
    labels = np.array([1, 1, 1, 0, 0, 1, 1])
    gold = np.array([1, 1, 1, 1, 1, 1, 1])
    s = gold_scores(workers, labels, gold, n_workers=4)
    np.testing.assert_allclose(s.accuracy[:3], [0.75, 0.5, 1.0])
    assert np.isnan(s.accuracy[3])
    assert np.isnan(s.wilson_low[3])
    np.testing.assert_allclose(s.posterior_mean[:4], [4 / 6, 2 / 4, 2 / 3, 1 / 2])

    lo, hi = proportion_confint(3, 4, alpha=0.05, method="wilson")
    assert (s.wilson_low[0], s.wilson_high[0]) == pytest.approx((lo, hi), abs=1e-9)


# ----------------------------------------------------------------------------- dependence


def _clique_crowd(correlated: bool, seed: int = 0):
    """600 binary tasks, 8 independent workers (75% accurate) answering 3 tasks in 8, and two
    heavy workers on every task; if `correlated`, the heavy pair shares one error stream."""
    rng = np.random.default_rng(seed)
    n_tasks = 600
    truth = (rng.random(n_tasks) < 0.3).astype(np.int64)
    tasks, workers, labels = [], [], []
    for w in range(8):
        t = np.flatnonzero(rng.random(n_tasks) < 3 / 8)
        wrong = rng.random(t.size) < 0.25
        tasks.append(t)
        workers.append(np.full(t.size, w))
        labels.append(np.where(wrong, 1 - truth[t], truth[t]))
    shared = rng.random(n_tasks) < 0.25
    for w in (8, 9):
        wrong = shared if correlated else rng.random(n_tasks) < 0.25
        tasks.append(np.arange(n_tasks))
        workers.append(np.full(n_tasks, w))
        labels.append(np.where(wrong, 1 - truth, truth))
    return np.concatenate(tasks), np.concatenate(workers), np.concatenate(labels), truth


@pytest.mark.parametrize("correlated", [True, False], ids=["clique", "independent"])
def test_dependent_pairs_flags_only_a_planted_clique(correlated):
    tasks, workers, labels, truth = _clique_crowd(correlated)
    ans = Answers(tasks, workers, labels, 2)
    ref = one_coin_dawid_skene(tasks, workers, labels, 2, stopping="objective")
    pairs = dependent_pairs(ans, ref.confusions, ref.class_prior)
    assert pairs.first.size > 0  # every pair shares >= 50 tasks, so all were tested
    if correlated:
        assert pairs.flagged_pairs == [(8, 9)]
        r = aggregate(tasks, workers, labels, 2, method="default")
        assert "8-9" in r.detail
        plain = aggregate(
            tasks,
            workers,
            labels,
            2,
            method="ds",
            shrinkage=5.0,
            shrink_to="onecoin",
            prior=0.01,
            class_prior_smoothing=1.0,
            stopping="objective",
        )
        # Undiscounted, the pair's shared errors outvote the light workers.
        assert np.mean(r.labels == truth) >= np.mean(plain.labels == truth) + 0.05
    else:
        assert pairs.flagged_pairs == []
        r = aggregate(tasks, workers, labels, 2, method="default")
        assert r.detail.startswith("ds+onecoin-shrinkage(")
        assert "dependent pairs" not in r.detail


@pytest.mark.parametrize("name", ["zencrowd_all", "relevance"])
def test_shared_answers_by_dense_counts_and_by_sorting_agree(name, monkeypatch):
    """Co-answering pairs are counted in a dense array for small crowds and by sorting keys
    for large ones; both give the same pairs and shared answers, and match a brute force."""

    d = load(name)
    ans = Answers(d.tasks, d.workers, d.labels, d.n_classes, d.n_tasks, d.n_workers)
    dense = dependence._shared_answers(ans, 20)
    monkeypatch.setattr(dependence, "_DENSE_PAIR_KEYS", 0)
    by_sorting = dependence._shared_answers(ans, 20)
    for x, y in zip(dense, by_sorting, strict=True):
        np.testing.assert_array_equal(x, y)
    first, second, pair, a, b = dense
    by_worker = {w: set(d.tasks[d.workers == w].tolist()) for w in np.unique(d.workers)}
    brute = {
        (v, w): len(by_worker[v] & by_worker[w])
        for v in by_worker
        for w in by_worker
        if v < w and len(by_worker[v] & by_worker[w]) >= 20
    }
    pairs = zip(first.tolist(), second.tolist(), strict=True)
    assert dict(zip(pairs, np.bincount(pair).tolist(), strict=True)) == brute
    assert (d.workers[a] == first[pair]).all()
    assert (d.workers[b] == second[pair]).all()
    assert (d.tasks[a] == d.tasks[b]).all()
