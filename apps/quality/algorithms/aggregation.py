"""Truth inference: turn redundant crowd answers into per-item class posteriors and worker quality."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._answers import Answers, argmax_columns, digamma, softmax_columns, softmax_rows

# Stored with every result. 1.1.0: the default method discounts dependent worker pairs.
# 2.0.0: the default returns the answer when no item has two, keeps the last of duplicate
# (task, worker) answers, learns from gold, calibrates its confidence and samples at scale.
# 2.1.0: the default's worker matrices are also shrunk toward the crowd's pooled matrix and
# its class prior is anchored to the vote shares (fitted leave-one-dataset-out).
VERSION = "2.1.0"

# Probabilities are clipped here before taking logs, so a worker who has never been seen
# to give some label still leaves every class possible.
_EPS = 1e-12


@dataclass(frozen=True)
class Aggregation:
    """Result of one aggregation run.

    `confusions[w, c, l]` is P(worker w answers l | true class c); every method fills it
    (one-coin models spread the error mass evenly), so `item_posterior` can score new
    answers with any method's output. `skills[w]` is the worker's expected accuracy under
    `class_prior`.
    """

    method: str
    version: str
    posteriors: np.ndarray  # (n_tasks, K); tasks without answers get class_prior
    labels: np.ndarray  # (n_tasks,) argmax of posteriors, ties to the lowest class
    class_prior: np.ndarray  # (K,)
    confusions: np.ndarray  # (n_workers, K, K)
    skills: np.ndarray  # (n_workers,)
    n_iter: int
    converged: bool
    log_likelihood: float  # marginal log-likelihood of the answers at the returned parameters
    task_difficulty: np.ndarray | None = None  # GLAD: exp(beta_t), larger is easier
    spam: np.ndarray | None = None  # MACE: P(worker answers at random)
    detail: str = ""  # free text, e.g. which sub-model the default chose


# ----------------------------------------------------------------------------- helpers


def _result_columns(
    method: str,
    ans: Answers,
    post_kt: np.ndarray,
    class_prior: np.ndarray,
    confusions: np.ndarray,
    **kwargs: object,
) -> Aggregation:
    """`_result` for EM that ran class-major: (K, n_tasks) posteriors, tasks without answers
    set to the class prior, transposed once at the end."""
    if not ans.all_answered:
        post_kt[:, ~ans.answered] = class_prior[:, None]
    return _result(
        method,
        ans,
        np.ascontiguousarray(post_kt.T),
        class_prior,
        confusions,
        labels=argmax_columns(post_kt),
        **kwargs,  # type: ignore[arg-type]
    )


def as_answers(
    tasks: np.ndarray | Answers,
    workers: np.ndarray | None,
    labels: np.ndarray | None,
    n_classes: int,
    n_tasks: int | None = None,
    n_workers: int | None = None,
) -> Answers:
    """Validated answers; an `Answers` passed as `tasks` is used as is (callers that run
    several kernels on one job build it once: at millions of answers its index arrays
    are most of a kernel's memory)."""
    if isinstance(tasks, Answers):
        return tasks
    return Answers(tasks, workers, labels, n_classes, n_tasks, n_workers)  # type: ignore[arg-type]


def no_answers(method: str, ans: Answers) -> Aggregation:
    """The result when there is no answer at all: every task at the uniform class prior,
    every worker one-coin at chance (1 / K), nothing estimated (no NaN, no exception)."""
    k = ans.k
    cp = np.full(k, 1.0 / k)
    return Aggregation(
        method=method,
        version=VERSION,
        posteriors=np.full((ans.n_tasks, k), 1.0 / k),
        labels=np.zeros(ans.n_tasks, dtype=np.intp),
        class_prior=cp,
        confusions=np.full((ans.n_workers, k, k), 1.0 / k),
        skills=np.full(ans.n_workers, 1.0 / k),
        n_iter=0,
        converged=True,
        log_likelihood=0.0,
        detail="no answers: class prior",
    )


def _skills(confusions: np.ndarray, class_prior: np.ndarray) -> np.ndarray:
    diag = np.diagonal(confusions, axis1=1, axis2=2)
    return diag @ class_prior


def _one_coin_confusions(skill: np.ndarray, k: int) -> np.ndarray:
    skill = np.asarray(skill, dtype=np.float64)
    off = (1.0 - skill) / (k - 1)
    conf = np.repeat(off[:, None, None], k, axis=1).repeat(k, axis=2)
    idx = np.arange(k)
    conf[:, idx, idx] = skill[:, None]
    return conf


def _result(
    method: str,
    ans: Answers,
    posteriors: np.ndarray,
    class_prior: np.ndarray,
    confusions: np.ndarray,
    *,
    n_iter: int,
    converged: bool,
    log_likelihood: float,
    labels: np.ndarray | None = None,
    **extra: object,
) -> Aggregation:
    # `labels`, when given, must already be the argmax of the returned posteriors.
    if not ans.all_answered:
        posteriors = np.where(ans.answered[:, None], posteriors, class_prior[None, :])
    return Aggregation(
        method=method,
        version=VERSION,
        posteriors=posteriors,
        labels=np.argmax(posteriors, axis=1) if labels is None else labels,
        class_prior=class_prior,
        confusions=confusions,
        skills=_skills(confusions, class_prior),
        n_iter=n_iter,
        converged=converged,
        log_likelihood=float(log_likelihood),
        **extra,  # type: ignore[arg-type]
    )


def _soft_majority(ans: Answers) -> np.ndarray:
    counts = ans.vote_counts()
    total = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, total, out=np.full_like(counts, 1.0 / ans.k), where=total > 0)


def _soft_majority_columns(ans: Answers) -> np.ndarray:
    """`_soft_majority` class-major: (K, n_tasks) vote shares, 1/K for unanswered tasks."""
    votes = np.bincount(ans.lt, minlength=ans.k * ans.n_tasks)
    counts = votes.reshape(ans.k, ans.n_tasks).astype(np.float64)
    if ans.all_answered:
        counts /= ans.per_task
        return counts
    return np.divide(
        counts, ans.per_task, out=np.full_like(counts, 1.0 / ans.k), where=ans.answered
    )


def _confusion_log_table(confusions: np.ndarray) -> np.ndarray:
    """(W, K_true, K_label) probabilities -> (K_true, W * K_label) logs for `gather_wl`."""
    logc = np.log(np.clip(confusions, _EPS, None))
    return np.ascontiguousarray(logc.transpose(1, 0, 2).reshape(confusions.shape[1], -1))


def _log_table(log_confusions: np.ndarray) -> np.ndarray:
    """(W, K_true, K_label) log probabilities -> the (K_true, W * K_label) table that
    `Answers.class_scores` sums per task; always a new array (callers modify it)."""
    k = log_confusions.shape[1]
    return np.array(log_confusions.transpose(1, 0, 2), order="C").reshape(k, -1)


def _confusion_e_step(
    ans: Answers, confusions: np.ndarray, class_prior: np.ndarray
) -> tuple[np.ndarray, float]:
    """Class-major posteriors (K, n_tasks) and the marginal log-likelihood."""
    scores = ans.class_scores(_confusion_log_table(confusions))
    scores += np.log(np.clip(class_prior, _EPS, None))[:, None]
    post, lse = softmax_columns(scores)
    return post, float(ans.answered_sum(lse))


def _surrogate_elbo(
    ans: Answers,
    post: np.ndarray,
    scores: np.ndarray,
    log_cp: np.ndarray,
    score_offset: float = 0.0,
) -> float:
    """Crowd-Kit's per-answer loss: E_q[log p(answers | z)] + (answers per task) * E_q[log pi]
    + H(q) over answered tasks, divided by the number of answers; class-major (K, n_tasks)
    `post` and `scores`.

    Tasks without answers have zero scores and zero answers, so only the entropy needs the
    answered mask; the rest is two dot products instead of (n_tasks, K) temporaries (as
    `einsum` loops: a BLAS call would wake OpenBLAS's threads, which costs more than it
    saves on a busy machine).
    `score_offset` is the sum over answered tasks of a per-task amount left out of every
    class's scores (posteriors sum to one, so it adds to the expectation as is).
    """
    if ans.n == 0:
        return 0.0  # nothing is answered (and the class prior is undefined)
    joint = float(np.einsum("kt,kt->", post, scores)) + score_offset
    joint += float(log_cp @ np.einsum("kt,t->k", post, ans.per_task))
    q_log_q = np.log(np.maximum(post, _EPS))
    if ans.all_answered:
        entropy = -float(np.einsum("kt,kt->", post, q_log_q))
    else:
        q_log_q *= post
        entropy = -float(ans.answered_sum(q_log_q.sum(axis=0)))
    return (joint + entropy) / max(ans.n, 1)


class _Clamp:
    """Gold tasks whose posteriors EM pins to their known class (nothing when there are none)."""

    __slots__ = ("idx", "cls")

    def __init__(self, idx: np.ndarray, cls: np.ndarray) -> None:
        self.idx, self.cls = idx, cls

    @classmethod
    def build(cls, known: np.ndarray | None, ans: Answers) -> _Clamp:
        if known is None:
            return cls(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
        known = np.asarray(known, dtype=np.int64).ravel()
        if known.size != ans.n_tasks:
            raise ValueError("known must have one entry per task (-1 where unknown)")
        if known.size and known.max() >= ans.k:
            raise ValueError("a known class is >= n_classes")
        idx = np.flatnonzero((known >= 0) & ans.answered)
        return cls(idx, known[idx])

    def columns(self, post_kt: np.ndarray) -> None:
        """Pin class-major (K, n_tasks) posteriors in place."""
        if self.idx.size:
            post_kt[:, self.idx] = 0.0
            post_kt[self.cls, self.idx] = 1.0

    def rows(self, post: np.ndarray) -> None:
        """Pin task-major (n_tasks, K) posteriors in place."""
        if self.idx.size:
            post[self.idx] = 0.0
            post[self.idx, self.cls] = 1.0


def _prior_array(prior: float | np.ndarray, n_workers: int, k: int) -> np.ndarray:
    arr = np.asarray(prior, dtype=np.float64)
    if arr.ndim == 0:
        return np.full((1, k, k), float(arr))
    if arr.shape == (k, k):
        return arr[None, :, :]
    if arr.shape == (n_workers, k, k):
        return arr
    raise ValueError(f"prior must be a scalar, ({k}, {k}) or ({n_workers}, {k}, {k})")


def _pooled_confusion(counts: np.ndarray) -> np.ndarray:
    """The crowd's confusion matrix (K, K): every worker's soft counts (W, K, K) summed."""
    return _normalise_counts(counts.sum(axis=0) + 1e-3)


def _class_prior_update(
    ans: Answers, post: np.ndarray, smoothing: float | np.ndarray
) -> np.ndarray:
    mass = post[ans.answered].sum(axis=0) + smoothing
    return mass / mass.sum()


# ----------------------------------------------------------------------------- majority vote


def majority_vote(
    tasks: np.ndarray,
    workers: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    *,
    n_tasks: int | None = None,
    n_workers: int | None = None,
) -> Aggregation:
    """Vote shares per task; worker quality is the soft confusion against those shares."""
    ans = as_answers(tasks, workers, labels, n_classes, n_tasks, n_workers)
    if ans.n == 0:
        return no_answers("mv", ans)
    post = _soft_majority(ans)
    class_prior = _class_prior_update(ans, post, 1.0)
    conf = _normalise_counts(ans.confusion_counts(post) + 1.0 / ans.k)
    return _result(
        "mv", ans, post, class_prior, conf, n_iter=1, converged=True, log_likelihood=np.nan
    )


def _normalise_counts(counts: np.ndarray) -> np.ndarray:
    return counts / counts.sum(axis=-1, keepdims=True)


def weighted_majority_vote(
    tasks: np.ndarray,
    workers: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    *,
    n_tasks: int | None = None,
    n_workers: int | None = None,
    skills: np.ndarray | None = None,
) -> Aggregation:
    """Votes weighted by worker skill (Wawa when `skills` is None).

    Without given skills, a worker's skill is their agreement rate with the plain majority
    label, as Crowd-Kit's Wawa does; pass gold-based skills to weight by accuracy instead.
    """
    ans = as_answers(tasks, workers, labels, n_classes, n_tasks, n_workers)
    if ans.n == 0:
        return no_answers("wmv", ans)
    if skills is None:
        mv_label = np.argmax(_soft_majority(ans), axis=1)
        agree = (np.take(mv_label, ans.t) == ans.l).astype(np.float64)
        hits = np.bincount(ans.w, weights=agree, minlength=ans.n_workers)
        skills = np.divide(
            hits, ans.per_worker, out=np.zeros(ans.n_workers), where=ans.per_worker > 0
        )
    skills = np.asarray(skills, dtype=np.float64)
    post = ans.vote_counts(weights=np.take(skills, ans.w))
    total = post.sum(axis=1, keepdims=True)
    post = np.divide(post, total, out=_soft_majority(ans), where=total > 0)
    class_prior = _class_prior_update(ans, post, 1.0)
    conf = _one_coin_confusions(np.clip(skills, 0.0, 1.0), ans.k)
    return _result(
        "wmv", ans, post, class_prior, conf, n_iter=1, converged=True, log_likelihood=np.nan
    )


# ----------------------------------------------------------------------------- Dawid-Skene


def _warm_start(
    init_confusions: np.ndarray, init_class_prior: np.ndarray | None, n_workers: int, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Checked starting confusions and class prior (uniform if none) for a warm-started EM."""
    conf = np.asarray(init_confusions, dtype=np.float64)
    if conf.shape != (n_workers, k, k):
        raise ValueError(f"init_confusions must have shape ({n_workers}, {k}, {k})")
    cp = (
        np.full(k, 1.0 / k)
        if init_class_prior is None
        else np.asarray(init_class_prior, dtype=np.float64)
    )
    return conf, cp


def dawid_skene(
    tasks: np.ndarray,
    workers: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    *,
    n_tasks: int | None = None,
    n_workers: int | None = None,
    init_confusions: np.ndarray | None = None,
    init_class_prior: np.ndarray | None = None,
    prior: float | np.ndarray = 1e-10,
    shrinkage: float = 0.0,
    shrink_to: str = "pooled",
    class_prior_smoothing: float | np.ndarray = 0.0,
    max_iter: int = 100,
    tol: float = 1e-5,
    stopping: str = "elbo",
    known: np.ndarray | None = None,
    pooled_shrinkage: float = 0.0,
) -> Aggregation:
    """Dawid-Skene EM with full per-worker confusion matrices.

    `prior` holds Dirichlet pseudo-counts added to each worker's soft confusion counts in
    every M-step: a scalar smooths every cell, a (K, K) array is shared by all workers and a
    (n_workers, K, K) array gives each worker their own (e.g. counts from earlier jobs, so
    their history acts as a prior). `init_confusions` / `init_class_prior` warm-start EM
    from a previous run instead of from majority vote.

    `shrinkage` > 0 adds, per true-class row, that many pseudo-counts distributed like the
    pooled confusion of all workers (re-estimated every iteration, i.e. an empirical-Bayes
    hierarchical prior): workers with few answers are pulled toward the crowd's average
    behaviour instead of getting a noisy matrix of their own. `pooled_shrinkage` adds that
    many pooled pseudo-counts per row on top of `shrinkage` toward `shrink_to`, so a prior
    can mix both targets (the default: each worker's one-coin form and the crowd's
    class-specific errors).

    `class_prior_smoothing` is a scalar added to every class's mass, or a (K,) array of
    Dirichlet pseudo-counts (e.g. centred on the vote shares).

    `stopping` = "elbo" (the default) stops as Crowd-Kit's DawidSkene does: as soon as the
    per-answer expected complete-data log-likelihood plus posterior entropy (with the class
    prior counted once per answer, as Crowd-Kit counts it) rises by less than `tol`,
    including when it falls; the returned posteriors are the E-step of the final parameters.
    That surrogate is not monotone under EM, so on some crowds this stops after a couple of
    steps from majority vote; `stopping="objective"` instead runs until the per-answer change
    of the MAP objective falls below `tol`.

    `known` (n_tasks,) gives the true class of gold tasks (-1 elsewhere): their posteriors
    are clamped to it in every step (semi-supervised EM), so gold answers teach the worker
    matrices directly.
    """
    if stopping not in ("elbo", "objective"):
        raise ValueError("stopping must be 'elbo' or 'objective'")
    ans = as_answers(tasks, workers, labels, n_classes, n_tasks, n_workers)
    if ans.n == 0:
        return no_answers("ds", ans)
    k = ans.k
    alpha = _prior_array(prior, ans.n_workers, k)
    clamp = _Clamp.build(known, ans)
    if init_confusions is not None:
        conf, cp = _warm_start(init_confusions, init_class_prior, ans.n_workers, k)
        # EM runs class-major: posteriors and scores are (K, n_tasks), so per-task
        # reductions over the classes are row operations; see `Answers.class_scores`.
        post, ll = _confusion_e_step(ans, conf, cp)
        clamp.columns(post)
        if max_iter == 0:
            post = np.ascontiguousarray(post.T)
            return _result("ds", ans, post, cp, conf, n_iter=0, converged=False, log_likelihood=ll)
    else:
        post = _soft_majority_columns(ans)
        clamp.columns(post)
    objective = -np.inf
    converged = False
    it = 0
    for it in range(1, max_iter + 1):  # noqa: B007 - `it` is reported after the loop
        counts = ans.class_counts(post).reshape(k, ans.n_workers, k).transpose(1, 0, 2)
        pseudo = alpha
        if shrinkage > 0 and shrink_to == "pooled":
            pseudo = alpha + shrinkage * _pooled_confusion(counts)[None, :, :]
        elif shrinkage > 0:
            # Centre each worker's prior on their own one-coin matrix (same accuracy on
            # every class), so asymmetry must be earned by evidence.
            acc = (np.trace(counts, axis1=1, axis2=2) + 1.0) / (counts.sum(axis=(1, 2)) + 2.0)
            pseudo = alpha + shrinkage * _one_coin_confusions(acc, k)
        if pooled_shrinkage > 0:
            pseudo = pseudo + pooled_shrinkage * _pooled_confusion(counts)[None, :, :]
        conf = _normalise_counts(counts + pseudo)
        mass = ans.answered_sum(post) + class_prior_smoothing
        cp = mass / mass.sum()
        log_conf = np.log(np.clip(conf, _EPS, None))
        # Scores relative to the last class (softmax is unchanged, and that class's row
        # needs no pass over the answers); its per-task totals only enter the objectives,
        # summed over all answers as `base`.
        table = _log_table(log_conf)
        last = table[-1].copy()
        base = float(np.einsum("i,i->", ans.wl_counts, last))
        table -= last
        scores = ans.class_scores(table, last_is_zero=True)
        log_cp = np.log(np.clip(cp, _EPS, None))
        if stopping == "elbo":
            new_objective = _surrogate_elbo(ans, post, scores, log_cp, base)
        scores += log_cp[:, None]
        post, lse = softmax_columns(scores)
        clamp.columns(post)
        ll = float(ans.answered_sum(lse)) + base
        if stopping == "elbo":
            if new_objective - objective < tol:
                converged = True
                break
            objective = new_objective
            continue
        new_objective = ll + float((pseudo * log_conf).sum())
        if abs(new_objective - objective) <= tol * max(ans.n, 1):
            converged = True
            break
        objective = new_objective
    return _result_columns(
        "ds", ans, post, cp, conf, n_iter=it, converged=converged, log_likelihood=ll
    )


def one_coin_dawid_skene(
    tasks: np.ndarray,
    workers: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    *,
    n_tasks: int | None = None,
    n_workers: int | None = None,
    init_skills: np.ndarray | None = None,
    skill_prior: tuple[float, float] = (0.0, 0.0),
    class_prior_smoothing: float = 0.0,
    max_iter: int = 100,
    tol: float = 1e-5,
    stopping: str = "elbo",
) -> Aggregation:
    """Dawid-Skene with one accuracy per worker; errors spread evenly over the other classes.

    `skill_prior` = (a, b) are Beta pseudo-counts of correct / wrong answers added to every
    worker, which keeps workers with a handful of answers away from 0 and 1 ((0.5, 0.5) is
    the Jeffreys prior); the default (0, 0) is the plain maximum-likelihood update, as in
    Crowd-Kit. `stopping` and `tol` work as in `dawid_skene`.
    """
    if stopping not in ("elbo", "objective"):
        raise ValueError("stopping must be 'elbo' or 'objective'")
    ans = as_answers(tasks, workers, labels, n_classes, n_tasks, n_workers)
    if ans.n == 0:
        return no_answers("onecoin", ans)
    k = ans.k
    a, b = skill_prior
    # Class-major like `dawid_skene`: posteriors are (K, n_tasks).
    if init_skills is not None:
        skill = np.asarray(init_skills, dtype=np.float64)
        cp = np.full(k, 1.0 / k)
        post, ll = _one_coin_e_step(ans, skill, cp)
    else:
        post = _soft_majority_columns(ans)
    objective = -np.inf
    converged = False
    it = 0
    for it in range(1, max_iter + 1):  # noqa: B007 - `it` is reported after the loop
        hit = np.take(post.ravel(), ans.lt)
        correct = np.bincount(ans.w, weights=hit, minlength=ans.n_workers)
        seen = ans.per_worker + a + b
        # A worker without answers (n_workers larger than the codes seen) stays at chance.
        skill = np.divide(correct + a, seen, out=np.full(ans.n_workers, 1.0 / k), where=seen > 0)
        mass = ans.answered_sum(post) + class_prior_smoothing
        cp = mass / mass.sum()
        if stopping == "elbo":
            scores = _one_coin_scores(ans, skill)
            log_cp = np.log(np.clip(cp, _EPS, None))
            new_objective = _surrogate_elbo(ans, post, scores, log_cp)
            scores += log_cp[:, None]
            post, lse = softmax_columns(scores)
            ll = float(ans.answered_sum(lse))
            if new_objective - objective < tol:
                converged = True
                break
            objective = new_objective
            continue
        post, ll = _one_coin_e_step(ans, skill, cp)
        new_objective = ll + float(
            (
                a * np.log(np.clip(skill, _EPS, None)) + b * np.log(np.clip(1 - skill, _EPS, None))
            ).sum()
        )
        if abs(new_objective - objective) <= tol * max(ans.n, 1):
            converged = True
            break
        objective = new_objective
    return _result_columns(
        "onecoin",
        ans,
        post,
        cp,
        _one_coin_confusions(skill, k),
        n_iter=it,
        converged=converged,
        log_likelihood=ll,
    )


def _coin_scores(ans: Answers, log_right: np.ndarray, log_wrong: np.ndarray) -> np.ndarray:
    """Per-task class scores (n_tasks, K) when answer n has log P = log_right if label ==
    class else log_wrong: the transposed view of `_coin_scores_columns`."""
    return _coin_scores_columns(ans, log_right, log_wrong).T


def _coin_scores_columns(ans: Answers, log_right: np.ndarray, log_wrong: np.ndarray) -> np.ndarray:
    """`_coin_scores` class-major: (K, n_tasks), from per-answer log_right / log_wrong."""
    base = np.bincount(ans.t, weights=log_wrong, minlength=ans.n_tasks)
    scores = np.bincount(ans.lt, weights=log_right - log_wrong, minlength=ans.k * ans.n_tasks)
    scores = scores.reshape(ans.k, ans.n_tasks).astype(np.float64, copy=False)
    scores += base
    return scores


def _one_coin_scores(ans: Answers, skill: np.ndarray) -> np.ndarray:
    """Class-major (K, n_tasks) per-task sums of one-coin answer log-likelihoods; the logs
    are taken per worker, then gathered per answer."""
    s = np.clip(skill, _EPS, 1 - _EPS)
    log_right = np.log(s)
    log_wrong = np.log((1 - s) / (ans.k - 1))
    return _coin_scores_columns(ans, np.take(log_right, ans.w), np.take(log_wrong, ans.w))


def _one_coin_e_step(
    ans: Answers, skill: np.ndarray, class_prior: np.ndarray
) -> tuple[np.ndarray, float]:
    scores = _one_coin_scores(ans, skill)
    scores += np.log(np.clip(class_prior, _EPS, None))[:, None]
    post, lse = softmax_columns(scores)
    return post, float(ans.answered_sum(lse))


# ----------------------------------------------------------------------------- GLAD


def _log_sigmoid(x: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -x)


def glad(
    tasks: np.ndarray,
    workers: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    *,
    n_tasks: int | None = None,
    n_workers: int | None = None,
    alpha_prior_mean: float = 1.0,
    beta_prior_mean: float = 1.0,
    learn_class_prior: bool = False,
    max_iter: int = 100,
    newton_steps: int = 3,
    tol: float = 1e-7,
) -> Aggregation:
    """GLAD (Whitehill et al. 2009): worker ability alpha_w and task easiness exp(beta_t).

    P(answer correct) = sigmoid(alpha_w * exp(beta_t)); wrong answers are uniform over the
    other classes. Standard-normal priors around the given means (as in Crowd-Kit). The M-step
    takes a few diagonal Fisher-scoring steps, alternating alpha and beta, each a pair of
    bincounts over the answers, instead of a generic optimiser.
    """
    ans = as_answers(tasks, workers, labels, n_classes, n_tasks, n_workers)
    if ans.n == 0:
        return no_answers("glad", ans)
    k = ans.k
    alpha = np.full(ans.n_workers, alpha_prior_mean)
    beta = np.full(ans.n_tasks, beta_prior_mean)
    cp = np.full(k, 1.0 / k)
    log_km1 = np.log(k - 1)

    def e_step() -> tuple[np.ndarray, float]:
        x = np.take(alpha, ans.w) * np.exp(np.take(beta, ans.t))
        scores = _coin_scores(ans, _log_sigmoid(x), _log_sigmoid(-x) - log_km1)
        scores += np.log(np.clip(cp, _EPS, None))[None, :]
        post, lse = softmax_rows(scores)
        return post, float(lse[ans.answered].sum())

    def log_prior() -> float:
        return float(
            -0.5 * ((alpha - alpha_prior_mean) ** 2).sum()
            - 0.5 * ((beta - beta_prior_mean) ** 2).sum()
        )

    post, ll = e_step()
    objective = ll + log_prior()
    converged = False
    it = 0
    for it in range(1, max_iter + 1):  # noqa: B007 - `it` is reported after the loop
        q = np.take(post.ravel(), ans.t * k + ans.l)
        for _ in range(newton_steps):
            eb = np.exp(np.take(beta, ans.t))
            sig = 1.0 / (1.0 + np.exp(-np.take(alpha, ans.w) * eb))
            grad = np.bincount(ans.w, weights=(q - sig) * eb, minlength=ans.n_workers)
            hess = np.bincount(ans.w, weights=sig * (1 - sig) * eb * eb, minlength=ans.n_workers)
            grad -= alpha - alpha_prior_mean
            alpha = alpha + np.clip(grad / (hess + 1.0), -2.0, 2.0)
            x = np.take(alpha, ans.w) * eb
            sig = 1.0 / (1.0 + np.exp(-x))
            grad = np.bincount(ans.t, weights=(q - sig) * x, minlength=ans.n_tasks)
            hess = np.bincount(ans.t, weights=sig * (1 - sig) * x * x, minlength=ans.n_tasks)
            grad -= beta - beta_prior_mean
            beta = beta + np.clip(grad / (hess + 1.0), -2.0, 2.0)
        if learn_class_prior:
            cp = _class_prior_update(ans, post, 1.0)
        post, ll = e_step()
        new_objective = ll + log_prior()
        if abs(new_objective - objective) <= tol * max(ans.n, 1):
            converged = True
            break
        objective = new_objective
    # A one-coin summary at the average task easiness, so item_posterior can use GLAD output.
    mean_easy = float(np.exp(beta[ans.answered]).mean()) if ans.answered.any() else 1.0
    skill = 1.0 / (1.0 + np.exp(-alpha * mean_easy))
    return _result(
        "glad",
        ans,
        post,
        cp,
        _one_coin_confusions(skill, k),
        n_iter=it,
        converged=converged,
        log_likelihood=ll,
        task_difficulty=np.exp(beta),
    )


# ----------------------------------------------------------------------------- MACE


def mace(
    tasks: np.ndarray,
    workers: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    *,
    n_tasks: int | None = None,
    n_workers: int | None = None,
    spam_prior: tuple[float, float] = (0.5, 0.5),
    strategy_prior: float = 10.0,
    n_restarts: int = 3,
    majority_init: bool = True,
    max_iter: int = 50,
    tol: float = 1e-7,
    seed: int = 0,
) -> Aggregation:
    """MACE (Hovy et al. 2013) with variational Bayes: each worker spams with probability s_w.

    A spamming worker answers from their own label distribution xi_w, regardless of the
    truth; otherwise they answer the truth. Restart 0 starts from majority vote; the others
    from random parameters drawn with `seed`; the restart with the highest likelihood wins.
    `spam_prior` = (a_spam, a_know) and `strategy_prior` are the Beta / Dirichlet priors of
    the variational updates (Crowd-Kit's defaults).
    """
    ans = as_answers(tasks, workers, labels, n_classes, n_tasks, n_workers)
    if ans.n == 0:
        return no_answers("mace", ans)
    k, nw = ans.k, ans.n_workers
    rng = np.random.default_rng(seed)
    cp = np.full(k, 1.0 / k)
    log_cp = np.log(cp)

    def e_step(
        spam: np.ndarray, know_w: np.ndarray, xi: np.ndarray
    ) -> tuple[np.ndarray, float, np.ndarray]:
        # Class-major like `dawid_skene`: posteriors are (K, n_tasks) during EM.
        sx = np.take(spam, ans.w) * np.take(xi.ravel(), ans.wl)
        know = np.take(know_w, ans.w)
        log_wrong = np.log(np.clip(sx, _EPS, None))
        log_right = np.log(np.clip(sx + know, _EPS, None))
        scores = _coin_scores_columns(ans, log_right, log_wrong)
        scores += log_cp[:, None]
        post, lse = softmax_columns(scores)
        # P(worker was truthful on this answer): only possible if the label is the truth.
        p_true = np.take(post.ravel(), ans.lt)
        knowing = p_true * know / np.clip(sx + know, _EPS, None)
        return post, float(ans.answered_sum(lse)), knowing

    def m_step(knowing: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        spam_n = 1.0 - knowing
        know_c = np.bincount(ans.w, weights=knowing, minlength=nw) + spam_prior[1]
        spam_c = np.bincount(ans.w, weights=spam_n, minlength=nw) + spam_prior[0]
        strat = np.bincount(ans.wl, weights=spam_n, minlength=nw * k).reshape(nw, k)
        strat += strategy_prior
        # Variational updates use exp(E[log p]); they need not sum to one.
        norm = digamma(spam_c + know_c)
        spam = np.exp(digamma(spam_c) - norm)
        know = np.exp(digamma(know_c) - norm)
        xi = np.exp(digamma(strat) - digamma(strat.sum(axis=1, keepdims=True)))
        return spam, know, xi

    best: tuple[float, np.ndarray, np.ndarray, np.ndarray, np.ndarray, int, bool] | None = None
    for restart in range(max(n_restarts, 1)):
        if restart == 0 and majority_init:
            post = _soft_majority_columns(ans)
            # Start by trusting agreement with the majority, slightly discounted.
            spam, know, xi = m_step(np.take(post.ravel(), ans.lt) * 0.8)
        else:
            spam = rng.uniform(0.1, 0.9, nw)
            know = 1.0 - spam
            xi = rng.uniform(1.0, 1.5, (nw, k))
            xi /= xi.sum(axis=1, keepdims=True)
        post, ll, knowing = e_step(spam, know, xi)
        converged = False
        it = 0
        for it in range(1, max_iter + 1):  # noqa: B007 - `it` is reported after the loop
            spam, know, xi = m_step(knowing)
            new_post, new_ll, knowing = e_step(spam, know, xi)
            done = abs(new_ll - ll) <= tol * max(ans.n, 1)
            post, ll = new_post, new_ll
            if done:
                converged = True
                break
        if best is None or ll > best[0]:
            best = (ll, post, spam, know, xi, it, converged)
    assert best is not None
    ll, post, spam, know, xi, it, converged = best
    xi_n = xi / xi.sum(axis=1, keepdims=True)
    spam_n = spam / (spam + know)
    conf = spam_n[:, None, None] * xi_n[:, None, :] + (1.0 - spam_n)[:, None, None] * np.eye(k)
    return _result_columns(
        "mace",
        ans,
        post,
        cp,
        conf,
        n_iter=it,
        converged=converged,
        log_likelihood=ll,
        spam=spam_n,
    )


# ----------------------------------------------------------------------------- per-item scoring


def item_posterior(
    worker_ids: np.ndarray,
    labels: np.ndarray,
    confusions: np.ndarray,
    class_prior: np.ndarray,
) -> np.ndarray:
    """Posterior over classes for ONE item from its answers and stored worker confusions.

    Used on every submit for dynamic redundancy: O(answers * K), no iteration. A worker id of
    -1 (unknown worker) uses the mean confusion of all stored workers.
    """
    worker_ids = np.asarray(worker_ids, dtype=np.int64).ravel()
    labels = np.asarray(labels, dtype=np.int64).ravel()
    confusions = np.asarray(confusions, dtype=np.float64)
    log_post = np.log(np.clip(np.asarray(class_prior, dtype=np.float64), _EPS, None))
    if worker_ids.size:
        known = worker_ids >= 0
        cols = np.empty((worker_ids.size, confusions.shape[1]))
        cols[known] = confusions[worker_ids[known], :, labels[known]]
        if not known.all():
            cols[~known] = confusions.mean(axis=0)[:, labels[~known]].T
        log_post = log_post + np.log(np.clip(cols, _EPS, None)).sum(axis=0)
    log_post -= log_post.max()
    post = np.exp(log_post)
    return post / post.sum()


# ----------------------------------------------------------------------------- default


# ----------------------------------------------------------------------------- registry


def dedupe_last(tasks: np.ndarray, workers: np.ndarray) -> np.ndarray:
    """Boolean mask keeping only the LAST answer of each (task, worker) pair, in input order.

    The kernels assume one answer per worker per task; a worker who answered twice is taken
    to have corrected themselves.
    """
    t = np.asarray(tasks, dtype=np.int64)
    w = np.asarray(workers, dtype=np.int64)
    key = t * (int(w.max()) + 1 if w.size else 1) + w
    _, first_in_reversed = np.unique(key[::-1], return_index=True)
    keep = np.zeros(t.size, dtype=bool)
    keep[t.size - 1 - first_in_reversed] = True
    return keep
