"""The one interface every label kind implements, its shared result fields and helpers.

A kind turns raw JSON answers into arrays (`encode`, which validates), aggregates them per
item (`aggregate`), measures agreement, scores answers against gold and says when an item
is confident enough to stop asking. Arrays are indexed per *submission*: `tasks[s]` and
`workers[s]` are the item and worker of submission `s`, and the kind's encoded answers hold
one entry per submission (a tag row, a level, a number, or a submission's list of boxes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np


class AnswerError(ValueError):
    """An answer or a kind's parameters do not fit the kind; `code` is machine-readable."""

    def __init__(self, code: str, message: str, *, index: int | None = None) -> None:
        super().__init__(message if index is None else f"answer {index}: {message}")
        self.code = code
        self.message = message
        self.index = index


@dataclass(frozen=True)
class KindResult:
    """Fields every kind's result has; each kind's result adds its own value fields.

    `confidence` is in [0, 1] per item and NaN where an item has no answer; what it means is
    the kind's (a posterior, a coverage of the tolerance, a box agreement), documented there.
    """

    n_answers: np.ndarray  # (n_tasks,) submissions per item
    confidence: np.ndarray  # (n_tasks,)
    worker_weight: np.ndarray  # (n_workers,) how much each worker counted, in [0, 1]


@runtime_checkable
class LabelKind(Protocol):
    """What a label kind provides; one module per kind, registered by `name`."""

    name: str

    def encode(self, answers: list[Any]) -> Any:
        """Validate raw answers (JSON values) and encode them; raises AnswerError."""

    def aggregate(
        self,
        tasks: np.ndarray,
        workers: np.ndarray,
        answers: Any,
        *,
        n_tasks: int | None = None,
        n_workers: int | None = None,
    ) -> KindResult:
        """Per-item result with its confidence from every submission's encoded answer."""

    def agreement(self, tasks: np.ndarray, answers: Any) -> float:
        """Krippendorff's alpha with the kind's distance (mean IoU for boxes); NaN if none."""

    def gold_score(self, answers: Any, gold: Any) -> np.ndarray:
        """Per-submission score in [0, 1] of `answers[s]` against `gold[s]`."""

    def is_confident(self, result: KindResult, *, target: float) -> np.ndarray:
        """(n_tasks,) bool: the item needs no more answers at this target."""


def sizes(tasks: np.ndarray, workers: np.ndarray, n_tasks: int | None, n_workers: int | None):
    """The index arrays as int64 and the table sizes (max + 1 unless given)."""
    tasks = np.asarray(tasks, dtype=np.int64)
    workers = np.asarray(workers, dtype=np.int64)
    if n_tasks is None:
        n_tasks = int(tasks.max()) + 1 if tasks.size else 0
    if n_workers is None:
        n_workers = int(workers.max()) + 1 if workers.size else 0
    return tasks, workers, n_tasks, n_workers


def normal_cdf(x: np.ndarray) -> np.ndarray:
    """Standard normal CDF, vectorised without scipy (W. J. Cody's erfc via A&S 7.1.26).

    Abramowitz & Stegun 7.1.26 has an absolute error below 1.5e-7, far below what the
    likelihoods here need.
    """
    x = np.asarray(x, dtype=np.float64)
    z = np.abs(x) / math.sqrt(2.0)
    t = 1.0 / (1.0 + 0.3275911 * z)
    poly = t * (
        0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429)))
    )
    erfc = poly * np.exp(-z * z)
    return np.where(x >= 0, 1.0 - 0.5 * erfc, 0.5 * erfc)


def group_sum(index: np.ndarray, weights: np.ndarray, n: int) -> np.ndarray:
    """Sum of `weights` per group index (bincount with a fixed length, always float64)."""
    return np.bincount(index, weights=weights, minlength=n)[:n].astype(np.float64, copy=False)


def alpha_interval(tasks: np.ndarray, values: np.ndarray) -> float:
    """Krippendorff's alpha with the interval distance (a - b)^2, in O(n) by sums of squares.

    Only items with two or more answers are pairable (Krippendorff 2011). Within an item of
    m values, the sum over ordered pairs of (a - b)^2 is 2 (m sum a^2 - (sum a)^2), weighted
    by 1 / (m - 1); the expected disagreement uses the same identity over all pairable values.
    NaN where nothing is pairable or all values are equal.
    """
    tasks = np.asarray(tasks, dtype=np.int64)
    values = np.asarray(values, dtype=np.float64)
    if tasks.size == 0:
        return float("nan")
    n_tasks = int(tasks.max()) + 1
    m = np.bincount(tasks, minlength=n_tasks).astype(np.float64)
    keep = m[tasks] >= 2
    t, v = tasks[keep], values[keep]
    n = float(v.size)
    if n < 2:
        return float("nan")
    # Centre for numerical stability; the distance is translation invariant.
    v = v - v.mean()
    s1 = group_sum(t, v, n_tasks)
    s2 = group_sum(t, v * v, n_tasks)
    ok = m >= 2
    d_within = (2.0 * (m[ok] * s2[ok] - s1[ok] ** 2) / (m[ok] - 1.0)).sum()
    d_all = 2.0 * (n * (v * v).sum() - v.sum() ** 2)
    if d_all <= 0:
        return float("nan")
    return float(1.0 - (n - 1.0) * d_within / d_all)


def within_item_pairs(tasks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every unordered pair (a, b), a != b, of positions that share an item, in O(pairs).

    Positions are sorted by item; pairing each position with the one d places later, for
    d = 1 .. (largest item size - 1), and keeping those still in the same item visits every
    pair exactly once.
    """
    tasks = np.asarray(tasks, dtype=np.int64)
    order = np.argsort(tasks, kind="stable")
    st = tasks[order]
    if st.size < 2:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    largest = int(np.bincount(st).max())
    left, right = [], []
    for d in range(1, largest):
        same = st[:-d] == st[d:]
        idx = np.flatnonzero(same)
        left.append(order[idx])
        right.append(order[idx + d])
    if not left:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    return np.concatenate(left), np.concatenate(right)


def alpha_coincidence(tasks: np.ndarray, codes: np.ndarray, delta: np.ndarray) -> float:
    """Krippendorff's alpha for values coded 0..V-1 with a (V, V) distance matrix `delta`.

    The coincidence matrix o_ck = sum_u (pairs (c, k) in item u) / (m_u - 1) is built from
    the within-item pairs (both orders), so its cost is the number of pairs, not items x V;
    then alpha = 1 - (n - 1) sum_ck o_ck delta_ck / sum_ck n_c n_k delta_ck (Krippendorff
    2011, "Computing Krippendorff's alpha-reliability"). NaN where nothing is pairable or
    every pairable value is the same.
    """
    tasks = np.asarray(tasks, dtype=np.int64)
    codes = np.asarray(codes, dtype=np.int64)
    v = delta.shape[0]
    if tasks.size < 2:
        return float("nan")
    m = np.bincount(tasks)
    a, b = within_item_pairs(tasks)
    if a.size == 0:
        return float("nan")
    w = 1.0 / (m[tasks[a]] - 1.0)
    flat = np.bincount(codes[a] * v + codes[b], weights=w, minlength=v * v)
    flat += np.bincount(codes[b] * v + codes[a], weights=w, minlength=v * v)
    o = flat.reshape(v, v)
    n_c = o.sum(axis=1)
    n = n_c.sum()
    expected = (np.outer(n_c, n_c) * delta).sum()
    if expected <= 0:
        return float("nan")
    return float(1.0 - (n - 1.0) * (o * delta).sum() / expected)


@dataclass(frozen=True)
class ItemGroups:
    """Submissions sorted by item, for fast per-item sums of 1-D or 2-D arrays (reduceat).

    `order` sorts the submissions by item; `sum(values)` takes values already in that order
    and returns (n_tasks, ...) sums, zero for items without submissions.
    """

    order: np.ndarray
    starts: np.ndarray
    present: np.ndarray
    n_tasks: int

    @classmethod
    def of(cls, tasks: np.ndarray, n_tasks: int) -> ItemGroups:
        order = np.argsort(tasks, kind="stable")
        st = tasks[order]
        boundary = np.ones(st.size, dtype=bool)
        boundary[1:] = st[1:] != st[:-1]
        starts = np.flatnonzero(boundary)
        return cls(order=order, starts=starts, present=st[starts], n_tasks=n_tasks)

    def sum(self, values: np.ndarray) -> np.ndarray:
        out = np.zeros((self.n_tasks, *values.shape[1:]))
        if self.starts.size:
            out[self.present] = np.add.reduceat(values, self.starts, axis=0)
        return out
