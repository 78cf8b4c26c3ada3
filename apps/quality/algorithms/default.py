"""Concord's default aggregator: guarded Dawid-Skene that falls back to the answers when they
cannot support a model, learns from the job's gold, and delivers calibrated confidence.

Every accuracy constant here is in `DEFAULTS`, fitted leave-one-dataset-out on the 18 shared
crowd data sets by `bench/aggregation.py` (each value chosen on 17 sets and scored on the
18th; the bench prints the per-set choices and re-fits them with `--fit`). The caps below
them (`max_pair_rows`, `fit_answers`, `refine_iter`) are engineering bounds on time and
memory, not accuracy choices: every shared data set is under them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from ._answers import Answers, integer_codes
from .aggregation import (
    Aggregation,
    _one_coin_confusions,
    _result,
    _soft_majority_columns,
    as_answers,
    dawid_skene,
    dedupe_last,
    majority_vote,
    no_answers,
    one_coin_dawid_skene,
)
from .confidence import Calibration, fit_calibration
from .dependence import dependence_aware_dawid_skene, dependent_pairs

# The kernels take an `Answers` in place of their three arrays (`aggregation.as_answers`):
# built once per job, it is most of a kernel's memory at millions of answers. These aliases
# say so to the type checker without widening the kernels' public signatures.
_dawid_skene: Callable[..., Aggregation] = dawid_skene
_one_coin: Callable[..., Aggregation] = one_coin_dawid_skene
_majority_vote: Callable[..., Aggregation] = majority_vote


@dataclass(frozen=True)
class DefaultConstants:
    """The default method's constants (see `DEFAULTS` for the fitted values)."""

    # One-coin pseudo-answers per true-class row of every worker's confusion matrix.
    shrinkage: float = 5.0
    # Pseudo-answers per row distributed like the crowd's pooled confusion matrix: on
    # sparse jobs a worker's matrix keeps the crowd's class-specific errors (everyone says
    # class 1 too often) instead of a symmetric one-coin form that leaves ties to the
    # class prior.
    pooled_shrinkage: float = 0.0
    # Dirichlet pseudo-counts per answered item pulling the class prior toward uniform
    # (0: learned freely; inf: fixed uniform). A freely learned prior can absorb a crowd's
    # bias on sparse jobs (every item pushed to one class), a uniform one misses real
    # imbalance (zencrowd: 78% one class).
    class_prior_strength: float = 0.0
    # Dirichlet pseudo-counts per answered item pulling the class prior toward the vote
    # shares: EM's prior-posterior loop cannot then run away to one class on a sparse job
    # (duck at 3 answers per item: 92% of items pushed to one class by a freely learned
    # prior), while an imbalanced crowd keeps its imbalance.
    class_prior_anchor: float = 0.0
    # Below this many answers per worker (median over workers), worker quality cannot be
    # told from the answers: the result is majority vote (ties to the lowest class).
    min_answers_per_worker: float = 0.0
    # Worker pairs sharing >= min_overlap tasks whose agreement is > z_threshold standard
    # errors above conditional independence are discounted by 1 / (1 + discount * partners).
    min_overlap: int = 50
    z_threshold: float = 9.0
    discount: float = 4.0
    # Calibration prior (confidence.fit_calibration): centre and strength in gold items.
    temperature: float = 1.0
    floor: float = 0.0
    calibration_strength: float = 30.0
    # A job where no item has two answers: the accuracy of a lone answer (Beta prior mean
    # and strength in gold answers), the only thing the confidence can say then.
    single_answer_accuracy: float = 0.7
    single_answer_strength: float = 10.0
    # Engineering caps: the dependence test samples tasks beyond this many answer pairs;
    # beyond fit_answers, the model is fitted on a task sample of that many answers, then
    # refined on all answers for refine_iter EM steps.
    max_pair_rows: int = 250_000
    fit_answers: int = 250_000
    refine_iter: int = 3


# Fitted on all 18 shared data sets by `bench/aggregation.py` (which prints these values
# and whether they still match; each data set's own LODO score uses constants fitted on the
# 17 others). Grids: bench/default_fit.py.
DEFAULTS = DefaultConstants(
    shrinkage=1.25,
    pooled_shrinkage=1.25,
    class_prior_strength=0.0,
    class_prior_anchor=3.0,
    min_answers_per_worker=4.0,
    z_threshold=9.0,
    discount=2.0,
    temperature=1.658,
    floor=0.06555,
    calibration_strength=1.0,
    single_answer_accuracy=0.7126,
    single_answer_strength=10.0,
)


def default_aggregation(
    tasks: np.ndarray | Answers,
    workers: np.ndarray | None,
    labels: np.ndarray | None,
    n_classes: int,
    *,
    n_tasks: int | None = None,
    n_workers: int | None = None,
    gold: np.ndarray | None = None,
    constants: DefaultConstants = DEFAULTS,
    calibrated: bool = True,
    **options: object,
) -> Aggregation:
    """Concord's default, in four steps; answers only, plus the job's gold when given.

    1. Duplicate (task, worker) rows keep the worker's LAST answer (a correction), as
       `dedupe_last` does. No answers at all: every task at the uniform prior.
    2. No item has two answers: nothing tells workers apart, so the result is each item's
       answer, with the confidence of a lone answer (the gold accuracy of the job's
       answers, shrunk toward `single_answer_accuracy`).
    3. Otherwise Dawid-Skene with each worker's matrix shrunk toward their one-coin form
       (`shrinkage` pseudo-answers per class; sparse workers behave one-coin, heavy ones
       earn class-specific biases), run to convergence of the MAP objective, after a test
       of every worker pair for dependence (`dependence.dependent_pairs`, against a one-coin
       reference fit): flagged pairs' shared answers are discounted and cannot certify each
       other. With too few answers per worker (median below `min_answers_per_worker`) to
       tell workers apart, majority vote instead.
    4. Calibration: the posteriors are tempered and floored (`confidence.calibrate`) with
       parameters fitted on the job's gold items (`gold[t]` their class, -1 elsewhere)
       around a crowd-wide prior; the labels do not change. Gold is used for nothing else:
       clamping gold items in EM (`dawid_skene(known=...)`) taught the matrices a little
       (+0.2 points) but made the gold items look more certain than the rest, so the
       calibration fitted on them promised too much (relevance: ECE 0.11 against 0.06).

    `options` pass to Dawid-Skene (e.g. `init_confusions`, `prior` from the job's history).
    """
    if not isinstance(tasks, Answers):
        t = integer_codes(tasks, "task")
        w = integer_codes(workers, "worker")
        lab = integer_codes(labels, "label")
        if t.size and workers is not None and _has_duplicates(t, w):
            keep = dedupe_last(t, w)
            t, w, lab = t[keep], w[keep], lab[keep]
        ans = Answers(t, w, lab, n_classes, n_tasks, n_workers)
    else:
        ans = tasks
    if ans.n == 0:
        return replace(no_answers("default", ans), detail="no answers: class prior")
    known = _gold_array(gold, ans)
    if int(ans.per_task.max()) <= 1:
        return _single_answers(ans, known, constants)
    c = constants
    vote = float(np.median(ans.per_worker[ans.per_worker > 0])) < c.min_answers_per_worker
    if vote:
        result, detail = _majority(ans), "majority vote (too few answers per worker)"
    else:
        params = {
            "shrinkage": c.shrinkage,
            "shrink_to": "onecoin",
            "pooled_shrinkage": c.pooled_shrinkage,
            "prior": 0.01,
            "stopping": "objective",
        }
        params.update(options)
        if ans.n > c.fit_answers and "init_confusions" not in options:
            result, detail = _fit_at_scale(ans, c, params)
        else:
            result, detail = _guarded_fit(ans, c, params)
    if not calibrated:
        return replace(result, method="default", detail=detail)
    cal = _calibration(ans, result, known, c)
    post = result.posteriors
    if ans.answered.any():
        post = post.copy()
        post[ans.answered] = cal.apply(post[ans.answered])
    detail += f"; calibrated T={cal.temperature:.3g} floor={cal.floor:.3g} on {cal.n_gold} gold"
    return replace(result, method="default", posteriors=post, detail=detail)


def _has_duplicates(tasks: np.ndarray, workers: np.ndarray) -> bool:
    """Whether a (task, worker) pair repeats: one sort of int64 keys, about half the cost of
    `dedupe_last`'s indexed unique, which then runs only when needed."""
    t, w = tasks, workers
    if t.size != w.size or t.min() < 0 or w.min() < 0:
        return False  # Answers rejects negative codes with its own message
    keys = np.sort(t * (int(w.max()) + 1) + w)
    return bool((keys[1:] == keys[:-1]).any())


def _class_prior_pseudo(ans: Answers, c: DefaultConstants) -> np.ndarray:
    """(K,) Dirichlet pseudo-counts of the class prior for the answers `ans`: one per class,
    `class_prior_strength` per answered item spread evenly (toward uniform), and
    `class_prior_anchor` per answered item spread like the vote shares."""
    n = float(ans.answered.sum())
    pseudo = np.full(ans.k, 1.0 + min(c.class_prior_strength * n, 1e12))
    if c.class_prior_anchor > 0 and n > 0:
        shares = ans.answered_sum(_soft_majority_columns(ans)) / n
        pseudo += c.class_prior_anchor * n * shares
    return pseudo


def _with_class_prior(ans: Answers, c: DefaultConstants, params: dict) -> dict:
    """`params` with the class prior's pseudo-counts for `ans` (unless the caller set them)."""
    if "class_prior_smoothing" in params:
        return params
    return dict(params, class_prior_smoothing=_class_prior_pseudo(ans, c))


def _gold_array(gold: np.ndarray | None, ans: Answers) -> np.ndarray | None:
    if gold is None:
        return None
    known = np.asarray(gold, dtype=np.int64).ravel()
    if known.size != ans.n_tasks:
        raise ValueError("gold must have one entry per task (-1 where unknown)")
    if known.size and int(known.max()) >= ans.k:
        raise ValueError("a gold class is >= n_classes")
    return known if (known >= 0).any() else None


# The Dawid-Skene options the dependence-aware fit shares.
_GUARDED_KEYS = (
    "prior",
    "shrinkage",
    "pooled_shrinkage",
    "class_prior_smoothing",
    "init_confusions",
    "init_class_prior",
    "max_iter",
    "tol",
)


def _guarded_fit(ans: Answers, c: DefaultConstants, params: dict) -> tuple[Aggregation, str]:
    """Shrunk Dawid-Skene with the dependence guard (step 3)."""
    params = _with_class_prior(ans, c, params)
    reference = _one_coin(ans, None, None, ans.k, class_prior_smoothing=1.0, stopping="objective")
    pairs = dependent_pairs(
        ans,
        reference.confusions,
        reference.class_prior,
        min_overlap=c.min_overlap,
        z_threshold=c.z_threshold,
        max_pair_rows=c.max_pair_rows,
    )
    name = f"ds+onecoin-shrinkage({c.shrinkage:g})"
    if c.pooled_shrinkage > 0:
        name += f"+pooled-shrinkage({c.pooled_shrinkage:g})"
    if c.class_prior_anchor > 0:
        name += f", class prior anchored to the votes ({c.class_prior_anchor:g})"
    if not pairs.flagged.any():
        return _dawid_skene(ans, None, None, ans.k, **params), name
    result = dependence_aware_dawid_skene(
        ans,
        pairs,
        discount=c.discount,
        **{key: params[key] for key in _GUARDED_KEYS if key in params},
    )
    flagged = ", ".join(f"{a}-{b}" for a, b in pairs.flagged_pairs)
    return result, f"{name}, dependent pairs discounted: {flagged}"


def _fit_at_scale(ans: Answers, c: DefaultConstants, params: dict) -> tuple[Aggregation, str]:
    """Beyond `fit_answers`: the guarded fit on a fixed random sample of tasks holding about
    that many answers, then `refine_iter` EM steps on every answer from its matrices."""
    keep_task = np.random.default_rng(0).random(ans.n_tasks) < c.fit_answers / ans.n
    code = np.cumsum(keep_task) - 1
    sel = np.flatnonzero(keep_task[ans.t])
    sample = Answers(
        code[ans.t[sel]], ans.w[sel], ans.l[sel], ans.k, int(keep_task.sum()), ans.n_workers
    )
    fitted, name = _guarded_fit(sample, c, params)
    del sample, sel
    refine = _with_class_prior(ans, c, dict(params, max_iter=c.refine_iter))
    refine["init_confusions"] = fitted.confusions
    refine["init_class_prior"] = fitted.class_prior
    name += f", fitted on {int(keep_task.sum())} sampled tasks, refined on all"
    if "dependent pairs" not in name:
        return _dawid_skene(ans, None, None, ans.k, **refine), name
    # Flagged pairs in the sample: discount them on every task they share.
    reference = _one_coin(
        ans, None, None, ans.k, class_prior_smoothing=1.0, stopping="objective", max_iter=10
    )
    pairs = dependent_pairs(
        ans,
        reference.confusions,
        reference.class_prior,
        min_overlap=c.min_overlap,
        z_threshold=c.z_threshold,
        max_pair_rows=c.max_pair_rows,
    )
    if not pairs.flagged.any():
        return _dawid_skene(ans, None, None, ans.k, **refine), name
    result = dependence_aware_dawid_skene(
        ans,
        pairs,
        discount=c.discount,
        **{key: refine[key] for key in _GUARDED_KEYS if key in refine},
    )
    return result, name


def _majority(ans: Answers) -> Aggregation:
    """Majority vote, the fallback of step 3."""
    return replace(_majority_vote(ans, None, None, ans.k), method="default")


def _single_answers(ans: Answers, known: np.ndarray | None, c: DefaultConstants) -> Aggregation:
    """Step 2: each item's one answer, as sure as a lone answer is (gold-estimated)."""
    k = ans.k
    hits = n_gold = 0
    if known is not None:
        on_gold = known[ans.t] >= 0
        n_gold = int(on_gold.sum())
        hits = int((ans.l[on_gold] == known[ans.t[on_gold]]).sum())
    s = c.single_answer_strength
    acc = (hits + s * c.single_answer_accuracy) / (n_gold + s)
    acc = float(np.clip(acc, 1.0 / k, 1.0 - 1e-6))
    post = np.full((ans.n_tasks, k), (1.0 - acc) / (k - 1))
    post[ans.t, ans.l] = acc
    votes = np.bincount(ans.l, minlength=k).astype(np.float64) + 1.0
    class_prior = votes / votes.sum()
    return _result(
        "default",
        ans,
        post,
        class_prior,
        _one_coin_confusions(np.full(ans.n_workers, acc), k),
        n_iter=0,
        converged=True,
        log_likelihood=np.nan,
        detail=f"one answer per item: the answer, accuracy {acc:.3f} from {n_gold} gold answers",
    )


def _calibration(
    ans: Answers, result: Aggregation, known: np.ndarray | None, c: DefaultConstants
) -> Calibration:
    """Step 4: calibration fitted on the gold items' posteriors (from their answers alone)."""
    prior = {"temperature": c.temperature, "floor": c.floor, "strength": c.calibration_strength}
    if known is None:
        return Calibration(c.temperature, c.floor, 0)
    gold_tasks = np.flatnonzero((known >= 0) & ans.answered)
    if gold_tasks.size == 0:
        return Calibration(c.temperature, c.floor, 0)
    post = result.posteriors[gold_tasks]  # EM never saw their gold
    return fit_calibration(post, known[gold_tasks], **prior)


__all__ = ["DEFAULTS", "DefaultConstants", "as_answers", "default_aggregation"]
