"""Validated, integer-coded crowd answers and the scatter/gather primitives the EM kernels share."""

from __future__ import annotations

import numpy as np

FloatArray = np.ndarray
IntArray = np.ndarray


def integer_codes(values: object, what: str) -> IntArray:
    """`values` as a flat int64 array; ValueError when any is not a whole number (a float
    like 1.5 or NaN would otherwise be truncated silently by the cast), naming the first."""
    arr = np.asarray(values)
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64, copy=False).ravel()
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.dtype.kind == "b" or arr.dtype.kind == "f":
        flat = arr.ravel().astype(np.float64)
        bad = ~np.isfinite(flat) | (flat != np.round(flat))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{what} codes must be integers: row {i} is {float(flat[i])!r}")
        return flat.astype(np.int64)
    raise ValueError(f"{what} codes must be integers, not {arr.dtype}")


class Answers:
    """Answers as parallel int64 arrays plus precomputed indices.

    Each EM iteration is a handful of gathers (`np.take`) and scatters (`np.bincount`) over
    the answers; precomputing `wl = worker * K + label` once keeps every iteration free of
    Python loops over answers, tasks or workers (the only loops are over the K classes).
    The `class_*` helpers reuse one per-answer scratch array, so one instance must not be
    used from several threads at once.
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
        "all_answered",
        "_lt",
        "_wl_counts",
        "_scratch",
        "_layers",
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
        t = integer_codes(tasks, "task")
        w = integer_codes(workers, "worker")
        lab = integer_codes(labels, "label")
        if not (t.size == w.size == lab.size):
            raise ValueError("tasks, workers and labels must have the same length")
        if n_classes < 2:
            raise ValueError("n_classes must be at least 2")
        if t.size:
            if t.min() < 0 or w.min() < 0 or lab.min() < 0:
                raise ValueError("task, worker and label codes must be non-negative")
            if lab.max() >= n_classes:
                raise ValueError("a label code is >= n_classes")
        t_max = int(t.max()) if t.size else -1
        w_max = int(w.max()) if w.size else -1
        n_tasks = t_max + 1 if n_tasks is None else int(n_tasks)
        n_workers = w_max + 1 if n_workers is None else int(n_workers)
        if t_max >= n_tasks or w_max >= n_workers:
            raise ValueError("a task or worker code is out of range for n_tasks / n_workers")
        self.t, self.w, self.l = t, w, lab
        self.n = int(t.size)
        self.n_tasks, self.n_workers, self.k = n_tasks, n_workers, int(n_classes)
        self.wl = w * self.k + lab
        self.per_task = np.bincount(t, minlength=n_tasks).astype(np.float64)
        self.answered = self.per_task > 0
        self.all_answered = bool(self.answered.all())
        self._lt: IntArray | None = None
        self._wl_counts: FloatArray | None = None
        self._scratch: FloatArray | None = None
        self._layers: _Layers | None | bool = False  # False: not built yet
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

    @property
    def lt(self) -> IntArray:
        """Flat index label * n_tasks + task of each answer into a class-major (K, n_tasks)
        array (computed on first use)."""
        if self._lt is None:
            self._lt = self.l * self.n_tasks + self.t
        return self._lt

    @property
    def wl_counts(self) -> FloatArray:
        """Number of answers per worker * K + label (computed on first use)."""
        if self._wl_counts is None:
            counts = np.bincount(self.wl, minlength=self.n_workers * self.k)
            self._wl_counts = counts.astype(np.float64)
        return self._wl_counts

    def class_scores(self, table_ck: FloatArray, *, last_is_zero: bool = False) -> FloatArray:
        """Per-task sums of a (K_true, n_workers * K_label) table over the answers: (K, n_tasks).

        Class-major like all the `class_*` helpers: reductions over the K classes are then
        whole-row operations instead of short strided ones. One class at a time, so no
        (K, N) per-answer temporary is ever built. `last_is_zero` promises the table's last
        row is zero, so that row's scores are zero without a pass over the answers.
        """
        rows = table_ck.shape[0]
        out = np.empty((rows, self.n_tasks))
        buf = self._per_answer_buffer()
        layers = self._task_layers()
        for c in range(rows - 1 if last_is_zero else rows):
            if layers is None:
                # Codes are validated, so mode="clip" only skips numpy's copy-on-`out` guard.
                np.take(table_ck[c], self.wl, out=buf, mode="clip")
                out[c] = np.bincount(self.t, weights=buf, minlength=self.n_tasks)
            else:
                layers.task_sums(table_ck[c], buf, out[c])
        if last_is_zero:
            out[-1] = 0.0
        return out

    def _task_layers(self) -> _Layers | None:
        if self._layers is False:
            self._layers = _Layers.build(self)
        return self._layers  # type: ignore[return-value]

    def class_counts(self, post_kt: FloatArray) -> FloatArray:
        """Soft confusion counts from (K, n_tasks) posteriors as a (K_true, n_workers * K_label)
        table: entry [c, w * K + l] sums P(task true class = c) over worker w's answers l."""
        size = self.n_workers * self.k
        out = np.empty((self.k, size))
        buf = self._per_answer_buffer()
        for c in range(self.k):
            np.take(post_kt[c], self.t, out=buf, mode="clip")
            out[c] = np.bincount(self.wl, weights=buf, minlength=size)
        return out

    def _per_answer_buffer(self) -> FloatArray:
        # One (N,) scratch array reused by every gather of the `class_*` helpers: EM then
        # allocates no per-answer arrays per iteration.
        if self._scratch is None:
            self._scratch = np.empty(self.n)
        return self._scratch

    def answered_sum(self, values: FloatArray) -> FloatArray:
        """Sum over answered tasks along the last axis ((..., n_tasks) -> (...))."""
        if self.all_answered:
            return values.sum(axis=-1)
        return values[..., self.answered].sum(axis=-1)

    def vote_counts(self, weights: FloatArray | None = None) -> FloatArray:
        """(n_tasks, K) label counts per task, optionally weighted per answer."""
        flat = np.bincount(
            self.t * self.k + self.l, weights=weights, minlength=self.n_tasks * self.k
        )
        return flat.reshape(self.n_tasks, self.k).astype(np.float64, copy=False)


class _Layers:
    """Answers grouped by task as "jagged diagonal" layers, for per-task sums without a
    scatter.

    Layer j holds the (j+1)-th answer of every task that has more than j answers, with
    tasks ranked by answer count (most first), so layer j covers ranks [0, sizes[j]) and a
    per-task sum is one gather plus a contiguous slice addition per layer. Each task still
    adds its answers in input order starting from its first, exactly like `np.bincount`,
    so sums are bitwise identical. Built only when the answers come grouped by task (task
    codes non-decreasing, as from an ORDER BY) and no task has more than `MAX_LAYERS`
    answers; otherwise the kernels keep using `np.bincount`.
    """

    MAX_LAYERS = 128

    __slots__ = ("wl", "sizes", "offsets", "rank", "acc")

    def __init__(
        self, wl: IntArray, sizes: list[int], offsets: list[int], rank: IntArray | None
    ) -> None:
        self.wl, self.sizes, self.offsets, self.rank = wl, sizes, offsets, rank
        self.acc: FloatArray = np.empty(0 if rank is None else rank.size)

    @classmethod
    def build(cls, ans: Answers) -> _Layers | None:
        t = ans.t
        if ans.n == 0 or (t.size > 1 and bool((t[1:] < t[:-1]).any())):
            return None
        per_task = ans.per_task.astype(np.intp)
        if int(per_task.max()) > cls.MAX_LAYERS:
            return None
        start = np.cumsum(per_task) - per_task
        pos = np.arange(ans.n) - start[t]  # position of each answer within its task
        sizes = np.bincount(pos)
        offsets = np.cumsum(sizes) - sizes
        if bool((per_task[1:] <= per_task[:-1]).all()):
            rank = None  # tasks are already ranked by answer count
            key = offsets[pos] + t
        else:
            order = np.argsort(-per_task, kind="stable")
            rank = np.empty(ans.n_tasks, dtype=np.intp)
            rank[order] = np.arange(ans.n_tasks)
            key = offsets[pos] + rank[t]
        wl = np.empty(ans.n, dtype=np.intp)
        wl[key] = ans.wl
        return cls(wl, sizes.tolist(), offsets.tolist(), rank)

    def task_sums(self, table_row: FloatArray, buf: FloatArray, out: FloatArray) -> None:
        """out[t] = sum of table_row[w * K + l] over task t's answers (0 for none)."""
        np.take(table_row, self.wl, out=buf, mode="clip")
        acc: FloatArray = out if self.rank is None else self.acc
        first = self.sizes[0]
        acc[:first] = buf[:first]
        acc[first:] = 0.0
        for size, offset in zip(self.sizes[1:], self.offsets[1:], strict=True):
            acc[:size] += buf[offset : offset + size]
        if self.rank is not None:
            np.take(acc, self.rank, out=out, mode="clip")


def softmax_rows(log_scores: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Row-wise softmax and the row log-normalisers (log-sum-exp), numerically stable."""
    top = log_scores.max(axis=1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    expd = np.exp(log_scores - top)
    total = expd.sum(axis=1, keepdims=True)
    return expd / total, (np.log(total) + top)[:, 0]


def softmax_columns(log_scores: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Softmax over axis 0 of a (K, n) array, computed in place (the input becomes the
    probabilities), and the log-normalisers (n,); the class-major `softmax_rows`."""
    top = log_scores.max(axis=0)
    top[~np.isfinite(top)] = 0.0
    log_scores -= top
    np.exp(log_scores, out=log_scores)
    total = log_scores.sum(axis=0)
    log_scores /= total
    lse = np.log(total, out=total)
    lse += top
    return log_scores, lse


def argmax_columns(values: FloatArray) -> IntArray:
    """`np.argmax(values, axis=0)` for a (K, n) array with K small (ties to the lowest row),
    as K - 1 row comparisons instead of numpy's strided reduction."""
    best = values[0].copy()
    idx = np.zeros(values.shape[1], dtype=np.intp)
    for c in range(1, values.shape[0]):
        better = values[c] > best
        idx[better] = c
        np.maximum(best, values[c], out=best)
    return idx


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
