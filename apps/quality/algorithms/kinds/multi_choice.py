"""Tag sets ("which of these apply"): binary relevance with a two-coin Dawid-Skene per tag.

Each of the K tags is a yes/no question (binary relevance, Zhang & Zhou, "A review on
multi-label learning algorithms", TKDE 2014). Worker j says "yes" to a present tag with
probability a_j (sensitivity) and "no" to an absent one with probability b_j (specificity):
the two-coin model of Raykar et al. (JMLR 2010), which is Dawid & Skene (1979) with two
classes. By default a worker's two coins are shared across the tags, so a worker who tags
too much, too little or at random is found from all their answers, not from the few on one
tag; `share_workers=False` gives every (worker, tag) its own coins, which is Crowd-Kit's
`BinaryRelevance(DawidSkene())`. Tag prevalences are per tag. Counts are smoothed by one
pseudo-answer each way (Laplace), which keeps a worker with one answer off 0 and 1.

E-step: log-odds of tag k on item i = logit(p_k) + sum over the item's answers of
y log(a_j / (1 - b_j)) + (1 - y) log((1 - a_j) / b_j). M-step: the coins and prevalences
from the posteriors. A worker whose coins sum below 1 (a_j + b_j < 1, worse than chance)
keeps them: the model reads their answers reversed, as Dawid-Skene does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .base import AnswerError, ItemGroups, KindResult, alpha_coincidence, group_sum, sizes

NAME = "multi_choice"


@dataclass(frozen=True)
class MultiChoiceResult(KindResult):
    """Per item the tag set and each tag's posterior; per worker the two coins.

    `confidence` is the least sure tag's max(p, 1 - p): an item is as settled as its least
    settled tag. An item with no answers has NaN posteriors and no tags.
    """

    tags: np.ndarray  # (n_tasks, K) bool
    posterior: np.ndarray  # (n_tasks, K) P(tag present)
    sensitivity: np.ndarray  # (n_workers,) or (n_workers, K) if coins are per tag
    specificity: np.ndarray
    prevalence: np.ndarray  # (K,)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def binary_relevance_em(
    tasks: np.ndarray,
    workers: np.ndarray,
    answers: np.ndarray,
    *,
    n_tasks: int | None = None,
    n_workers: int | None = None,
    share_workers: bool = True,
    smoothing: float = 1.0,
    n_iter: int = 50,
    tol: float = 1e-3,
) -> MultiChoiceResult:
    """Two-coin Dawid-Skene per tag, initialised from the share of workers who tagged."""
    tasks, workers, n_tasks, n_workers = sizes(tasks, workers, n_tasks, n_workers)
    y = np.asarray(answers, dtype=np.float64)
    if y.ndim != 2:
        raise AnswerError("bad_shape", "answers must be a (submissions, tags) array")
    n_sub, k = y.shape
    groups = ItemGroups.of(tasks, n_tasks)
    # Work in item order so per-item sums are contiguous.
    tasks, workers, y = tasks[groups.order], workers[groups.order], y[groups.order]
    n_i = np.bincount(tasks, minlength=n_tasks).astype(np.float64)
    has = n_i > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        q = groups.sum(y) / n_i[:, None]
    q = np.where(has[:, None], q, 0.5)
    # Coins per worker (the k columns pooled) or per (worker, tag).
    n_groups = n_workers if share_workers else n_workers * k
    cols = np.arange(k)[None, :]

    y_rows = y.sum(axis=1)
    # The "yes" answers as (answer, tag) pairs: tag sets are sparse, so the shared-coin
    # sums run over these instead of the dense (answers, tags) table.
    pos_a, pos_k = np.nonzero(y)
    pos_cell = tasks[pos_a] * k + pos_k
    pos_w = workers[pos_a]
    n_per_worker = np.bincount(workers, minlength=n_workers).astype(np.float64)
    yes_per_worker = group_sum(workers, y_rows, n_workers)

    def shared_m_sums(q: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per worker: sum q y, sum q, sum (1 - q)(1 - y), sum (1 - q), over answers and tags."""
        qy = group_sum(pos_w, np.take(q.ravel(), pos_cell), n_workers)
        qs = group_sum(workers, np.take(q.sum(axis=1), tasks), n_workers)
        total = k * n_per_worker
        return qy, qs, total - qs - yes_per_worker + qy, total - qs

    def m_sums(qa: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per coin: sum q y, sum q, sum (1 - q)(1 - y), sum (1 - q)."""
        idx = (workers[:, None] * k + cols).ravel()
        qy = (qa * y).ravel()
        qf = qa.ravel()
        yf = y.ravel()
        sums = [qy, qf, 1 - qf - yf + qy, 1 - qf]
        return tuple(group_sum(idx, v, n_groups) for v in sums)  # type: ignore[return-value]

    sens = spec = np.full(n_groups, 0.5)
    prev = np.full(k, 0.5)
    for _ in range(n_iter):
        # M-step from the current posteriors.
        if share_workers:
            qy, qs, nqny, nqs = shared_m_sums(q)
        else:
            qy, qs, nqny, nqs = m_sums(np.take(q, tasks, axis=0))
        sens = np.clip((qy + smoothing) / (qs + 2 * smoothing), 1e-6, 1 - 1e-6)
        spec = np.clip((nqny + smoothing) / (nqs + 2 * smoothing), 1e-6, 1 - 1e-6)
        prev = np.clip(
            (q[has].sum(axis=0) + smoothing) / (has.sum() + 2 * smoothing), 1e-6, 1 - 1e-6
        )
        # E-step: each answer adds `no` for its coin, plus `yes - no` where it said yes.
        yes = np.log(sens / (1 - spec))
        no = np.log((1 - sens) / spec)
        if share_workers:
            base = groups.sum(np.take(no, workers))[:, None]
            said_yes = group_sum(pos_cell, np.take(yes - no, pos_w), n_tasks * k)
            logit = base + said_yes.reshape(n_tasks, k)
        else:
            no_a = np.take(no.reshape(n_workers, k), workers, axis=0)
            d_a = np.take((yes - no).reshape(n_workers, k), workers, axis=0)
            logit = groups.sum(no_a + y * d_a)
        logit += np.log(prev / (1 - prev))[None, :]
        q_new = np.where(has[:, None], _sigmoid(logit), 0.5)
        moved = float(np.max(np.abs(q_new - q))) if q.size else 0.0
        q = q_new
        if moved < tol:
            break
    posterior = np.where(has[:, None], q, np.nan)
    tags = np.nan_to_num(posterior, nan=0.0) > 0.5
    conf = np.where(has, np.min(np.maximum(q, 1 - q), axis=1) if k else 1.0, np.nan)
    shape = (n_workers, k) if not share_workers else (n_workers,)
    sens_w, spec_w = sens.reshape(shape), spec.reshape(shape)
    # Youden's J = a + b - 1: 0 for a coin flip, 1 for a perfect worker.
    youden = np.clip(sens_w + spec_w - 1.0, 0.0, 1.0)
    weight = youden if share_workers else youden.mean(axis=1)
    return MultiChoiceResult(
        n_answers=n_i,
        confidence=conf,
        worker_weight=weight,
        tags=tags,
        posterior=posterior,
        sensitivity=sens_w,
        specificity=spec_w,
        prevalence=prev,
    )


def set_codes(answers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's tag set as a code into the distinct sets, and those sets as bit masks."""
    y = np.asarray(answers, dtype=bool)
    if y.shape[1] > 62:
        raise AnswerError("too_many_tags", "agreement supports at most 62 tags")
    masks = (y.astype(np.int64) << np.arange(y.shape[1], dtype=np.int64)[None, :]).sum(axis=1)
    uniq, codes = np.unique(masks, return_inverse=True)
    return codes, uniq


def set_distance(a: np.ndarray, b: np.ndarray, metric: str = "masi") -> np.ndarray:
    """Jaccard or MASI distance between tag sets given as int64 bit masks (broadcasting).

    Jaccard distance is 1 - |A & B| / |A | B| (two empty sets are equal: 0). MASI (Passonneau
    2006) multiplies the Jaccard similarity by 1 for equal sets, 2/3 when one contains the
    other, 1/3 when they only overlap and 0 when disjoint.
    """
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    inter = np.bitwise_count(a & b).astype(np.float64)
    union = np.bitwise_count(a | b).astype(np.float64)
    jac = np.divide(inter, union, out=np.ones_like(inter), where=union > 0)
    if metric == "jaccard":
        return 1.0 - jac
    if metric != "masi":
        raise ValueError(f"unknown set distance {metric!r}")
    subset = ((a & b) == a) | ((a & b) == b)
    mono = np.where(a == b, 1.0, np.where(subset, 2 / 3, np.where(inter > 0, 1 / 3, 0.0)))
    return 1.0 - jac * mono


@dataclass(frozen=True)
class MultiChoiceKind:
    """Any subset of `tags` (an empty set allowed unless `min_tags` > 0)."""

    tags: tuple[str, ...]
    min_tags: int = 0
    max_tags: int | None = None
    name: str = NAME

    def __post_init__(self) -> None:
        if not self.tags:
            raise AnswerError("no_tags", "a multi_choice kind needs at least one tag")
        if len(set(self.tags)) != len(self.tags):
            raise AnswerError("duplicate_tags", "tags must be distinct")

    def encode(self, answers: list[Any]) -> np.ndarray:
        index = {t: i for i, t in enumerate(self.tags)}
        out = np.zeros((len(answers), len(self.tags)), dtype=bool)
        for n, a in enumerate(answers):
            if not isinstance(a, list | tuple):
                raise AnswerError("not_a_list", f"expected a list of tags, got {a!r}", index=n)
            unknown = [t for t in a if t not in index]
            if unknown:
                raise AnswerError("unknown_tag", f"unknown tags {unknown!r}", index=n)
            if len(set(a)) != len(a):
                raise AnswerError("duplicate_tag", "a tag is listed twice", index=n)
            if len(a) < self.min_tags or (self.max_tags is not None and len(a) > self.max_tags):
                raise AnswerError(
                    "tag_count", f"{len(a)} tags is outside the allowed count", index=n
                )
            out[n, [index[t] for t in a]] = True
        return out

    def decode(self, tags: np.ndarray) -> list[list[str]]:
        """Boolean rows back to tag lists, in the kind's tag order."""
        return [[self.tags[k] for k in np.flatnonzero(row)] for row in np.asarray(tags, bool)]

    def aggregate(
        self,
        tasks: np.ndarray,
        workers: np.ndarray,
        answers: np.ndarray,
        *,
        n_tasks: int | None = None,
        n_workers: int | None = None,
    ) -> MultiChoiceResult:
        return binary_relevance_em(tasks, workers, answers, n_tasks=n_tasks, n_workers=n_workers)

    def agreement(self, tasks: np.ndarray, answers: np.ndarray, *, metric: str = "masi") -> float:
        """Krippendorff's alpha over tag sets with the MASI (default) or Jaccard distance."""
        answers = np.asarray(answers, dtype=bool).reshape(-1, len(self.tags))
        codes, masks = set_codes(answers)
        delta = set_distance(masks[:, None], masks[None, :], metric)
        return alpha_coincidence(tasks, codes, delta)

    def gold_score(
        self, answers: np.ndarray, gold: np.ndarray, *, metric: str = "jaccard"
    ) -> np.ndarray:
        """Jaccard (default) or F1 of each answer's set with its gold set; two empty sets: 1."""
        a = np.asarray(answers, dtype=bool)
        g = np.asarray(gold, dtype=bool)
        inter = (a & g).sum(axis=1).astype(np.float64)
        if metric == "jaccard":
            union = (a | g).sum(axis=1).astype(np.float64)
            return np.divide(inter, union, out=np.ones_like(inter), where=union > 0)
        if metric == "f1":
            total = (a.sum(axis=1) + g.sum(axis=1)).astype(np.float64)
            return np.divide(2 * inter, total, out=np.ones_like(inter), where=total > 0)
        raise ValueError(f"unknown gold metric {metric!r}")

    def is_confident(self, result: KindResult, *, target: float) -> np.ndarray:
        """Every tag's posterior is at least `target` sure either way."""
        return np.nan_to_num(result.confidence, nan=0.0) >= target
