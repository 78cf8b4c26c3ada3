"""Ratings on an ordered scale (1-5 relevance, severity): Dawid-Skene with ordered confusions.

Plain Dawid & Skene (1979) gives every worker a free K x K confusion matrix, which treats
"4 for a 5" as wrong as "1 for a 5" and needs many answers per worker. Here a worker's
confusion row for true level c is a discretised Gaussian around c + b_j (bias b_j, spread
s_j), mixed with a uniform "spam" share e_j:

    P(y = k | c) = (1 - e_j) [Phi((k + 1/2 - c - b_j) / s_j) - Phi((k - 1/2 - c - b_j) / s_j)]
                   + e_j / K,

the end levels taking the Gaussian's tails (an ordered-probit worker, cf. Johnson & Albert,
"Ordinal Data Modeling", 1999, and the worker bias/precision of Welinder et al. 2010).
Adjacent levels are near misses; three numbers per worker are estimated from all of their
answers. EM: the E-step is Dawid-Skene's posterior over the true level; the M-step sets
e_j from the posterior share of spam, and b_j, s_j from the moments of (y - c) over the
non-spam share (a moment step, not the exact censored maximum; 1/12 is added to s_j^2 for
the rounding, Sheppard's correction). Priors: one pseudo-answer of spam and one of non-spam
for e_j; two pseudo-answers of no bias and a spread of one level for b_j and s_j (so a
worker with one answer is not explained away by a bias of their own), and a floor of 0.25
levels on s_j, so that a perfect worker does not produce zeros. None was tuned on the
data sets scored in bench/label_kinds.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .base import (
    AnswerError,
    KindResult,
    alpha_coincidence,
    normal_cdf,
    sizes,
)

NAME = "ordinal"


@dataclass(frozen=True)
class OrdinalResult(KindResult):
    """Per item the most probable level, its posterior and the posterior mean level.

    `confidence` is the posterior of the chosen level. No answers: level -1, posterior NaN.
    """

    level: np.ndarray  # (n_tasks,) int, -1 without answers
    posterior: np.ndarray  # (n_tasks, K)
    expected: np.ndarray  # (n_tasks,) posterior mean level
    bias: np.ndarray  # (n_workers,)
    spread: np.ndarray  # (n_workers,)
    spam: np.ndarray  # (n_workers,)


def ordered_confusions(
    bias: np.ndarray, spread: np.ndarray, spam: np.ndarray, k: int
) -> np.ndarray:
    """(n_workers, K true, K answered) confusion matrices of the model above."""
    c = np.arange(k, dtype=np.float64)[None, :, None]
    edges = np.arange(k + 1, dtype=np.float64) - 0.5
    z = (edges[None, None, :] - c - bias[:, None, None]) / spread[:, None, None]
    cdf = normal_cdf(z)
    cdf[..., 0] = 0.0
    cdf[..., -1] = 1.0
    gauss = np.diff(cdf, axis=-1)
    return (1.0 - spam)[:, None, None] * gauss + spam[:, None, None] / k


def ordinal_em(
    tasks: np.ndarray,
    workers: np.ndarray,
    levels: np.ndarray,
    n_levels: int,
    *,
    n_tasks: int | None = None,
    n_workers: int | None = None,
    n_iter: int = 50,
    tol: float = 1e-3,
    min_spread: float = 0.25,
    prior_answers: float = 2.0,
) -> OrdinalResult:
    """EM for the ordered-confusion worker model; initialised from answer counts per level.

    The M-step needs only each worker's soft confusion counts S[j, c, y] = sum of the
    posterior of true level c over their answers y (Dawid-Skene's sufficient statistics),
    so after one pass over the answers it works on (workers, K, K) arrays.

    Layout, for speed at a million answers: posteriors are held level-major, (K, n_tasks),
    and both passes over the answers are one `bincount` per level (soft counts by the
    answer's (worker, level) cell; log-likelihoods by item). A per-level pass reads and
    writes contiguous rows, where a gather of (n, K) rows and a reduction along a K-wide
    axis are three times slower (profiled on the bench's 1M answers). The sums are the same
    sums in the same order as a per-answer loop, so the result does not depend on it.
    """
    tasks, workers, n_tasks, n_workers = sizes(tasks, workers, n_tasks, n_workers)
    k = int(n_levels)
    # Answers in item order, so gathers by item and sums into items run sequentially.
    order = np.argsort(tasks, kind="stable")
    tasks, workers = tasks[order], workers[order]
    y = np.asarray(levels, dtype=np.int64)[order]
    n_i = np.bincount(tasks, minlength=n_tasks).astype(np.float64)
    n_j = np.bincount(workers, minlength=n_workers).astype(np.float64)
    has = n_i > 0
    n_cells = n_workers * k
    cell = workers * k + y  # (worker, answered level) of each answer
    # qt[c, i]: the posterior that item i's true level is c; uniform where unanswered.
    answered = np.stack(
        [np.bincount(tasks, weights=(y == c), minlength=n_tasks) for c in range(k)]
    ).astype(np.float64)
    qt = np.where(has[None, :], answered + 1e-3, 1.0)
    qt /= qt.sum(axis=0)
    bias = np.zeros(n_workers)
    spread = np.ones(n_workers)
    spam = np.full(n_workers, 0.1)
    c_lv = np.arange(k, dtype=np.float64)
    resid = c_lv[None, :] - c_lv[:, None]  # resid[c, y] = y - c
    prior = np.full(k, 1.0 / k)
    n_has = float(has.sum())
    for _ in range(n_iter):
        # Soft confusion counts [j, c, y] from the posteriors, one pass over the answers.
        soft = np.stack(
            [np.bincount(cell, weights=qt[c][tasks], minlength=n_cells) for c in range(k)]
        )
        counts = soft.reshape(k, n_workers, k).transpose(1, 0, 2)
        conf = ordered_confusions(bias, spread, spam, k)
        spam_share = (spam / k)[:, None, None] / np.maximum(conf, 1e-300)
        w = counts * (1.0 - spam_share)
        wsum = w.sum(axis=(1, 2))
        spam = ((counts * spam_share).sum(axis=(1, 2)) + 1.0) / (n_j + 2.0)
        # Priors: `prior_answers` pseudo-answers with no bias and a spread of one level.
        bias = (w * resid).sum(axis=(1, 2)) / (wsum + prior_answers)
        dev = resid[None] - bias[:, None, None]
        var = ((w * dev * dev).sum(axis=(1, 2)) + prior_answers) / (wsum + prior_answers)
        spread = np.sqrt(np.maximum(var + 1.0 / 12.0, min_spread**2))
        prior = (np.where(has[None, :], qt, 0.0).sum(axis=1) + 1.0) / (n_has + k)
        # E-step: log P(y | c) of every answer, summed per item, one level at a time.
        log_conf = np.log(ordered_confusions(bias, spread, spam, k))  # [j, c, y]
        log_post = np.stack(
            [
                math.log(prior[c])
                + np.bincount(tasks, weights=log_conf[:, c, :].ravel()[cell], minlength=n_tasks)
                for c in range(k)
            ]
        )
        log_post -= log_post.max(axis=0)
        q_new = np.exp(log_post)
        q_new /= q_new.sum(axis=0)
        q_new = np.where(has[None, :], q_new, 1.0 / k)
        moved = float(np.max(np.abs(q_new - qt))) if qt.size else 0.0
        qt = q_new
        if moved < tol:
            break
    q = np.ascontiguousarray(qt.T)
    posterior = np.where(has[:, None], q, np.nan)
    level = np.where(has, np.argmax(q, axis=1), -1)
    conf_i = np.where(has, q.max(axis=1), np.nan)
    # A worker counts by how sharply they pin a level: 1 for spread at the floor, no spam.
    weight = np.where(n_j > 0, (1.0 - spam) * min_spread / spread, 0.0)
    return OrdinalResult(
        n_answers=n_i,
        confidence=conf_i,
        worker_weight=weight,
        level=level,
        posterior=posterior,
        expected=np.where(has, q @ c_lv, np.nan),
        bias=bias,
        spread=spread,
        spam=spam,
    )


def ordinal_distance(counts_per_level: np.ndarray) -> np.ndarray:
    """Krippendorff's ordinal distance matrix from the pairable counts n_c of each level.

    delta_ck = (sum_{g=c..k} n_g - (n_c + n_k) / 2)^2 (Krippendorff 2011).
    """
    n = np.asarray(counts_per_level, dtype=np.float64)
    cum = np.concatenate([[0.0], np.cumsum(n)])
    c = np.arange(n.size)
    lo, hi = np.minimum(c[:, None], c[None, :]), np.maximum(c[:, None], c[None, :])
    span = cum[hi + 1] - cum[lo]
    return (span - (n[:, None] + n[None, :]) / 2.0) ** 2


@dataclass(frozen=True)
class OrdinalKind:
    """One of `levels`, an ordered list (lowest first); answers are level names or indexes."""

    levels: tuple[str, ...]
    name: str = NAME

    def __post_init__(self) -> None:
        if len(self.levels) < 2:
            raise AnswerError("too_few_levels", "an ordinal kind needs at least two levels")
        if len(set(self.levels)) != len(self.levels):
            raise AnswerError("duplicate_levels", "levels must be distinct")

    def encode(self, answers: list[Any]) -> np.ndarray:
        index = {v: i for i, v in enumerate(self.levels)}
        out = np.empty(len(answers), dtype=np.int64)
        for n, a in enumerate(answers):
            if isinstance(a, str) and a in index:
                out[n] = index[a]
            else:
                raise AnswerError(
                    "unknown_level", f"{a!r} is not one of {list(self.levels)!r}", index=n
                )
        return out

    def aggregate(
        self,
        tasks: np.ndarray,
        workers: np.ndarray,
        answers: np.ndarray,
        *,
        n_tasks: int | None = None,
        n_workers: int | None = None,
    ) -> OrdinalResult:
        return ordinal_em(
            tasks, workers, answers, len(self.levels), n_tasks=n_tasks, n_workers=n_workers
        )

    def agreement(self, tasks: np.ndarray, answers: np.ndarray) -> float:
        """Krippendorff's alpha with the ordinal distance."""
        tasks = np.asarray(tasks, dtype=np.int64)
        answers = np.asarray(answers, dtype=np.int64)
        if tasks.size == 0:
            return float("nan")
        m = np.bincount(tasks)
        pairable = m[tasks] >= 2
        n_c = np.bincount(answers[pairable], minlength=len(self.levels))
        return alpha_coincidence(tasks, answers, ordinal_distance(n_c))

    def gold_score(self, answers: np.ndarray, gold: np.ndarray) -> np.ndarray:
        """1 - |answer - gold| / (K - 1): 1 exact, 0 at the opposite end of the scale."""
        err = np.abs(np.asarray(answers, np.float64) - np.asarray(gold, np.float64))
        return 1.0 - err / (len(self.levels) - 1)

    def is_confident(self, result: KindResult, *, target: float) -> np.ndarray:
        """The chosen level's posterior is at least `target`."""
        return np.nan_to_num(result.confidence, nan=0.0) >= target
