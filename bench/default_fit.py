"""Leave-one-dataset-out (LODO) fitting and scoring of the default aggregator's constants.

Every constant of `apps.quality.algorithms.default.DEFAULTS` that touches accuracy or
confidence is chosen here, on the 18 shared crowd data sets, in two ways:

- for scoring, once per data set, on the 17 others only (`lodo_choose`, `fit_fold`), and the
  default is then run through the production `aggregate(..., method="default")` with that
  fold's constants on the held-out set;
- for production, once on all 18 (`fit_fold(cases, exclude=None)`): the values stored in
  `DEFAULTS`, printed by `bench/aggregation.py --fit`.

The protocol the bench and the fit share: each data set is also subsampled to 1, 2, 3 and 5
answers per item (5 seeds), and in each case 5% of the items with a truth are marked gold
(the job's gold: the default may use their labels; they are left out of every score).
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, replace

import numpy as np

from apps.quality.algorithms import aggregate
from apps.quality.algorithms._answers import Answers
from apps.quality.algorithms.aggregation import one_coin_dawid_skene
from apps.quality.algorithms.confidence import (
    expected_calibration_error,
    fit_calibration,
)
from apps.quality.algorithms.default import DEFAULTS, DefaultConstants
from apps.quality.algorithms.dependence import dependent_pairs
from tests.quality.crowd_data import CrowdDataset

DENSITIES: tuple[int | None, ...] = (1, 2, 3, 5, None)  # answers per item; None: all
SEEDS = tuple(range(5))
GOLD_SHARE = 0.05

# The accuracy grid: (one-coin, pooled) shrinkage strengths x class-prior strength toward
# uniform x its anchor to the vote shares x the answers per worker below which the default
# votes x (dependence threshold, discount).
SHRINKAGE = ((2.5, 0.0), (0.0, 2.5), (0.0, 5.0), (1.25, 1.25))
CP_STRENGTH = (0.0,)
CP_ANCHOR = (0.0, 0.3, 1.0, 3.0)
# Largest first: where the other data sets cannot tell two thresholds apart (no case of
# theirs falls between them), `lodo_choose` takes the first key, i.e. the simpler model
# (majority vote) over a model nothing in the training sets supports at that density.
MIN_APW = (8.0, 6.0, 4.0, 2.0, 0.0)
Z_DISCOUNT = ((6.0, 4.0), (9.0, 2.0), (9.0, 4.0), (9.0, 8.0), (12.0, 4.0))
# The cases accuracy constants are scored on: all answers, and 2, 3, 5 per item (seeds 0
# and 1).
ACC_DENSITIES: tuple[int | None, ...] = (None, 2, 3, 5)
ACC_SEEDS = (0, 1)
# A case's score is its accuracy minus this weight times its shortfall below majority vote
# on the same items: the goals put never losing to voting (at any density) before the mean,
# and a plain mean lets a large loss on one crowd buy a negligible gain on the others.
SHORTFALL_WEIGHT = 1.0
# Calibration: prior strength in gold items, and the strength of the lone-answer prior.
CAL_STRENGTH = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0)
SINGLE_STRENGTH = (3.0, 10.0, 30.0, 100.0)

# one-coin shrinkage, pooled shrinkage, cp strength, cp anchor, min answers per worker, z,
# discount
AccKey = tuple[float, float, float, float, float, float, float]
ACC_FIELDS = (
    "shrinkage",
    "pooled_shrinkage",
    "class_prior_strength",
    "class_prior_anchor",
    "min_answers_per_worker",
    "z_threshold",
    "discount",
)


def lodo_choose(scores: Mapping[str, Mapping[Hashable, float]]) -> dict[str, Hashable]:
    """For each data set, the key with the best mean score over the OTHER data sets.

    `scores[dataset][key]` is a score to maximise (every data set must score every key). A
    data set's own scores never enter its choice: that is what makes the choice honest.
    Ties go to the first key in the first data set's order.
    """
    names = list(scores)
    keys = list(scores[names[0]])
    table = np.array([[scores[n][k] for k in keys] for n in names], dtype=np.float64)
    total = table.sum(axis=0)
    return {name: keys[int(np.argmax(total - table[i]))] for i, name in enumerate(names)}


def subsample(d: CrowdDataset, per_item: int | None, seed: int) -> np.ndarray:
    """Indices of at most `per_item` answers per item (a random subset, fixed by `seed`),
    in their original order; every answer when `per_item` is None."""
    if per_item is None:
        return np.arange(d.n_answers)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(d.n_answers)
    order = perm[np.argsort(d.tasks[perm], kind="stable")]
    t = d.tasks[order]
    start = np.r_[0, np.flatnonzero(t[1:] != t[:-1]) + 1]
    rank = np.arange(t.size) - np.repeat(start, np.diff(np.r_[start, t.size]))
    return np.sort(order[rank < per_item])


def gold_labels(d: CrowdDataset, seed: int, share: float = GOLD_SHARE) -> np.ndarray:
    """(n_tasks,) the gold class of `share` of the items with a truth (at least one), -1
    elsewhere: the job's gold items in case `seed`."""
    rng = np.random.default_rng(1000 + seed)
    has = np.flatnonzero(d.truth >= 0)
    chosen = rng.choice(has, max(1, round(share * has.size)), replace=False)
    gold = np.full(d.n_tasks, -1, dtype=np.int64)
    gold[chosen] = d.truth[chosen]
    return gold


@dataclass(frozen=True)
class Case:
    """One job of the protocol: a data set at a density and seed, with its gold."""

    name: str
    density: int | None
    seed: int
    keep: np.ndarray  # answer indices
    gold: np.ndarray  # (n_tasks,) gold class or -1
    scored: np.ndarray  # (n_tasks,) bool: truth known, not gold, answered

    def run(self, d: CrowdDataset, method: str, **options: object):
        gold = {"gold": self.gold} if method == "default" else {}
        return aggregate(
            d.tasks[self.keep],
            d.workers[self.keep],
            d.labels[self.keep],
            d.n_classes,
            method=method,
            n_tasks=d.n_tasks,
            n_workers=d.n_workers,
            **gold,
            **options,
        )


def cases_for(d: CrowdDataset, densities=DENSITIES, seeds=SEEDS) -> list[Case]:
    out = []
    for density in densities:
        for seed in seeds if density is not None else seeds[:1]:
            keep = subsample(d, density, seed)
            gold = gold_labels(d, seed)
            answered = np.bincount(d.tasks[keep], minlength=d.n_tasks) > 0
            scored = (d.truth >= 0) & (gold < 0) & answered
            out.append(Case(d.name, density, seed, keep, gold, scored))
    return out


@dataclass
class Raw:
    """What the calibration fit needs from one case, computed once (uncalibrated run)."""

    case: Case
    post: np.ndarray  # (n_scored, K) uncalibrated posteriors of the scored items
    truth: np.ndarray  # (n_scored,)
    gold_post: np.ndarray  # (n_gold, K) posteriors of the gold items without their gold
    gold_truth: np.ndarray
    single: bool  # no item has two answers (the lone-answer path)
    lone_hits: int  # that path: answers right on gold, and answers on gold
    lone_n: int


def case_answers(d: CrowdDataset, case: Case) -> Answers:
    k = case.keep
    return Answers(d.tasks[k], d.workers[k], d.labels[k], d.n_classes, d.n_tasks, d.n_workers)


def raw_case(d: CrowdDataset, case: Case, constants: DefaultConstants) -> Raw:
    r = case.run(d, "default", constants=constants, calibrated=False)
    ans = case_answers(d, case)
    gold_tasks = np.flatnonzero((case.gold >= 0) & ans.answered)
    single = int(ans.per_task.max()) <= 1
    on_gold = case.gold[ans.t] >= 0
    return Raw(
        case=case,
        post=r.posteriors[case.scored],
        truth=d.truth[case.scored],
        gold_post=r.posteriors[gold_tasks],
        gold_truth=case.gold[gold_tasks],
        single=single,
        lone_hits=int((ans.l[on_gold] == case.gold[ans.t[on_gold]]).sum()),
        lone_n=int(on_gold.sum()),
    )


def _capped(raw: list[Raw], cap: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """Pooled (posteriors, truth) with at most `cap` items per case (fixed sample), so every
    case weighs about the same."""
    posts, truths = [], []
    for r in raw:
        n = r.truth.size
        idx = np.arange(n) if n <= cap else np.random.default_rng(0).choice(n, cap, replace=False)
        posts.append(r.post[idx])
        truths.append(r.truth[idx])
    return posts, truths


def _pooled_prior(raw: list[Raw]) -> tuple[float, float]:
    """(temperature, floor) maximising the mean log-likelihood of the truth per case over
    the cases' scored items (cases of the same K stacked; at most 400 items each)."""
    posts, truths = _capped([r for r in raw if not r.single])
    groups: dict[int, list[tuple[np.ndarray, np.ndarray, float]]] = {}
    for p, y in zip(posts, truths, strict=True):
        if y.size:
            groups.setdefault(p.shape[1], []).append((p, y, 1.0 / y.size))
    stacked = []
    for k, parts in groups.items():
        logp = np.log(np.clip(np.concatenate([p for p, _, _ in parts]), 1e-12, None))
        y = np.concatenate([y for _, y, _ in parts])
        w = np.concatenate([np.full(y.size, wt) for _, y, wt in parts])
        stacked.append((k, logp, y, w))
    temps = np.geomspace(0.5, 20.0, 41)
    floors = np.r_[0.0, np.geomspace(1e-3, 0.3, 31)]
    best = (-np.inf, 1.0, 0.0)
    for t in temps:
        ll = np.zeros(floors.size)
        for k, logp, y, w in stacked:
            z = logp / t
            z -= z.max(axis=1, keepdims=True)
            q = np.exp(z)
            q = q[np.arange(y.size), y] / q.sum(axis=1)
            ll += (np.log((1 - floors[:, None]) * q[None, :] + floors[:, None] / k) * w).sum(axis=1)
        i = int(np.argmax(ll))
        if ll[i] > best[0]:
            best = (float(ll[i]), float(t), float(floors[i]))
    return best[1], best[2]


def _case_ece(r: Raw, c: DefaultConstants) -> float:
    """ECE of one case under constants `c`, exactly as the default calibrates it."""
    if r.single:
        k = r.post.shape[1]
        s = c.single_answer_strength
        acc = (r.lone_hits + s * c.single_answer_accuracy) / (r.lone_n + s)
        acc = float(np.clip(acc, 1.0 / k, 1.0 - 1e-6))
        label = r.post.argmax(axis=1)
        return expected_calibration_error(np.full(label.size, acc), label == r.truth)
    cal = fit_calibration(
        r.gold_post,
        r.gold_truth,
        temperature=c.temperature,
        floor=c.floor,
        strength=c.calibration_strength,
    )
    p = cal.apply(r.post)
    label = p.argmax(axis=1)
    return expected_calibration_error(p.max(axis=1), label == r.truth)


def fit_calibration_constants(raw: list[Raw], base: DefaultConstants) -> DefaultConstants:
    """Calibration prior centre (pooled maximum likelihood), its strength and the lone-answer
    prior (mean accuracy and strength), all from `raw` (the training cases only)."""
    t0, f0 = _pooled_prior(raw)
    single = [r for r in raw if r.single]
    acc0 = (
        float(np.mean([(r.post.argmax(axis=1) == r.truth).mean() for r in single]))
        if single
        else base.single_answer_accuracy
    )
    c = replace(base, temperature=t0, floor=f0, single_answer_accuracy=acc0)
    multi = [r for r in raw if not r.single]
    best = min(
        CAL_STRENGTH,
        key=lambda s: np.mean([_case_ece(r, replace(c, calibration_strength=s)) for r in multi]),
    )
    c = replace(c, calibration_strength=best)
    if single:
        s1 = min(
            SINGLE_STRENGTH,
            key=lambda s: np.mean(
                [_case_ece(r, replace(c, single_answer_strength=s)) for r in single]
            ),
        )
        c = replace(c, single_answer_strength=s1)
    return c


def with_accuracy(base: DefaultConstants, key: AccKey) -> DefaultConstants:
    return replace(base, **dict(zip(ACC_FIELDS, key, strict=True)))


def accuracy_key(c: DefaultConstants) -> AccKey:
    """The grid key of constants `c` (the inverse of `with_accuracy`)."""
    return tuple(float(getattr(c, f)) for f in ACC_FIELDS)  # type: ignore[return-value]


def accuracy_table(d: CrowdDataset) -> dict[AccKey, float]:
    """Mean score over the ACC_DENSITIES x ACC_SEEDS cases of `d` for every grid key: the
    accuracy on the scored items less SHORTFALL_WEIGHT times any shortfall below majority
    vote's accuracy on them.

    Runs are shared between keys that cannot differ: the majority-vote switch is applied
    afterwards, and (threshold, discount) pairs that flag the same worker pairs (all of them
    when none is flagged) give one run.
    """
    per_key: dict[AccKey, list[float]] = {}
    for case in cases_for(d, ACC_DENSITIES, ACC_SEEDS):
        ans = case_answers(d, case)
        truth = d.truth[case.scored]
        mv_acc = float(np.mean(case.run(d, "mv").labels[case.scored] == truth))
        apw = float(np.median(ans.per_worker[ans.per_worker > 0]))
        ref = one_coin_dawid_skene(
            ans, None, None, ans.k, class_prior_smoothing=1.0, stopping="objective"
        )
        z = dependent_pairs(ans, ref.confusions, ref.class_prior, z_threshold=np.inf).z
        memo: dict[tuple, float] = {}
        for (s1, s2), cp, anchor in itertools.product(SHRINKAGE, CP_STRENGTH, CP_ANCHOR):
            for z0, discount in Z_DISCOUNT:
                flagged = tuple(np.flatnonzero(z > z0).tolist())
                mk = (s1, s2, cp, anchor, flagged, discount if flagged else None)
                if mk not in memo:
                    c = with_accuracy(DEFAULTS, (s1, s2, cp, anchor, 0.0, z0, discount))
                    lab = case.run(d, "default", constants=c, calibrated=False).labels
                    acc = float(np.mean(lab[case.scored] == truth))
                    memo[mk] = acc - SHORTFALL_WEIGHT * max(0.0, mv_acc - acc)
                for min_apw in MIN_APW:
                    key = (s1, s2, cp, anchor, min_apw, z0, discount)
                    per_key.setdefault(key, []).append(mv_acc if apw < min_apw else memo[mk])
    return {key: float(np.mean(v)) for key, v in per_key.items()}


@dataclass
class Fit:
    """LODO fit: per data set the constants chosen without it, and the production fit."""

    fold: dict[str, DefaultConstants]
    production: DefaultConstants
    acc_tables: dict[str, dict[AccKey, float]]


def fit_all(datasets: Mapping[str, CrowdDataset], log=print) -> Fit:
    """Every fold's constants (chosen on the other data sets) and the production constants
    (chosen on all of them), in the two stages of the module docstring."""
    tables = {}
    for name, d in datasets.items():
        tables[name] = accuracy_table(d)
        log(f"# fit: accuracy grid {name}")
    chosen = lodo_choose(tables)
    names = list(tables)
    keys = list(tables[names[0]])
    totals = np.array([sum(tables[n][k] for n in names) for k in keys])
    production_key = keys[int(np.argmax(totals))]
    raws: dict[tuple[str, AccKey], list[Raw]] = {}

    def raw_for(name: str, key: AccKey) -> list[Raw]:
        if (name, key) not in raws:
            d = datasets[name]
            c = with_accuracy(DEFAULTS, key)
            raws[(name, key)] = [raw_case(d, case, c) for case in cases_for(d)]
        return raws[(name, key)]

    fold = {}
    for name in names:
        key = chosen[name]
        train = [r for other in names if other != name for r in raw_for(other, key)]
        fold[name] = fit_calibration_constants(train, with_accuracy(DEFAULTS, key))
        log(f"# fit: fold {name}: {key}")
    everything = [r for other in names for r in raw_for(other, production_key)]
    production = fit_calibration_constants(everything, with_accuracy(DEFAULTS, production_key))
    return Fit(fold, production, tables)


__all__ = [
    "DEFAULTS",
    "Case",
    "Fit",
    "Raw",
    "accuracy_key",
    "accuracy_table",
    "cases_for",
    "fit_all",
    "fit_calibration_constants",
    "gold_labels",
    "lodo_choose",
    "raw_case",
    "subsample",
    "with_accuracy",
]
