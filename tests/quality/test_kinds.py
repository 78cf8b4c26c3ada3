"""Tests of the label-kind kernels (apps/quality/algorithms/kinds) against references.

No database is touched. References: the `krippendorff` package (alpha with interval,
ordinal, nominal and a callable set distance), Crowd-Kit 1.4.2's BinaryRelevance over
DawidSkene, scipy's Hungarian assignment for box matching, and hand-worked cases. The
numeric kernel also runs on the real `emotion` crowd copied to tests/data/crowd/emotion.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import krippendorff
import numpy as np
import pandas as pd
import pytest
from crowdkit.aggregation import BinaryRelevance, DawidSkene
from scipy.optimize import linear_sum_assignment

from apps.quality.algorithms.kinds import (
    KINDS,
    AnswerError,
    Boxes,
    BoxKind,
    LabelKind,
    MultiChoiceKind,
    NumericKind,
    OrdinalKind,
    aggregate_boxes,
    binary_relevance_em,
    gold_item_variance,
    iou,
    kind_from_spec,
    numeric_em,
    ordinal_em,
)
from apps.quality.algorithms.kinds.base import alpha_coincidence, alpha_interval, normal_cdf
from apps.quality.algorithms.kinds.bbox import DROPPED, KEPT, REVIEW
from apps.quality.algorithms.kinds.multi_choice import set_codes, set_distance
from apps.quality.algorithms.kinds.numeric import CUTOFF, _loo_error
from apps.quality.algorithms.kinds.ordinal import ordered_confusions

EMOTION = Path(__file__).resolve().parent.parent / "data" / "crowd" / "emotion"

TAGS = MultiChoiceKind(tags=("cat", "dog", "bird"))
LEVELS = OrdinalKind(levels=("1", "2", "3", "4", "5"))
NUMBER = NumericKind(minimum=0.0, maximum=100.0, unit="years")
BOXES = BoxKind(classes=("car", "person"), width=100.0, height=100.0)


def reliability(tasks, workers, values, n_tasks, n_workers):
    """(workers, items) matrix for the krippendorff package, NaN where unanswered."""
    data = np.full((n_workers, n_tasks), np.nan)
    data[workers, tasks] = values
    return data


def random_ratings(seed, n_tasks=40, n_workers=6, k=5, missing=0.3):
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, k, n_tasks)
    t, w = np.meshgrid(np.arange(n_tasks), np.arange(n_workers), indexing="ij")
    t, w = t.ravel(), w.ravel()
    keep = rng.random(t.size) > missing
    t, w = t[keep], w[keep]
    y = np.clip(truth[t] + rng.integers(-1, 2, t.size), 0, k - 1)
    return t, w, y


# ------------------------------------------------------------------------------ the registry


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("multi_choice", {"tags": ["a", "b"]}),
        ("ordinal", {"levels": ["low", "mid", "high"]}),
        ("numeric", {"minimum": 0, "maximum": 10, "unit": "kg"}),
        ("bbox", {"classes": ["car"], "width": 640, "height": 480}),
    ],
    ids=["multi_choice", "ordinal", "numeric", "bbox"],
)
def test_every_registered_kind_builds_from_its_spec_and_implements_the_interface(name, params):
    kind = kind_from_spec(name, **params)

    assert isinstance(kind, LabelKind)
    assert kind.name == name
    assert set(KINDS) == {"multi_choice", "ordinal", "numeric", "bbox"}


@pytest.mark.parametrize(
    ("name", "params", "code"),
    [
        ("text_span", {}, "unknown_kind"),
        ("ordinal", {"levels": ["only"]}, "too_few_levels"),
        ("multi_choice", {"tags": ["a", "a"]}, "duplicate_tags"),
        ("numeric", {"minimum": 5, "maximum": 5}, "bad_range"),
        ("bbox", {"classes": ["car"], "width": 0, "height": 10}, "bad_image_size"),
        ("ordinal", {"levels": ["a", "b"], "colour": "red"}, "bad_parameters"),
    ],
    ids=["unknown", "one-level", "duplicate-tags", "empty-range", "no-image", "unknown-param"],
)
def test_bad_kind_parameters_raise_an_answer_error_with_its_code(name, params, code):
    with pytest.raises(AnswerError) as err:
        kind_from_spec(name, **params)

    assert err.value.code == code


@pytest.mark.parametrize(
    ("kind", "answer", "code"),
    [
        (TAGS, "cat", "not_a_list"),
        (TAGS, ["cow"], "unknown_tag"),
        (TAGS, ["cat", "cat"], "duplicate_tag"),
        (LEVELS, "6", "unknown_level"),
        (LEVELS, 3, "unknown_level"),
        (NUMBER, "12", "not_a_number"),
        (NUMBER, True, "not_a_number"),
        (NUMBER, float("nan"), "not_a_number"),
        (NUMBER, 101, "out_of_range"),
        (BOXES, [{"box": [0, 0, 10, 10]}], "bad_box"),
        (BOXES, [{"box": [0, 0, 10, 10], "class": "tree"}], "unknown_class"),
        (BOXES, [{"box": [0, 0, 0, 10], "class": "car"}], "empty_box"),
        (BOXES, [{"box": [95, 0, 10, 10], "class": "car"}], "outside_image"),
        (BOXES, [{"box": [0, 0, "a", 10], "class": "car"}], "bad_box"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_an_invalid_answer_is_refused_with_its_code_and_position(kind, answer, code):
    with pytest.raises(AnswerError) as err:
        kind.encode([answer])

    assert err.value.code == code
    assert err.value.index == 0


def test_valid_answers_encode_to_the_kernels_arrays():
    assert TAGS.encode([["dog", "cat"], []]).tolist() == [[True, True, False], [False] * 3]
    assert TAGS.decode(np.array([[False, True, True]])) == [["dog", "bird"]]
    assert LEVELS.encode(["1", "5"]).tolist() == [0, 4]
    assert NUMBER.encode([0, 12.5]).tolist() == [0.0, 12.5]
    boxes = BOXES.encode([[{"box": [10, 20, 30, 40], "class": "person"}], []])
    assert boxes.offsets.tolist() == [0, 1, 1]
    assert boxes.boxes.tolist() == [[10.0, 20.0, 40.0, 60.0]]
    assert boxes.classes.tolist() == [1]


# ------------------------------------------------------------------------------- agreement


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_interval_alpha_matches_the_krippendorff_package(seed):
    t, w, y = random_ratings(seed)
    x = y * 7.5 + np.random.default_rng(seed).normal(0, 2, y.size)

    ours = alpha_interval(t, x)

    ref = krippendorff.alpha(reliability(t, w, x, 40, 6), level_of_measurement="interval")
    assert ours == pytest.approx(ref, abs=1e-9)
    assert NUMBER.agreement(t, x) == pytest.approx(ref, abs=1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ordinal_alpha_matches_the_krippendorff_package(seed):
    t, w, y = random_ratings(seed)

    ours = LEVELS.agreement(t, y)

    ref = krippendorff.alpha(
        reliability(t, w, y.astype(float), 40, 6),
        level_of_measurement="ordinal",
        value_domain=[0, 1, 2, 3, 4],
    )
    assert ours == pytest.approx(ref, abs=1e-9)


def test_coincidence_alpha_with_a_zero_one_distance_is_nominal_alpha():
    t, w, y = random_ratings(3)

    ours = alpha_coincidence(t, y, 1.0 - np.eye(5))

    ref = krippendorff.alpha(
        reliability(t, w, y.astype(float), 40, 6), level_of_measurement="nominal"
    )
    assert ours == pytest.approx(ref, abs=1e-9)


@pytest.mark.parametrize("metric", ["masi", "jaccard"])
def test_tag_set_alpha_matches_the_krippendorff_package_with_the_same_distance(metric):
    rng = np.random.default_rng(5)
    n_tasks, n_workers = 30, 5
    truth = rng.random((n_tasks, 3)) < 0.4
    t, w = (a.ravel() for a in np.meshgrid(np.arange(n_tasks), np.arange(n_workers), indexing="ij"))
    keep = rng.random(t.size) > 0.2
    t, w = t[keep], w[keep]
    y = truth[t] ^ (rng.random((t.size, 3)) < 0.15)
    _, masks = set_codes(y)
    value = (y.astype(np.int64) << np.arange(3)).sum(axis=1)

    ours = TAGS.agreement(t, y, metric=metric)

    def distance(v1, v2, i1, i2, n_v, dtype=np.float64):
        return set_distance(v1.astype(np.int64), v2.astype(np.int64), metric).astype(dtype)

    ref = krippendorff.alpha(
        reliability(t, w, value.astype(float), n_tasks, n_workers),
        level_of_measurement=distance,
        value_domain=masks.astype(float),
    )
    assert ours == pytest.approx(ref, abs=1e-9)


def test_masi_distance_by_hand():
    a, b = np.int64(0b011), np.int64(0b001)  # {0, 1} and {0}: J = 1/2, subset: M = 2/3

    assert set_distance(a, b, "masi") == pytest.approx(1 - 0.5 * 2 / 3)
    assert set_distance(a, np.int64(0b110), "masi") == pytest.approx(1 - (1 / 3) * (1 / 3))
    assert set_distance(a, np.int64(0b100), "masi") == pytest.approx(1.0)
    assert set_distance(np.int64(0), np.int64(0), "jaccard") == 0.0


def test_box_agreement_is_the_mean_iou_with_the_combined_box():
    answers = Boxes.from_lists([[(0, 0, 10, 10, 0)], [(0, 0, 10, 12, 0)]])
    combined = np.array([0, 0, 10, 11.0])

    ours = BOXES.agreement(np.array([0, 0]), answers)

    expected = np.mean([iou(answers.boxes[i], combined) for i in range(2)])
    assert ours == pytest.approx(expected)


# ---------------------------------------------------------------------------- multi_choice


def sim_tags(seed, n_tasks=300, n_workers=15, per_item=5, k=4):
    rng = np.random.default_rng(seed)
    truth = rng.random((n_tasks, k)) < 0.3
    workers = np.argsort(rng.random((n_tasks, n_workers)), axis=1)[:, :per_item].ravel()
    tasks = np.repeat(np.arange(n_tasks), per_item)
    sens = rng.uniform(0.5, 0.95, n_workers)
    spec = rng.uniform(0.6, 0.98, n_workers)
    u = rng.random((tasks.size, k))
    y = np.where(truth[tasks], u < sens[workers][:, None], u >= spec[workers][:, None])
    return tasks, workers, y, truth


@pytest.mark.parametrize("seed", [0, 1])
def test_per_tag_coins_without_smoothing_agree_with_crowdkit_binary_relevance_dawid_skene(seed):
    tasks, workers, y, _ = sim_tags(seed)
    df = pd.DataFrame(
        {"task": tasks, "worker": workers, "label": [list(np.flatnonzero(r)) for r in y]}
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = BinaryRelevance(DawidSkene(n_iter=100, tol=1e-8)).fit_predict(df)
    ref_tags = np.zeros((300, 4), dtype=bool)
    for task, labels in ref.items():
        ref_tags[int(task), [int(v) for v in labels]] = True

    ours = binary_relevance_em(tasks, workers, y, share_workers=False, smoothing=0.0, tol=1e-8)

    assert np.mean(ours.tags == ref_tags) >= 0.995


def test_shared_coins_find_a_worker_who_tags_everything():
    # Given three careful workers and one who ticks every tag on every item.
    tasks = np.repeat(np.arange(4), 4)
    workers = np.tile(np.arange(4), 4)
    truth = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]], dtype=bool)
    y = truth[tasks].copy()
    y[workers == 3] = True

    result = TAGS.aggregate(tasks, workers, y)

    assert result.tags.tolist() == truth.tolist()
    assert result.specificity[3] < 0.3 < 0.8 < result.specificity[0]
    assert result.worker_weight[3] < result.worker_weight[0]
    assert np.all(result.confidence > 0.9)


def test_tag_gold_scores_are_jaccard_and_f1():
    answers = np.array([[1, 1, 0], [0, 0, 0], [0, 0, 0], [1, 0, 0]], dtype=bool)
    gold = np.array([[1, 0, 0], [0, 0, 0], [1, 0, 0], [1, 0, 0]], dtype=bool)

    assert TAGS.gold_score(answers, gold).tolist() == [0.5, 1.0, 0.0, 1.0]
    assert TAGS.gold_score(answers, gold, metric="f1").tolist() == pytest.approx(
        [2 / 3, 1.0, 0.0, 1.0]
    )


# --------------------------------------------------------------------------------- ordinal


def test_ordinal_model_reads_through_a_worker_who_rates_one_level_high():
    # Given two careful raters and one who always answers one level above the truth, on
    # items where the careful two disagree by one level half the time.
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 4, 200)
    tasks = np.repeat(np.arange(200), 3)
    workers = np.tile(np.arange(3), 200)
    y = truth[tasks].copy()
    y[workers == 2] += 1
    slip = (workers == 1) & (rng.random(y.size) < 0.5)
    y[slip] = np.clip(y[slip] + rng.choice([-1, 1], slip.sum()), 0, 4)

    result = ordinal_em(tasks, workers, y, 5)

    assert result.bias[2] == pytest.approx(1.0, abs=0.1)
    assert abs(result.bias[0]) < 0.1
    assert result.spread[1] > result.spread[0]
    assert np.mean(result.level == truth) >= 0.99


def _ordinal_em_by_loops(tasks, workers, y, k, n_iter, prior_answers=2.0, min_spread=0.25):
    """The ordinal EM of the module docstring written answer by answer, as a reference."""
    n_t, n_w = tasks.max() + 1, workers.max() + 1
    q = np.full((n_t, k), 1e-3)
    for t, a in zip(tasks, y, strict=True):
        q[t, a] += 1.0
    q /= q.sum(axis=1, keepdims=True)
    bias, spread, spam = np.zeros(n_w), np.ones(n_w), np.full(n_w, 0.1)
    for _ in range(n_iter):
        counts = np.zeros((n_w, k, k))
        for t, j, a in zip(tasks, workers, y, strict=True):
            counts[j, :, a] += q[t]
        conf = ordered_confusions(bias, spread, spam, k)
        new_bias, new_spread, new_spam = bias.copy(), spread.copy(), spam.copy()
        for j in range(n_w):
            spam_share = spam[j] / k / conf[j]
            w = counts[j] * (1.0 - spam_share)
            resid = np.arange(k)[None, :] - np.arange(k)[:, None]
            new_spam[j] = ((counts[j] * spam_share).sum() + 1.0) / (counts[j].sum() + 2.0)
            new_bias[j] = (w * resid).sum() / (w.sum() + prior_answers)
            var = ((w * (resid - new_bias[j]) ** 2).sum() + prior_answers) / (
                w.sum() + prior_answers
            )
            new_spread[j] = math.sqrt(max(var + 1.0 / 12.0, min_spread**2))
        bias, spread, spam = new_bias, new_spread, new_spam
        prior = (q.sum(axis=0) + 1.0) / (n_t + k)
        log_conf = np.log(ordered_confusions(bias, spread, spam, k))
        log_post = np.tile(np.log(prior), (n_t, 1))
        for t, j, a in zip(tasks, workers, y, strict=True):
            log_post[t] += log_conf[j, :, a]
        q = np.exp(log_post - log_post.max(axis=1, keepdims=True))
        q /= q.sum(axis=1, keepdims=True)
    return q, bias, spread, spam


def test_ordinal_em_equals_the_answer_by_answer_reference():
    # A small crowd with uneven items (1 to 4 answers) and workers, shuffled answer order.
    rng = np.random.default_rng(5)
    tasks = np.repeat(np.arange(30), rng.integers(1, 5, 30))
    workers = rng.integers(0, 6, tasks.size)
    y = np.clip(rng.integers(0, 4, 30)[tasks] + rng.integers(-1, 2, tasks.size), 0, 3)
    shuffle = rng.permutation(tasks.size)
    tasks, workers, y = tasks[shuffle], workers[shuffle], y[shuffle]

    result = ordinal_em(tasks, workers, y, 4, n_iter=7, tol=0.0)
    q, bias, spread, spam = _ordinal_em_by_loops(tasks, workers, y, 4, n_iter=7)

    assert result.posterior == pytest.approx(q, abs=1e-12)
    assert result.bias == pytest.approx(bias, abs=1e-12)
    assert result.spread == pytest.approx(spread, abs=1e-12)
    assert result.spam == pytest.approx(spam, abs=1e-12)


def test_ordinal_confusion_rows_are_distributions_and_put_near_misses_above_far_ones():
    conf = ordered_confusions(np.array([0.0]), np.array([0.8]), np.array([0.1]), 5)[0]

    assert conf.sum(axis=1) == pytest.approx(np.ones(5))
    assert conf[2, 2] > conf[2, 3] > conf[2, 4] > 0
    assert normal_cdf(np.array([0.0, 1.959964]))[1] == pytest.approx(0.975, abs=1e-6)


def test_ordinal_gold_score_is_one_minus_the_scaled_distance():
    assert LEVELS.gold_score(np.array([0, 3, 4]), np.array([0, 4, 0])).tolist() == [1.0, 0.75, 0.0]


# --------------------------------------------------------------------------------- numeric


def test_numeric_without_bias_or_robustness_and_one_worker_per_noise_is_the_mean():
    # Every worker answers every item, so equal noise estimates; the value is the plain mean.
    tasks = np.repeat(np.arange(3), 2)
    workers = np.tile(np.arange(2), 3)
    x = np.array([10.0, 14.0, 20.0, 22.0, 30.0, 36.0])

    result = numeric_em(tasks, workers, x, bias=False, robust=False, prior_answers=1e9)

    assert result.value.tolist() == pytest.approx([12.0, 21.0, 33.0])


def test_numeric_recovers_worker_bias_and_noise_and_keeps_an_honest_interval():
    rng = np.random.default_rng(1)
    truth = rng.uniform(0, 100, 1000)
    tasks = np.repeat(np.arange(1000), 5)
    workers = np.argsort(rng.random((1000, 20)), axis=1)[:, :5].ravel()
    # Workers 0 and 2 answer 8 high, 3 and 4 answer 8 low; 1, 6, 11 and 16 are noisy.
    bias = np.zeros(20)
    bias[[0, 2]], bias[[3, 4]] = 8.0, -8.0
    sd = np.where(np.arange(20) % 5 == 1, 12.0, 3.0)
    x = truth[tasks] + bias[workers] + rng.normal(0, 1, tasks.size) * sd[workers]

    # No shared error in this crowd: the consensus interval (item_var 0) is the truth's.
    result = numeric_em(tasks, workers, x, level=0.9, item_var=0.0)

    assert result.bias[[0, 2, 3, 4]] == pytest.approx([8.0, 8.0, -8.0, -8.0], abs=0.6)
    assert result.noise[1] > 3 * result.noise[0]
    covered = np.mean((truth >= result.low) & (truth <= result.high))
    assert 0.86 <= covered <= 0.94
    mean = np.bincount(tasks, x) / 5
    assert np.abs(result.value - truth).mean() < 0.6 * np.abs(mean - truth).mean()


def test_one_outlier_answer_barely_moves_the_value():
    tasks = np.repeat(np.arange(50), 5)
    workers = np.tile(np.arange(5), 50)
    rng = np.random.default_rng(2)
    x = 50 + rng.normal(0, 2, tasks.size)
    x[0] = 5000.0  # a pasted wrong number on item 0

    result = numeric_em(tasks, workers, x)

    assert abs(result.value[0] - 50) < 3
    assert abs(result.value[0] - x[1:5].mean()) < 3


def test_numeric_on_the_emotion_crowd_stays_near_the_mean_and_gold_widens_the_interval():
    a = pd.read_csv(EMOTION / "answers.csv")
    truth_frame = pd.read_csv(EMOTION / "truth.csv")
    ids, tasks = np.unique(a.task.to_numpy(), return_inverse=True)
    _, workers = np.unique(a.worker.astype(str).to_numpy(), return_inverse=True)
    x = a.label.to_numpy(np.float64)
    truth = truth_frame.set_index("task").label.reindex(ids).to_numpy(np.float64)

    plain = numeric_em(tasks, workers, x, lower=-100, upper=100)
    tau2 = gold_item_variance(plain, np.arange(0, 700, 10), truth[::10])
    widened = numeric_em(tasks, workers, x, lower=-100, upper=100, item_var=tau2)
    with_bias = numeric_em(tasks, workers, x, lower=-100, upper=100, bias=True)
    mean = np.bincount(tasks, x) / np.bincount(tasks)

    # The crowd's seven emotions are seven scales, and a worker's offset changes from one to
    # the next: one bias per worker is the wrong model, leave-one-answer-out error says so
    # (the choice), and the value is no worse than the per-item mean (12.022). Forced, the
    # biases cost accuracy (12.032, bench/label_kinds.py).
    assert np.abs(plain.bias).max() == 0.0
    assert np.abs(plain.value - truth).mean() < np.abs(mean - truth).mean()
    assert np.abs(with_bias.value - truth).mean() > np.abs(plain.value - truth).mean()
    assert tau2 > 100
    assert np.all(widened.half_width > plain.half_width)
    assert np.all((widened.value >= -100) & (widened.value <= 100))


def test_the_noise_prior_makes_alike_workers_one_worker_and_the_value_the_mean():
    # Thirty workers of the same noise (sd 10, no bias), five answers per item.
    rng = np.random.default_rng(3)
    truth = rng.uniform(0, 100, 600)
    tasks = np.repeat(np.arange(600), 5)
    workers = np.argsort(rng.random((600, 30)), axis=1)[:, :5].ravel()
    x = truth[tasks] + rng.normal(0, 10, tasks.size)

    result = numeric_em(tasks, workers, x, robust=False)

    # Their noise estimates would spread by chance (about +-25% from 100 answers); the
    # prior pulls them all to the pooled one, biases to 0, and the value is the plain mean.
    assert result.noise.max() / result.noise.min() < 1.01
    assert np.abs(result.bias).max() == pytest.approx(0.0, abs=1e-9)
    assert result.value == pytest.approx(np.bincount(tasks, x) / 5, abs=1e-3)


def test_the_noise_prior_keeps_a_worker_who_really_is_noisier():
    rng = np.random.default_rng(3)
    truth = rng.uniform(0, 100, 600)
    tasks = np.repeat(np.arange(600), 5)
    workers = np.argsort(rng.random((600, 30)), axis=1)[:, :5].ravel()
    sd = np.where(np.arange(30) == 7, 30.0, 10.0)
    x = truth[tasks] + rng.normal(0, 1, tasks.size) * sd[workers]

    result = numeric_em(tasks, workers, x, robust=False)

    assert result.noise[7] > 2.5 * np.median(result.noise)


def test_gold_measures_a_shared_error_and_the_interval_covers_at_the_nominal_rate():
    # Every worker shares an error per item, N(0, 6^2), on top of their own noise (sd 8):
    # no number of answers shows it, the gold items (10%) do.
    rng = np.random.default_rng(4)
    truth = rng.uniform(0, 100, 1500)
    tasks = np.repeat(np.arange(1500), 6)
    workers = np.argsort(rng.random((1500, 30)), axis=1)[:, :6].ravel()
    x = truth[tasks] + rng.normal(0, 6, 1500)[tasks] + rng.normal(0, 8, tasks.size)
    gold = rng.permutation(1500)[:150]
    rest = np.setdiff1d(np.arange(1500), gold)
    kind = NumericKind()

    with_gold = kind.aggregate_with_gold(tasks, workers, x, gold_tasks=gold, gold=truth[gold])
    consensus = numeric_em(tasks, workers, x, item_var=0.0)

    def covered(result):
        return np.mean(((truth >= result.low) & (truth <= result.high))[rest])

    assert with_gold.item_var == pytest.approx(36, rel=0.35)
    assert 0.86 <= covered(with_gold) <= 0.94
    assert covered(consensus) < 0.7


@pytest.mark.parametrize(
    ("noise", "chosen"), [("student_t2", 2.0), ("gaussian", math.inf)], ids=["heavy", "gaussian"]
)
def test_cutoff_chosen_by_leave_one_answer_out_error(noise, chosen):
    rng = np.random.default_rng(6)
    truth = rng.uniform(0, 100, 800)
    tasks = np.repeat(np.arange(800), 5)
    workers = np.argsort(rng.random((800, 30)), axis=1)[:, :5].ravel()
    e = 5 * rng.standard_t(2, tasks.size) if noise == "student_t2" else rng.normal(0, 5, tasks.size)
    x = truth[tasks] + e

    auto = numeric_em(tasks, workers, x, cutoff=None)

    assert np.array_equal(auto.value, numeric_em(tasks, workers, x, cutoff=chosen).value)


def test_worker_biases_are_kept_when_leave_one_answer_out_error_says_they_help():
    # Workers who answer 8 high or 8 low on every item (the emotion test: where biases do
    # not help, they are dropped).
    rng = np.random.default_rng(8)
    truth = rng.uniform(0, 100, 600)
    tasks = np.repeat(np.arange(600), 5)
    workers = np.argsort(rng.random((600, 30)), axis=1)[:, :5].ravel()
    offset = rng.choice([-8.0, 0.0, 8.0], 30)
    x = truth[tasks] + offset[workers] + rng.normal(0, 4, tasks.size)
    n_i = np.bincount(tasks).astype(float)

    chosen = numeric_em(tasks, workers, x)
    fits = {b: numeric_em(tasks, workers, x, bias=b) for b in (True, False)}
    # The fit kept is the one of lower leave-one-answer-out error, scored as the kernel does.
    loo = {
        b: _loo_error(x, tasks, workers, n_i, f.value, f.bias, f.noise**2, CUTOFF)
        for b, f in fits.items()
    }

    assert loo[True] < loo[False]
    assert np.array_equal(chosen.value, fits[True].value)
    # (Biases are centred on the crowd's: their differences are the offsets'.)
    gap = chosen.bias[offset == 8.0].mean() - chosen.bias[offset == -8.0].mean()
    assert gap == pytest.approx(16.0, abs=1.5)


def test_numeric_gold_score_is_one_within_tolerance_falling_to_zero_at_twice_it():
    scores = NUMBER.gold_score(np.array([10, 12, 13, 14, 20]), np.full(5, 10), tolerance=2)

    assert scores.tolist() == [1.0, 1.0, 0.5, 0.0, 0.0]


def test_numeric_stops_when_the_interval_is_within_the_tolerance():
    # Item 0: three answers within one unit; item 1: two answers 40 apart.
    tasks, workers = np.array([0, 0, 0, 1, 1]), np.array([0, 1, 2, 0, 1])

    answers = np.array([10.0, 10.5, 9.5, 20.0, 60.0])

    # With a measured shared error of 0 (gold said the crowd is right on average).
    result = NUMBER.aggregate(tasks, workers, answers, item_var=0.0)
    # Without gold, the assumed shared error widens every interval by the same amount.
    assumed = NUMBER.aggregate(tasks, workers, answers)

    # One noise for all three workers (nothing says they differ), measured on both items:
    # item 1's 40 apart makes item 0's close answers a less sure consensus (8.1 against 9.5).
    assert result.half_width[0] < result.half_width[1]
    assert NUMBER.is_confident(result, target=8.5).tolist() == [True, False]
    assert NUMBER.is_confident(result, target=100.0).tolist() == [True, True]
    assert assumed.item_var > 0
    assert np.all(assumed.half_width > result.half_width)


# ------------------------------------------------------------------------------------ bbox


def test_three_workers_boxes_make_one_object_and_a_lone_stray_box_is_dropped():
    answers = Boxes.from_lists(
        [
            [(10, 10, 50, 50, 0), (70, 70, 90, 90, 1)],
            [(12, 10, 50, 52, 0)],
            [(10, 12, 52, 50, 0)],
        ]
    )

    result = BOXES.aggregate(np.zeros(3, dtype=int), np.arange(3), answers)

    assert result.obj_status.tolist() == [KEPT, DROPPED]
    assert result.obj_workers.tolist() == [3, 1]
    # Three boxes, one each: the weights are nearly equal, the box nearly their mean.
    assert result.obj_box[0] == pytest.approx([32 / 3, 32 / 3, 152 / 3, 152 / 3], abs=0.2)
    plain = aggregate_boxes(np.zeros(3, dtype=int), np.arange(3), answers, weighted=False)
    assert plain.obj_box[0] == pytest.approx([32 / 3, 32 / 3, 152 / 3, 152 / 3])
    # One of three submissions drew a box nobody backed: the item is at most 2/3 sure.
    assert result.obj_agreement[0] > 0.9
    assert result.confidence[0] == pytest.approx(2 / 3)
    assert result.box_object.tolist() == [0, 1, 0, 0]


def test_an_item_whose_every_box_was_dropped_is_not_confident():
    # Item 0: three workers, three boxes far apart, each drawn once, so each is dropped.
    # Item 1, in the same run: three workers agree on one box and nothing else.
    same = [(10, 10, 50, 50, 0)]
    answers = Boxes.from_lists(
        [
            [(10, 10, 50, 50, 0)],
            [(200, 200, 260, 260, 0)],
            [(400, 10, 480, 90, 0)],
            same,
            same,
            same,
        ]
    )
    tasks = np.array([0, 0, 0, 1, 1, 1])

    result = BOXES.aggregate(tasks, np.array([0, 1, 2, 0, 1, 2]), answers)

    assert result.obj_status[result.obj_task == 0].tolist() == [DROPPED] * 3
    assert result.confidence.tolist() == [0.0, pytest.approx(1.0)]
    assert BOXES.is_confident(result, target=0.5).tolist() == [False, True]


def test_an_object_two_of_five_workers_saw_goes_to_review():
    one = [(10, 10, 50, 50, 0)]
    answers = Boxes.from_lists([one, one, [], [], []])

    result = BOXES.aggregate(np.zeros(5, dtype=int), np.arange(5), answers)

    assert result.obj_status.tolist() == [REVIEW]
    assert result.confidence.tolist() == [0.0]
    assert BOXES.is_confident(result, target=0.5).tolist() == [False]


def test_boxes_of_different_classes_are_never_one_object():
    answers = Boxes.from_lists([[(10, 10, 50, 50, 0)], [(10, 10, 50, 50, 1)]])

    result = BOXES.aggregate(np.zeros(2, dtype=int), np.arange(2), answers)

    assert result.obj_workers.tolist() == [1, 1]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_box_matching_of_two_workers_equals_the_hungarian_assignment(seed):
    rng = np.random.default_rng(seed)
    per_sub, tasks = [], []
    for item in range(40):
        centres = rng.uniform(60, 940, (rng.integers(1, 6), 2))
        # Objects on a coarse grid so they never overlap; boxes jittered by up to 10%.
        centres = np.unique(np.round(centres / 150) * 150, axis=0)
        truth = np.column_stack([centres - 50, centres + 50])
        for _ in range(2):
            jitter = truth + rng.normal(0, 5, truth.shape)
            keep = rng.random(len(truth)) > 0.2
            per_sub.append([(*b, 0) for b in jitter[keep]])
            tasks.append(item)
    answers = Boxes.from_lists(per_sub)
    tasks = np.array(tasks)
    workers = np.tile([0, 1], 40)

    result = aggregate_boxes(tasks, workers, answers, n_classes=1)

    owner = answers.owner
    ours = {
        tuple(sorted(np.flatnonzero(result.box_object == o)))
        for o in np.unique(result.box_object)
        if (result.box_object == o).sum() == 2
    }
    ref = set()
    for item in range(40):
        a = np.flatnonzero(owner == 2 * item)
        b = np.flatnonzero(owner == 2 * item + 1)
        if a.size and b.size:
            cost = -iou(answers.boxes[a][:, None], answers.boxes[b][None])
            rows, cols = linear_sum_assignment(cost)
            ref |= {
                tuple(sorted((a[r], b[c])))
                for r, c in zip(rows, cols, strict=True)
                if -cost[r, c] >= 0.5
            }
    assert ours == ref


def test_box_gold_score_is_the_f1_of_matches_with_class():
    answers = Boxes.from_lists([[(0, 0, 10, 10, 0), (50, 50, 60, 60, 0)], [(0, 0, 10, 10, 1)], []])
    gold = Boxes.from_lists([[(0, 0, 10, 11, 0)], [(0, 0, 10, 10, 0)], []])

    assert BOXES.gold_score(answers, gold).tolist() == pytest.approx([2 / 3, 0.0, 1.0])


# ----------------------------------------------------------------------------- edge shapes


def _no_answers(kind):
    empty = np.zeros(0, dtype=np.int64)
    if kind is TAGS:
        return empty, empty, np.zeros((0, 3), dtype=bool)
    if kind is LEVELS:
        return empty, empty, empty
    if kind is NUMBER:
        return empty, empty, np.zeros(0)
    return empty, empty, Boxes.from_lists([])


def _one_answer(kind):
    one = np.zeros(1, dtype=np.int64)
    answer = {
        id(TAGS): TAGS.encode([["cat"]]),
        id(LEVELS): LEVELS.encode(["4"]),
        id(NUMBER): NUMBER.encode([42.0]),
        id(BOXES): BOXES.encode([[{"box": [10, 10, 20, 20], "class": "car"}]]),
    }[id(kind)]
    return one, one, answer


def _one_worker(kind):
    tasks = np.arange(3)
    workers = np.zeros(3, dtype=np.int64)
    answer = {
        id(TAGS): TAGS.encode([["cat"], [], ["dog", "bird"]]),
        id(LEVELS): LEVELS.encode(["1", "3", "5"]),
        id(NUMBER): NUMBER.encode([1.0, 50.0, 99.0]),
        id(BOXES): BOXES.encode([[{"box": [10, 10, 20, 20], "class": "car"}], [], []]),
    }[id(kind)]
    return tasks, workers, answer


KIND_IDS = ["multi_choice", "ordinal", "numeric", "bbox"]


@pytest.mark.parametrize("kind", [TAGS, LEVELS, NUMBER, BOXES], ids=KIND_IDS)
def test_zero_answers_give_nan_confidence_for_the_items_and_nan_agreement(kind):
    tasks, workers, answers = _no_answers(kind)

    result = kind.aggregate(tasks, workers, answers, n_tasks=2, n_workers=1)

    assert result.n_answers.tolist() == [0, 0]
    assert np.isnan(result.confidence).all()
    assert not kind.is_confident(result, target=0.5).any()
    assert math.isnan(kind.agreement(tasks, answers))


@pytest.mark.parametrize("kind", [TAGS, LEVELS, NUMBER, BOXES], ids=KIND_IDS)
def test_one_answer_gives_that_answer_with_a_finite_confidence_and_no_agreement(kind):
    tasks, workers, answers = _one_answer(kind)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = kind.aggregate(tasks, workers, answers)

    assert np.isfinite(result.confidence).all()
    assert np.isfinite(result.worker_weight).all()
    assert math.isnan(kind.agreement(tasks, answers))
    if kind is TAGS:
        assert result.tags.tolist() == [[True, False, False]]
    elif kind is LEVELS:
        assert result.level.tolist() == [3]
    elif kind is NUMBER:
        assert result.value.tolist() == [42.0]
        assert np.isfinite(result.half_width).all()
    else:
        assert result.obj_status.tolist() == [KEPT]
        assert result.confidence.tolist() == [0.0]  # one submission confirms nothing


@pytest.mark.parametrize("kind", [TAGS, LEVELS, NUMBER, BOXES], ids=KIND_IDS)
def test_one_worker_gives_their_answers_back_without_nan(kind):
    tasks, workers, answers = _one_worker(kind)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = kind.aggregate(tasks, workers, answers)

    assert np.isfinite(result.confidence).all()
    assert np.isfinite(result.worker_weight).all()
    if kind is TAGS:
        assert result.tags.tolist() == answers.tolist()
    elif kind is LEVELS:
        assert result.level.tolist() == [0, 2, 4]
    elif kind is NUMBER:
        assert result.value.tolist() == pytest.approx([1.0, 50.0, 99.0])
        assert np.all(result.low <= result.value)
        assert np.all(result.value <= result.high)
