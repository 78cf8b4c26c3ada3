"""Worker dependence: find pairs whose answers agree more than conditional independence allows,
and a Dawid-Skene variant that stops such pairs from confirming each other.

Dawid-Skene assumes answers are independent given the true class. A clique of heavy workers
who make the same mistakes (shared guidelines, one person behind two accounts, a script)
breaks that badly: their mutual agreement reads as near-perfect accuracy, their shared errors
then outvote everyone else and drag the class prior with them (zencrowd: two workers agree on
86% of 1,215 shared tasks where independent errors would give 64%).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._answers import Answers, softmax_rows
from .aggregation import (
    _EPS,
    Aggregation,
    _Clamp,
    _class_prior_update,
    _confusion_log_table,
    _normalise_counts,
    _one_coin_confusions,
    _pooled_confusion,
    _prior_array,
    _result,
    _soft_majority,
    _warm_start,
)


@dataclass(frozen=True)
class DependentPairs:
    """Worker pairs tested for dependence and the answer links of the flagged ones.

    `first[p]`, `second[p]` are the two workers of candidate pair p (first < second),
    `overlap[p]` their number of shared tasks and `z[p]` the z-score of their observed
    agreement over what conditional independence predicts. For flagged pairs, answer
    `source[m]` and answer `partner[m]` are the two workers' answers to one shared task
    (each shared task appears once in each direction).
    """

    first: np.ndarray
    second: np.ndarray
    overlap: np.ndarray
    z: np.ndarray
    flagged: np.ndarray  # (n_pairs,) bool
    source: np.ndarray
    partner: np.ndarray

    @property
    def flagged_pairs(self) -> list[tuple[int, int]]:
        return [
            (int(a), int(b))
            for a, b in zip(self.first[self.flagged], self.second[self.flagged], strict=True)
        ]


# Pair keys counted densely up to this many (workers squared): 4M int64 counts, 32 MB.
_DENSE_PAIR_KEYS = 1 << 22


def _shared_answers(
    ans: Answers, min_overlap: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Worker pairs sharing >= min_overlap tasks, and per shared task the pair index and the
    two answer ids (ordered by pair, then task).

    Every pair of answers to the same task is enumerated once, by offset within the task's
    answers sorted by worker: the loop runs over offsets (at most the largest number of
    answers to one task), each step vectorized over all tasks, so the cost is the number of
    co-answering pairs (sum over tasks of answers squared), never workers x workers x tasks.
    """
    empty = np.zeros(0, dtype=np.int64)
    if ans.n == 0:
        return empty, empty, empty, empty, empty
    # By task, then worker: one sort of a combined key (unique per answer once deduplicated).
    order = np.argsort(ans.t.astype(np.int64) * ans.n_workers + ans.w)
    by_task = ans.t[order]
    starts = np.flatnonzero(np.r_[True, by_task[1:] != by_task[:-1]])
    sizes = np.diff(np.r_[starts, by_task.size])
    # How many answers to the same task follow each (sorted) answer.
    after = np.repeat(starts + sizes, sizes) - np.arange(by_task.size) - 1
    firsts, seconds = [], []
    live = np.flatnonzero(after >= 1)
    offset = 1
    while live.size:
        firsts.append(order[live])
        seconds.append(order[live + offset])
        offset += 1
        live = live[after[live] >= offset]
    if not firsts:
        return empty, empty, empty, empty, empty
    a = np.concatenate(firsts).astype(np.int64)
    b = np.concatenate(seconds).astype(np.int64)
    distinct = ans.w[a] != ans.w[b]  # a worker answering a task twice is not a pair
    a, b = a[distinct], b[distinct]
    nw = ans.n_workers
    key = ans.w[a].astype(np.int64) * nw + ans.w[b]
    if nw * nw <= _DENSE_PAIR_KEYS:
        # Few enough workers to count every possible pair in one array (faster than sorting).
        overlap = np.bincount(key, minlength=nw * nw)
        pairs = np.flatnonzero(overlap >= min_overlap)
        if pairs.size == 0:
            return empty, empty, empty, empty, empty
        shared = overlap[key] >= min_overlap
    else:
        unique, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
        pairs = unique[counts >= min_overlap]
        if pairs.size == 0:
            return empty, empty, empty, empty, empty
        shared = counts[inverse] >= min_overlap
    a, b = a[shared], b[shared]
    pair = np.searchsorted(pairs, key[shared])
    o = np.lexsort((ans.t[a], pair))
    return pairs // nw, pairs % nw, pair[o], a[o], b[o]


def _deconvolved_confusions(
    reference: np.ndarray, pair: np.ndarray, labels: np.ndarray, n_pairs: int, k: int
) -> np.ndarray:
    """Per pair, one worker's confusion fitted by EM against the fixed class probabilities
    `reference` of each shared task (so noise in the reference is not read as worker error)."""
    conf = np.full((n_pairs, k, k), 0.2 / (k - 1))
    conf[:, np.arange(k), np.arange(k)] = 0.8
    # Flat index of conf[pair, c, label] for every class c: one gather per iteration, and
    # one scatter into the (pair, c, label) cells (the same cells, so the same sums).
    flat = (pair * (k * k) + labels)[:, None] + (np.arange(k) * k)[None, :]
    flat_c = flat.ravel()
    for _ in range(30):
        q = reference * np.take(conf.ravel(), flat)
        q /= q.sum(axis=1, keepdims=True)
        cells = np.bincount(flat_c, weights=q.ravel(), minlength=n_pairs * k * k)
        counts = cells.reshape(n_pairs, k, k) + 0.5
        conf = counts / counts.sum(axis=2, keepdims=True)
    return conf


def dependent_pairs(
    ans: Answers,
    confusions: np.ndarray,
    class_prior: np.ndarray,
    *,
    min_overlap: int = 50,
    z_threshold: float = 9.0,
    max_pair_rows: int | None = None,
) -> DependentPairs:
    """Test every worker pair sharing at least `min_overlap` tasks for conditional dependence.

    The reference model (`confusions`, `class_prior`) should be one the suspected clique
    cannot inflate much, e.g. a one-coin fit. On each shared task the reference class
    probabilities come from everyone EXCEPT the two workers; each worker's confusion is
    then re-fitted against those probabilities alone, and the pair's agreement predicted
    by conditional independence is sum_c P(c | others) * sum_l A_i[c, l] A_j[c, l]. Pairs
    whose observed agreement exceeds that by more than `z_threshold` binomial standard
    errors are flagged. Mild positive dependence (hard items fool everyone) is everywhere
    in real crowds and reaches z of about 8 on sets where Dawid-Skene is fine, hence the
    high threshold: only gross, heavily shared dependence is acted on.

    The test costs one row per pair of answers to the same task (sum over tasks of answers
    squared: 10M rows and minutes for 100 heavy workers at 5M answers). With
    `max_pair_rows`, a larger job is tested on a fixed random sample of its tasks holding
    about that many rows (seed 0, so runs repeat); the flagged pairs' links then cover all
    their shared tasks again (`flagged_links`), so the discount applies everywhere.
    """
    rows = float((ans.per_task * (ans.per_task - 1.0)).sum() / 2.0)
    if max_pair_rows is not None and rows > max_pair_rows:
        keep = np.random.default_rng(0).random(ans.n_tasks) < max_pair_rows / rows
        sel = np.flatnonzero(keep[ans.t])
        sample = Answers(ans.t[sel], ans.w[sel], ans.l[sel], ans.k, ans.n_tasks, ans.n_workers)
        tested = dependent_pairs(
            sample, confusions, class_prior, min_overlap=min_overlap, z_threshold=z_threshold
        )
        source, partner = flagged_links(
            ans, tested.first[tested.flagged], tested.second[tested.flagged]
        )
        return DependentPairs(
            tested.first,
            tested.second,
            tested.overlap,
            tested.z,
            tested.flagged,
            source,
            partner,
        )
    k = ans.k
    first, second, pair, ans_a, ans_b = _shared_answers(ans, min_overlap)
    n_pairs = first.size
    if n_pairs == 0:
        empty = np.zeros(0, dtype=np.int64)
        return DependentPairs(
            first, second, empty, np.zeros(0), np.zeros(0, dtype=bool), empty, empty
        )
    logc = np.log(np.clip(confusions, _EPS, None))  # (W, K, K)
    per_answer = logc[ans.w, :, ans.l]  # (N, K)
    task_of = ans.t[ans_a]
    scores = np.empty((ans.n_tasks, k))
    for c in range(k):
        scores[:, c] = np.bincount(ans.t, weights=per_answer[:, c], minlength=ans.n_tasks)
    log_cp = np.log(np.clip(class_prior, _EPS, None))
    reference, _ = softmax_rows(
        scores[task_of] + log_cp[None, :] - per_answer[ans_a] - per_answer[ans_b]
    )
    la, lb = ans.l[ans_a], ans.l[ans_b]
    conf_a = _deconvolved_confusions(reference, pair, la, n_pairs, k)
    conf_b = _deconvolved_confusions(reference, pair, lb, n_pairs, k)
    predicted = (reference * (conf_a[pair] * conf_b[pair]).sum(axis=2)).sum(axis=1)
    overlap = np.bincount(pair, minlength=n_pairs)
    observed = np.bincount(pair, weights=(la == lb).astype(np.float64), minlength=n_pairs)
    expected = np.bincount(pair, weights=predicted, minlength=n_pairs)
    variance = np.bincount(pair, weights=predicted * (1.0 - predicted), minlength=n_pairs)
    z = (observed - expected) / np.sqrt(variance + 1e-9)
    flagged = z > z_threshold
    sel = flagged[pair]
    return DependentPairs(
        first=first,
        second=second,
        overlap=overlap,
        z=z,
        flagged=flagged,
        source=np.concatenate([ans_a[sel], ans_b[sel]]),
        partner=np.concatenate([ans_b[sel], ans_a[sel]]),
    )


def flagged_links(
    ans: Answers, first: np.ndarray, second: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Answer links (source, partner; both directions) of the given worker pairs on every
    task they share, enumerated among those workers' answers only (cheap: flagged pairs are
    few)."""
    empty = np.zeros(0, dtype=np.int64)
    if first.size == 0:
        return empty, empty
    members = np.zeros(ans.n_workers, dtype=bool)
    members[first] = True
    members[second] = True
    sel = np.flatnonzero(members[ans.w])
    sub = Answers(ans.t[sel], ans.w[sel], ans.l[sel], ans.k, ans.n_tasks, ans.n_workers)
    a_first, a_second, pair, a, b = _shared_answers(sub, 1)
    wanted = set(zip(first.tolist(), second.tolist(), strict=True))
    is_flagged = np.array(
        [(int(x), int(y)) in wanted for x, y in zip(a_first, a_second, strict=True)], dtype=bool
    )
    rows = is_flagged[pair] if pair.size else np.zeros(0, dtype=bool)
    a, b = sel[a[rows]], sel[b[rows]]
    return np.concatenate([a, b]), np.concatenate([b, a])


def answer_weights(n_answers: int, pairs: DependentPairs, discount: float = 4.0) -> np.ndarray:
    """Per-answer weight 1 / (1 + discount * number of flagged partners on the same task)."""
    partners = np.bincount(pairs.source, minlength=n_answers).astype(np.float64)
    return 1.0 / (1.0 + discount * partners)


def dependence_aware_dawid_skene(
    ans: Answers,
    pairs: DependentPairs,
    *,
    discount: float = 4.0,
    prior: float | np.ndarray = 0.01,
    shrinkage: float = 5.0,
    class_prior_smoothing: float | np.ndarray = 1.0,
    init_confusions: np.ndarray | None = None,
    init_class_prior: np.ndarray | None = None,
    max_iter: int = 100,
    tol: float = 1e-5,
    known: np.ndarray | None = None,
    pooled_shrinkage: float = 0.0,
) -> Aggregation:
    """Dawid-Skene (matrices shrunk toward each worker's one-coin form and, with
    `pooled_shrinkage`, the crowd's pooled matrix, as in the default) that discounts the flagged dependent pairs in `pairs`.

    Two changes, both only on answers that have a flagged partner on the same task:
    in the E-step such an answer's log-likelihood is multiplied by `answer_weights`, so a
    dependent clique answering together counts for well under one independent vote; and in
    the M-step the answer is counted against the task posterior WITHOUT its partners'
    answers, so partners cannot certify each other's accuracy. With no flagged pair this is
    exactly `dawid_skene(shrinkage=..., shrink_to="onecoin", pooled_shrinkage=...,
    stopping="objective")`.
    `known` clamps gold tasks to their class, as in `dawid_skene`.
    """
    k = ans.k
    clamp = _Clamp.build(known, ans)
    gold_answers = np.flatnonzero(np.isin(ans.t, clamp.idx)) if clamp.idx.size else None
    alpha = _prior_array(prior, ans.n_workers, k)
    weight = answer_weights(ans.n, pairs, discount)
    linked = np.flatnonzero(np.bincount(pairs.source, minlength=ans.n) > 0)
    if init_confusions is not None:
        conf, cp = _warm_start(init_confusions, init_class_prior, ans.n_workers, k)
        post, _, _ = _weighted_e_step(ans, conf, cp, weight)
    else:
        post = _soft_majority(ans)
    clamp.rows(post)
    per_answer_post = np.take(post, ans.t, axis=0)
    objective = -np.inf
    converged = False
    ll = np.nan
    it = 0
    for it in range(1, max_iter + 1):  # noqa: B007 - `it` is reported after the loop
        counts = np.empty((k, ans.n_workers * k))
        for c in range(k):
            counts[c] = np.bincount(
                ans.wl, weights=per_answer_post[:, c], minlength=ans.n_workers * k
            )
        counts = counts.reshape(k, ans.n_workers, k).transpose(1, 0, 2)
        acc = (np.trace(counts, axis1=1, axis2=2) + 1.0) / (counts.sum(axis=(1, 2)) + 2.0)
        pseudo = alpha + shrinkage * _one_coin_confusions(acc, k)
        if pooled_shrinkage > 0:
            pseudo = pseudo + pooled_shrinkage * _pooled_confusion(counts)[None, :, :]
        conf = _normalise_counts(counts + pseudo)
        cp = _class_prior_update(ans, post, class_prior_smoothing)
        post, ll, weighted = _weighted_e_step(ans, conf, cp, weight)
        clamp.rows(post)
        per_answer_post = np.take(post, ans.t, axis=0)
        if linked.size:
            # Leave the partners out: subtract their weighted log-likelihoods per answer.
            partner_sum = np.empty((k, ans.n))
            for c in range(k):
                partner_sum[c] = np.bincount(
                    pairs.source, weights=weighted[c, pairs.partner], minlength=ans.n
                )
            log_cp = np.log(np.clip(cp, _EPS, None))
            scores = _task_scores(ans, weighted)[ans.t[linked]] + log_cp[None, :]
            per_answer_post[linked], _ = softmax_rows(scores - partner_sum[:, linked].T)
            if gold_answers is not None:
                per_answer_post[gold_answers] = np.take(post, ans.t[gold_answers], axis=0)
        new_objective = ll + float((pseudo * np.log(np.clip(conf, _EPS, None))).sum())
        if abs(new_objective - objective) <= tol * max(ans.n, 1):
            converged = True
            break
        objective = new_objective
    return _result(
        "default", ans, post, cp, conf, n_iter=it, converged=converged, log_likelihood=ll
    )


def _task_scores(ans: Answers, per_answer: np.ndarray) -> np.ndarray:
    out = np.empty((ans.n_tasks, ans.k))
    for c in range(ans.k):
        out[:, c] = np.bincount(ans.t, weights=per_answer[c], minlength=ans.n_tasks)
    return out


def _weighted_e_step(
    ans: Answers, confusions: np.ndarray, class_prior: np.ndarray, weight: np.ndarray
) -> tuple[np.ndarray, float, np.ndarray]:
    """Posteriors, their log-likelihood and the (K, N) weighted per-answer log-likelihoods."""
    weighted = ans.gather_wl(_confusion_log_table(confusions)) * weight[None, :]
    scores = _task_scores(ans, weighted) + np.log(np.clip(class_prior, _EPS, None))[None, :]
    post, lse = softmax_rows(scores)
    return post, float(lse[ans.answered].sum()), weighted
