"""Inter-annotator agreement (per item, Fleiss, Krippendorff, Cohen) with bootstrap intervals."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Estimate:
    """A statistic with a percentile-bootstrap interval (items resampled with replacement)."""

    value: float
    low: float
    high: float
    n_boot: int
    # One-vs-rest per class: (K,) values and bounds; NaN where a class never occurs.
    per_class: np.ndarray | None = None
    per_class_low: np.ndarray | None = None
    per_class_high: np.ndarray | None = None


def count_matrix(
    tasks: np.ndarray, labels: np.ndarray, n_classes: int, n_tasks: int | None = None
) -> np.ndarray:
    """(n_tasks, K) number of answers per task and class."""
    tasks = np.asarray(tasks, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    n_tasks = int(tasks.max() + 1) if n_tasks is None else n_tasks
    flat = np.bincount(tasks * n_classes + labels, minlength=n_tasks * n_classes)
    return flat.reshape(n_tasks, n_classes).astype(np.float64)


def item_agreement(counts: np.ndarray) -> np.ndarray:
    """Share of each item's answers that went to its most frequent class (NaN if unlabeled)."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum(axis=1)
    return np.divide(counts.max(axis=1), total, out=np.full(total.shape, np.nan), where=total > 0)


# Both coefficients are ratios of sums over items, so a bootstrap replicate only needs the
# per-item terms weighted by how often each item was drawn: (B, T) @ (T, m) per batch.


def _fleiss_terms(counts: np.ndarray) -> np.ndarray:
    n = counts.sum(axis=1)
    ok = n >= 2
    c = counts[ok]
    nn = n[ok]
    agree = ((c * c).sum(axis=1) - nn) / (nn * (nn - 1))
    # columns: 1 (item), P_i, n_i, counts...
    return np.column_stack([np.ones(nn.size), agree, nn, c])


def _fleiss_from_sums(s: np.ndarray) -> np.ndarray:
    p_bar = s[..., 1] / s[..., 0]
    p_j = s[..., 3:] / s[..., 2:3]
    p_e = (p_j * p_j).sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (p_bar - p_e) / (1.0 - p_e)


def _alpha_terms(counts: np.ndarray) -> np.ndarray:
    m = counts.sum(axis=1)
    ok = m >= 2  # only pairable items carry information
    c = counts[ok]
    mm = m[ok]
    # Coincidence diagonal o_cc = sum_u n_uc (n_uc - 1) / (m_u - 1) and margins n_c.
    diag = c * (c - 1) / (mm - 1)[:, None]
    return np.column_stack([diag, c])


def _alpha_from_sums(s: np.ndarray, k: int) -> np.ndarray:
    o_cc = s[..., :k].sum(axis=-1)
    n_c = s[..., k:]
    n = n_c.sum(axis=-1)
    expected = (n_c * (n_c - 1)).sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return ((n - 1) * o_cc - expected) / (n * (n - 1) - expected)


def fleiss_kappa(counts: np.ndarray) -> float:
    """Fleiss' kappa from an (items, K) count table; items with fewer than 2 answers are skipped.

    With equal raters per item this is Fleiss (1971); with unequal numbers it uses each
    item's own n_i in its agreement term (the usual generalisation).
    """
    terms = _fleiss_terms(np.asarray(counts, dtype=np.float64))
    return float(_fleiss_from_sums(terms.sum(axis=0)))


def krippendorff_alpha(counts: np.ndarray) -> float:
    """Krippendorff's alpha (nominal) from an (items, K) count table; handles missing answers."""
    counts = np.asarray(counts, dtype=np.float64)
    return float(_alpha_from_sums(_alpha_terms(counts).sum(axis=0), counts.shape[1]))


def cohen_kappa(a: np.ndarray, b: np.ndarray, n_classes: int) -> float:
    """Cohen's kappa between two paired label arrays."""
    table = _pair_table(np.asarray(a, np.int64), np.asarray(b, np.int64), n_classes)
    return float(_kappa_from_tables(table[None])[0])


def _pair_table(a: np.ndarray, b: np.ndarray, k: int) -> np.ndarray:
    return np.bincount(a * k + b, minlength=k * k).reshape(k, k).astype(np.float64)


def _kappa_from_tables(tables: np.ndarray) -> np.ndarray:
    n = tables.sum(axis=(-2, -1))
    p_o = np.trace(tables, axis1=-2, axis2=-1) / n
    p_e = (tables.sum(axis=-1) * tables.sum(axis=-2)).sum(axis=-1) / (n * n)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (p_o - p_e) / (1.0 - p_e)


def worker_pair_labels(
    tasks: np.ndarray, workers: np.ndarray, labels: np.ndarray, worker_a: int, worker_b: int
) -> tuple[np.ndarray, np.ndarray]:
    """The two workers' labels on the tasks both answered (last answer wins), task order."""
    tasks, workers, labels = (np.asarray(x, np.int64) for x in (tasks, workers, labels))
    out = []
    for w in (worker_a, worker_b):
        sel = workers == w
        t, lab = tasks[sel], labels[sel]
        # np.unique on the reversed arrays keeps each task's last answer.
        ut, idx = np.unique(t[::-1], return_index=True)
        out.append((ut, lab[::-1][idx]))
    common, ia, ib = np.intersect1d(out[0][0], out[1][0], return_indices=True)
    return out[0][1][ia], out[1][1][ib]


def worker_consensus_kappa(
    workers: np.ndarray,
    labels: np.ndarray,
    consensus: np.ndarray,
    n_classes: int,
    n_workers: int | None = None,
) -> np.ndarray:
    """Cohen's kappa of every worker against the consensus label of the items they answered.

    `consensus` is per answer (e.g. `aggregation.labels[tasks]`). Vectorised over workers:
    one bincount builds all (n_workers, K, K) tables. NaN for workers without answers.
    """
    workers = np.asarray(workers, np.int64)
    k = n_classes
    n_workers = int(workers.max() + 1) if n_workers is None else n_workers
    idx = (workers * k + np.asarray(labels, np.int64)) * k + np.asarray(consensus, np.int64)
    tables = np.bincount(idx, minlength=n_workers * k * k).reshape(n_workers, k, k)
    return _kappa_from_tables(tables.astype(np.float64))


# ----------------------------------------------------------------------------- bootstrap


def _boot_weights(rng: np.random.Generator, n_items: int, n_boot: int) -> np.ndarray:
    draws = rng.integers(0, n_items, size=(n_boot, n_items))
    offsets = (np.arange(n_boot) * n_items)[:, None]
    return (
        np.bincount((draws + offsets).ravel(), minlength=n_boot * n_items)
        .reshape(n_boot, n_items)
        .astype(np.float64)
    )


def _bootstrap(terms: np.ndarray, stat, n_boot: int, level: float, seed: int, batch: int = 256):
    rng = np.random.default_rng(seed)
    reps = []
    for start in range(0, n_boot, batch):
        b = min(batch, n_boot - start)
        reps.append(stat(_boot_weights(rng, terms.shape[0], b) @ terms))
    reps_arr = np.concatenate(reps, axis=0)
    q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]
    with warnings.catch_warnings():
        # A statistic undefined in every replicate (e.g. a class nobody chose) has an
        # undefined interval: NaN, which is the answer, not a problem to warn about.
        warnings.filterwarnings("ignore", "All-NaN slice encountered", RuntimeWarning)
        lo, hi = np.nanpercentile(reps_arr, q, axis=0)
    return lo, hi


def _one_vs_rest(counts: np.ndarray) -> np.ndarray:
    """(T, K) counts -> (K, T, 2) tables of [class c, any other class]."""
    total = counts.sum(axis=1, keepdims=True)
    return np.stack([counts.T, (total - counts).T], axis=-1)


def _agreement_ci(counts, terms_fn, from_sums, n_boot, level, seed) -> Estimate:
    counts = np.asarray(counts, dtype=np.float64)
    # Stack overall and per-class term columns so one set of bootstrap weights serves all.
    blocks = [terms_fn(counts)] + [terms_fn(t) for t in _one_vs_rest(counts)]
    widths = [b.shape[1] for b in blocks]
    # Items dropped for having < 2 answers are the same in every block (same totals).
    terms = np.concatenate(blocks, axis=1)
    bounds = np.cumsum([0, *widths])

    def stat(s: np.ndarray) -> np.ndarray:
        return np.stack(
            [from_sums(s[..., bounds[i] : bounds[i + 1]]) for i in range(len(blocks))], axis=-1
        )

    point = stat(terms.sum(axis=0))
    lo, hi = _bootstrap(terms, stat, n_boot, level, seed)
    return Estimate(
        value=float(point[0]),
        low=float(lo[0]),
        high=float(hi[0]),
        n_boot=n_boot,
        per_class=point[1:],
        per_class_low=lo[1:],
        per_class_high=hi[1:],
    )


def fleiss_kappa_ci(
    counts: np.ndarray, *, n_boot: int = 1000, level: float = 0.95, seed: int = 0
) -> Estimate:
    """Fleiss' kappa overall and per class (one-vs-rest) with bootstrap intervals over items."""
    return _agreement_ci(counts, _fleiss_terms, _fleiss_from_sums, n_boot, level, seed)


def krippendorff_alpha_ci(
    counts: np.ndarray, *, n_boot: int = 1000, level: float = 0.95, seed: int = 0
) -> Estimate:
    """Krippendorff's alpha overall and per class (one-vs-rest) with bootstrap intervals."""

    def from_sums(s: np.ndarray) -> np.ndarray:
        return _alpha_from_sums(s, s.shape[-1] // 2)

    return _agreement_ci(counts, _alpha_terms, from_sums, n_boot, level, seed)


def cohen_kappa_ci(
    a: np.ndarray,
    b: np.ndarray,
    n_classes: int,
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> Estimate:
    """Cohen's kappa with a bootstrap interval over paired items, overall and one-vs-rest."""
    a = np.asarray(a, np.int64)
    b = np.asarray(b, np.int64)
    k = n_classes
    onehot = np.zeros((a.size, k * k))
    onehot[np.arange(a.size), a * k + b] = 1.0

    def stat(s: np.ndarray) -> np.ndarray:
        tables = s.reshape(*s.shape[:-1], k, k)
        overall = _kappa_from_tables(tables)
        per = []
        for c in range(k):
            # Collapse to c-vs-rest 2x2 tables.
            tp = tables[..., c, c]
            row = tables[..., c, :].sum(axis=-1)
            col = tables[..., :, c].sum(axis=-1)
            tot = tables.sum(axis=(-2, -1))
            t2 = np.stack(
                [np.stack([tp, row - tp], -1), np.stack([col - tp, tot - row - col + tp], -1)],
                -2,
            )
            per.append(_kappa_from_tables(t2))
        return np.stack([overall, *per], axis=-1)

    point = stat(onehot.sum(axis=0))
    lo, hi = _bootstrap(onehot, stat, n_boot, level, seed)
    return Estimate(
        value=float(point[0]),
        low=float(lo[0]),
        high=float(hi[0]),
        n_boot=n_boot,
        per_class=point[1:],
        per_class_low=lo[1:],
        per_class_high=hi[1:],
    )
