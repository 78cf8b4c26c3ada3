"""Validated, integer-coded crowd answers and the scatter/gather primitives the EM kernels share."""

from __future__ import annotations

import numpy as np

FloatArray = np.ndarray
IntArray = np.ndarray


class Answers:
    """Answers as parallel int64 arrays plus precomputed indices.

    Each EM iteration is a handful of gathers (`np.take`) and scatters (`np.bincount`) over
    the answers; precomputing `wl = worker * K + label` once keeps every iteration free of
    Python loops over answers, tasks or workers (the only loops are over the K classes).
    """

    __slots__ = (
        "t",
        "w",
        "l",
        "wl",
        "n",
        "n_tasks",
        "n_workers",
        "k",
        "answered",
        "per_worker",
        "per_task",
    )

    def __init__(
        self,
        tasks: np.ndarray,
        workers: np.ndarray,
        labels: np.ndarray,
        n_classes: int,
        n_tasks: int | None = None,
        n_workers: int | None = None,
    ) -> None:
        t = np.asarray(tasks, dtype=np.int64).ravel()
        w = np.asarray(workers, dtype=np.int64).ravel()
        lab = np.asarray(labels, dtype=np.int64).ravel()
        if not (t.size == w.size == lab.size):
            raise ValueError("tasks, workers and labels must have the same length")
        if n_classes < 2:
            raise ValueError("n_classes must be at least 2")
        if t.size:
            if t.min() < 0 or w.min() < 0 or lab.min() < 0:
                raise ValueError("task, worker and label codes must be non-negative")
            if lab.max() >= n_classes:
                raise ValueError("a label code is >= n_classes")
        n_tasks = int(t.max() + 1 if t.size else 0) if n_tasks is None else int(n_tasks)
        n_workers = int(w.max() + 1 if w.size else 0) if n_workers is None else int(n_workers)
        if t.size and (t.max() >= n_tasks or w.max() >= n_workers):
            raise ValueError("a task or worker code is out of range for n_tasks / n_workers")
        self.t, self.w, self.l = t, w, lab
        self.n = int(t.size)
        self.n_tasks, self.n_workers, self.k = n_tasks, n_workers, int(n_classes)
        self.wl = w * self.k + lab
        self.per_task = np.bincount(t, minlength=n_tasks).astype(np.float64)
        self.answered = self.per_task > 0
        self.per_worker = np.bincount(w, minlength=n_workers).astype(np.float64)

    def task_sum(self, by_class: FloatArray) -> FloatArray:
        """Sum a (K, N) per-answer, per-class array into (n_tasks, K)."""
        out = np.empty((self.n_tasks, self.k))
        for c in range(self.k):
            out[:, c] = np.bincount(self.t, weights=by_class[c], minlength=self.n_tasks)
        return out

    def gather_wl(self, table_ck: FloatArray) -> FloatArray:
        """Per-answer values from a (K_true, n_workers * K_label) table: returns (K, N)."""
        return np.take(table_ck, self.wl, axis=1)

    def confusion_counts(self, posteriors: FloatArray) -> FloatArray:
        """Soft counts n[w, c, l] = sum of P(true=c) over worker w's answers with label l."""
        post_t = np.ascontiguousarray(posteriors.T)
        counts = np.empty((self.k, self.n_workers * self.k))
        for c in range(self.k):
            counts[c] = np.bincount(
                self.wl, weights=np.take(post_t[c], self.t), minlength=self.n_workers * self.k
            )
        # (c, w, l) -> (w, c, l)
        return counts.reshape(self.k, self.n_workers, self.k).transpose(1, 0, 2)

    def vote_counts(self, weights: FloatArray | None = None) -> FloatArray:
        """(n_tasks, K) label counts per task, optionally weighted per answer."""
        flat = np.bincount(
            self.t * self.k + self.l, weights=weights, minlength=self.n_tasks * self.k
        )
        return flat.reshape(self.n_tasks, self.k).astype(np.float64, copy=False)


def softmax_rows(log_scores: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Row-wise softmax and the row log-normalisers (log-sum-exp), numerically stable."""
    top = log_scores.max(axis=1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    expd = np.exp(log_scores - top)
    total = expd.sum(axis=1, keepdims=True)
    return expd / total, (np.log(total) + top)[:, 0]


def digamma(x: FloatArray) -> FloatArray:
    """Digamma for positive arrays (recurrence up to x >= 6, then the asymptotic series).

    numpy has no special functions and the kernels must not depend on scipy; the error is
    below 1e-12 for x > 0, which is far more than variational updates need.
    """
    x = np.asarray(x, dtype=np.float64).copy()
    acc = np.zeros_like(x)
    for _ in range(6):
        small = x < 6.0
        if not small.any():
            break
        acc -= np.where(small, 1.0 / np.where(small, x, 1.0), 0.0)
        x = np.where(small, x + 1.0, x)
    inv2 = 1.0 / (x * x)
    series = inv2 * (
        1.0 / 12 - inv2 * (1.0 / 120 - inv2 * (1.0 / 252 - inv2 * (1.0 / 240 - inv2 / 132)))
    )
    return acc + np.log(x) - 0.5 / x - series
