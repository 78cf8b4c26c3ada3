"""Numeric answers (a price, an age, a score): a Gaussian worker model with bias and noise.

Model: worker j answering item i reports x = t_i + b_j + e with e ~ N(0, s_j^2) (Raykar et
al., "Learning From Crowds", JMLR 2010, section 4; Welinder & Perona 2010 for per-worker
bias). An EM-style alternation estimates t, b and s jointly: t_i is the precision-weighted
mean of the bias-corrected answers, b_j the worker's mean residual, s_j^2 the worker's mean
squared residual. Biases are centred (the precision-weighted average answer is unbiased:
otherwise t and b are not identifiable) and shrunk towards 0 by James-Stein (plus
`bias_prior_answers` pseudo-answers of no bias); variances are shrunk towards the pooled
variance by a scaled inverse-chi^2 prior (an inverse-gamma on s_j^2) whose strength d0, in
pseudo-answers, is estimated from the spread of the workers' variances (Smyth 2004, limma's
moderated variances) and never below `min_prior_answers`: when workers look alike, every
s_j is the pooled one and the value is the plain mean.

Robustness is a Huber M-step (Huber 1964): an answer more than `cutoff` standard deviations
of its worker from the item's value gets weight cutoff / |z|, so a typo moves nothing much;
an outlier *worker* gets a large s_j and so a small weight. The default cutoff is 3 (the
leave-one-crowd-out choice: 2 gains on heavy-tailed crowds but is worse than the plain
mean on Gaussian ones). With `cutoff=None` the kernel fits each of `CUTOFF_CANDIDATES` (2
and no cutoff) and keeps the one of lower leave-one-answer-out absolute error
(`_loo_error`); it was a candidate, not chosen.

Whether workers have a bias at all is chosen per job the same way (`bias=None`, the
default): the fits with and without biases are scored by leave-one-answer-out error and the
lower kept (the score favours the biased fit a little, its biases having seen the answer
left out, so a job drops them only when they clearly do not help). On the eight crowds of
bench/numeric_family.py (seeds 11, 12) it keeps the biases on every crowd, so their values
are unchanged; on `emotion` it drops them (MAE 11.910 where forced biases give 12.032 and
the per-item mean 12.022): its 700 items are seven emotions' scales, and a worker's offset
changes from one scale to the next (+23 on one, +1 on another), so one bias per worker is
the wrong model there. This rule was added after `emotion`'s figure with forced biases had
been seen; it has no constant.

The interval for t_i is t_i +- q * sqrt(se_i^2 + item_var), se_i^2 = 1 / sum_j u w_j, with
q a Student-t quantile whose degrees of freedom are those of the item's least-answering
worker's variance (their answers plus the prior's pseudo-answers, no more of those than the
pooled variance has residual degrees of freedom): s_j is an estimate too. A worker's bias is
estimated only over two answers or more (with one it cannot be told from their noise), so
on one item's answers the interval is Student's t with n - 1 degrees of freedom.
The worker model alone says how well the consensus is pinned down; `item_var` is the
crowd's shared error beyond it (an error every worker makes on the item), measured on gold
items by `gold_item_variance` (`NumericKind.aggregate_with_gold`). Without gold it is not
identifiable from the answers (a shared error looks like the truth), so the kernel assumes
`SHARED_RATIO` times the typical answer's noise variance; on crowds without shared error
that over-covers, on crowds with a large one it under-covers (bench/numeric_lodo.py's
figures). An optional per-item over-dispersion factor (`item_prior_answers`) is off.

Constants (`CUTOFF`, `MIN_PRIOR_ANSWERS`, `BIAS_PRIOR_ANSWERS`, `ITEM_PRIOR_ANSWERS`,
`SHARED_RATIO`) were chosen by leaving one crowd out over the eight simulated crowds of
bench/numeric_family.py (bench/numeric_lodo.py), never on `emotion` or the bench's crowd.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from statistics import NormalDist
from typing import Any

import numpy as np

from .base import AnswerError, KindResult, alpha_interval, group_sum, sizes, within_item_pairs

NAME = "numeric"

# Constants chosen by leaving one crowd out over bench/numeric_family.py (bench/numeric_lodo.py);
# never on `emotion` nor on the bench's own crowd. See the module docstring.
CUTOFF: float | None = 3.0
# With `cutoff=None` the kernel picks one of these by leave-one-answer-out error.
CUTOFF_CANDIDATES = (2.0, math.inf)
MIN_PRIOR_ANSWERS = 3.0
BIAS_PRIOR_ANSWERS = 0.0
ITEM_PRIOR_ANSWERS = math.inf
SHARED_RATIO = 0.3
# Whether workers have a bias: None is chosen per job by leave-one-answer-out error (both
# fits scored, the lower kept; see `numeric_em`).
BIAS: bool | None = None


@dataclass(frozen=True)
class NumericResult(KindResult):
    """Per item: the value, its interval at `level`, and per worker the bias and noise.

    `confidence` is the share of the tolerance the interval leaves unused:
    max(0, 1 - half_width / tolerance); `is_confident` is half_width <= tolerance. Items with
    no answer have NaN value, interval and confidence; one answer gives the value answered
    (minus the worker's bias) with the interval of that worker's noise.
    """

    value: np.ndarray
    low: np.ndarray
    high: np.ndarray
    half_width: np.ndarray
    se: np.ndarray  # standard error of `value` under the worker model alone
    df: np.ndarray  # degrees of freedom of the interval's t quantile
    bias: np.ndarray  # (n_workers,)
    noise: np.ndarray  # (n_workers,) the estimated s_j
    level: float
    item_var: float = 0.0  # the shared per-item error variance the interval includes


def _t_quantile(p: float, df: np.ndarray) -> np.ndarray:
    """Student-t quantile by the Cornish-Fisher expansion in 1/df (Abramowitz & Stegun 26.7.5).

    Accurate to a few parts in a thousand for df >= 2, which is all an interval needs; df
    below 1 is treated as 1 (capped at a large but finite multiple of z).
    """
    z = NormalDist().inv_cdf(p)
    d = np.maximum(np.asarray(df, dtype=np.float64), 1.0)
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160
    return z + g1 / d + g2 / d**2 + g3 / d**3 + g4 / d**4


def _huber(z: np.ndarray, cutoff: float) -> np.ndarray:
    """Huber weights: 1 within `cutoff` standard deviations, cutoff / |z| beyond."""
    if not math.isfinite(cutoff):
        return np.ones_like(z)
    return cutoff / np.maximum(np.abs(z), cutoff)


def _prior_dof(raw_s2: np.ndarray, n_j: np.ndarray) -> float:
    """Prior degrees of freedom d0 for the worker variances, by moments (Smyth 2004).

    log s_j^2 has sampling variance about 2 / n_j around the worker's true log variance, and
    the true log variances spread with variance about 2 / d0 under a scaled inverse-chi^2
    prior; the excess of the observed spread over the sampling part gives d0. Capped to
    [1, 1e6]: workers who do not differ beyond chance all get the pooled variance.
    """
    ok = (n_j >= 2) & (raw_s2 > 0)
    if ok.sum() < 3:
        return 1e6
    log_s2 = np.log(raw_s2[ok])
    excess = float(np.var(log_s2, ddof=1) - np.mean(2.0 / (n_j[ok] - 1.0)))
    return float(np.clip(2.0 / excess, 1.0, 1e6)) if excess > 0 else 1e6


def _bias_shrinkage(raw: np.ndarray, sampling_var: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """James-Stein factor tau^2 / (tau^2 + var_j) pulling each bias towards 0 (the mean).

    tau^2, the spread of the true biases, is the observed spread minus the mean sampling
    variance (never below 0): biases no larger than chance are shrunk away entirely.
    """
    if ok.sum() < 3:
        return np.zeros_like(raw)
    tau2 = max(float(np.mean(raw[ok] ** 2) - np.mean(sampling_var[ok])), 0.0)
    return np.where(ok, tau2 / (tau2 + sampling_var + 1e-300), 0.0)


def interval_half_width(
    se: np.ndarray, df: np.ndarray, item_var: float, level: float
) -> np.ndarray:
    """Half-width of the interval at `level`: q_t(df) * sqrt(se^2 + item_var)."""
    df = np.asarray(df, dtype=np.float64)
    q = _t_quantile(0.5 + level / 2.0, np.where(np.isfinite(df), df, 1e6))
    return q * np.sqrt(np.asarray(se) ** 2 + item_var)


def _fit(
    x: np.ndarray,
    tasks: np.ndarray,
    workers: np.ndarray,
    n_i: np.ndarray,
    n_j: np.ndarray,
    *,
    cutoff: float,
    robust: bool,
    bias: bool,
    prior_answers: float | None,
    min_prior_answers: float,
    bias_prior_answers: float,
    n_iter: int,
):
    """The EM alternation of the module docstring: (t, b, s2, d0, n_inf) at convergence."""
    n_tasks, n_workers = n_i.size, n_j.size
    has = n_i > 0
    # Start from the per-item median and one pooled scale (the MAD of the residuals).
    order = np.lexsort((x, tasks))
    xs, ts = x[order], tasks[order]
    starts = np.concatenate([[0], np.cumsum(n_i)[:-1]]).astype(np.int64)
    lo_mid = starts + ((n_i - 1) // 2).astype(np.int64)
    hi_mid = starts + (n_i // 2).astype(np.int64)
    t = np.where(
        has, 0.5 * (xs[np.minimum(lo_mid, x.size - 1)] + xs[np.minimum(hi_mid, x.size - 1)]), 0.0
    )
    del ts
    r = x - t[tasks]
    pooled = float(np.median(np.abs(r)) * 1.4826) ** 2
    scale = max(float(np.std(x)), 1e-12)
    floor = (1e-3 * scale) ** 2
    pooled = max(pooled, floor)
    b = np.zeros(n_workers)
    s2 = np.full(n_workers, pooled)
    u = np.ones_like(x)
    d0 = 1e6 if prior_answers is None else prior_answers
    for _ in range(n_iter):
        # E-step: answer weights under the Student-t model (all 1 without `robust`).
        var = s2[workers]
        r = x - b[workers] - t[tasks]
        if robust:
            u = _huber(r / np.sqrt(var), cutoff)
        # M-step: item values, then biases (centred, shrunk), then noise (shrunk to pooled).
        w = u / var
        t_new = group_sum(tasks, w * (x - b[workers]), n_tasks) / np.maximum(
            group_sum(tasks, w, n_tasks), 1e-300
        )
        t_new = np.where(has, t_new, 0.0)
        if bias:
            res = x - t_new[tasks]
            raw = group_sum(workers, w * res, n_workers) / np.maximum(
                group_sum(workers, w, n_workers), 1e-300
            )
            raw -= np.average(raw[workers], weights=w)
            # A worker's bias is told apart from their noise only over two answers or more:
            # with one, it would take that answer's whole error and leave the noise, and the
            # item's interval, at nothing (on one item's answers, every worker has one).
            # (`_bias_shrinkage` is 0 for a worker it is not asked to estimate.)
            b = raw * _bias_shrinkage(raw, s2 / np.maximum(n_j, 1.0), n_j >= 2)
            b *= n_j / np.maximum(n_j + bias_prior_answers, 1e-300)
        r = x - b[workers] - t_new[tasks]
        # Leverage: an answer pulls its item's value towards itself by h = w / sum w, so
        # its residual underestimates its worker's noise by a factor 1 - h (h = 1 for an
        # item's only answer, which says nothing about its worker's noise).
        h = w / np.maximum(group_sum(tasks, w, n_tasks)[tasks], 1e-300)
        lev = np.where(h < 0.999, 1.0 / np.maximum(1.0 - h, 1e-3), 0.0)
        informative = (h < 0.999).astype(np.float64)
        rr = u * r * r * lev
        n_inf = group_sum(workers, informative, n_workers)
        pooled = max(float(np.sum(rr) / informative.sum()), floor) if informative.any() else pooled
        raw_s2 = group_sum(workers, rr, n_workers) / np.maximum(n_inf, 1.0)
        d0 = (
            prior_answers
            if prior_answers is not None
            else max(_prior_dof(raw_s2, n_inf), min_prior_answers)
        )
        s2 = (n_inf * raw_s2 + d0 * pooled) / (n_inf + d0)
        s2 = np.maximum(s2, floor)
        moved = np.max(np.abs(t_new - t)) if n_tasks else 0.0
        t = t_new
        if moved < 1e-6 * scale:
            break
    return t, b, s2, d0, n_inf


def _loo_error(x, tasks, workers, n_i, t, b, s2, cutoff, n_steps: int = 5) -> float:
    """Mean |answer - its item's value refitted without it|, bias-corrected, pairable items.

    An answer's own error e is independent of the other answers; for e symmetric about 0,
    E |e + d| grows with the distance d of the others' value from the truth, so the fit
    with the lower score estimates the values better (leave-one-answer-out cross-
    validation). The absolute error, unlike the squared one, does not let one wild answer's
    own error decide the score. The value without an answer is refitted from the item's
    other answers alone (their Huber weights too: `n_steps` reweightings from the fit's
    value), so the left-out answer cannot pull the weights its way; the workers' biases and
    noise are the fit's.
    """
    xb = x - b[workers]
    v = s2[workers]
    left, right = within_item_pairs(tasks)
    out = np.concatenate([left, right])  # the answer left out
    other = np.concatenate([right, left])  # one of the others on its item
    m = x.size
    w_o, x_o = 1.0 / v[other], xb[other]
    if math.isfinite(cutoff):
        sd_o = np.sqrt(v[other])
        value = t[tasks]
        for _ in range(n_steps):
            u = _huber((x_o - value[out]) / sd_o, cutoff)
            value = group_sum(out, u * w_o * x_o, m) / np.maximum(
                group_sum(out, u * w_o, m), 1e-300
            )
    else:
        value = group_sum(out, w_o * x_o, m) / np.maximum(group_sum(out, w_o, m), 1e-300)
    ok = n_i[tasks] >= 2
    if not ok.any():
        return 0.0
    return float(np.mean(np.abs(xb[ok] - value[ok])))


def numeric_em(
    tasks: np.ndarray,
    workers: np.ndarray,
    values: np.ndarray,
    *,
    n_tasks: int | None = None,
    n_workers: int | None = None,
    level: float = 0.9,
    tolerance: float = float("inf"),
    cutoff: float | None = CUTOFF,
    prior_answers: float | None = None,
    min_prior_answers: float = MIN_PRIOR_ANSWERS,
    bias_prior_answers: float = BIAS_PRIOR_ANSWERS,
    item_prior_answers: float = ITEM_PRIOR_ANSWERS,
    shared_ratio: float = SHARED_RATIO,
    n_iter: int = 50,
    robust: bool = True,
    bias: bool | None = BIAS,
    item_var: float | None = None,
    lower: float = -math.inf,
    upper: float = math.inf,
) -> NumericResult:
    """Joint estimate of item values, worker biases and noise (see the module docstring)."""
    tasks, workers, n_tasks, n_workers = sizes(tasks, workers, n_tasks, n_workers)
    x = np.asarray(values, dtype=np.float64)
    n_i = np.bincount(tasks, minlength=n_tasks).astype(np.float64)
    n_j = np.bincount(workers, minlength=n_workers).astype(np.float64)
    nan_t = np.full(n_tasks, np.nan)
    if x.size == 0:
        zeros = np.zeros(n_workers)
        return _unwidened(n_i, zeros, nan_t, nan_t, nan_t, zeros, np.full(n_workers, np.nan), level)
    has = n_i > 0

    def fit(c: float, with_bias: bool):
        return _fit(
            x,
            tasks,
            workers,
            n_i,
            n_j,
            cutoff=c,
            robust=robust,
            bias=with_bias,
            prior_answers=prior_answers,
            min_prior_answers=min_prior_answers,
            bias_prior_answers=bias_prior_answers,
            n_iter=n_iter,
        )

    # Model choices left open (`None`) are made on the answers themselves: each candidate's
    # fit is scored by leave-one-answer-out error and the lowest kept. The Huber cutoff:
    # heavy tails want a low one, Gaussian answers lose a little efficiency to it. The
    # workers' biases: where workers differ by a constant, subtracting it gains; where
    # they do not (or not by one constant across the job's items), the estimates only add
    # their own error. Biases need a worker with two answers; without one both fits agree.
    cutoffs = CUTOFF_CANDIDATES if cutoff is None else (cutoff,)
    biases = (True, False) if bias is None and bool((n_j >= 2).any()) else (bias is not False,)
    candidates = [(c, with_bias) for c in cutoffs for with_bias in biases]
    if len(candidates) == 1:
        cutoff = candidates[0][0]
        t, b, s2, d0, n_inf = fit(*candidates[0])
    else:
        fits = [(c, fit(c, with_bias)) for c, with_bias in candidates]
        scores = [_loo_error(x, tasks, workers, n_i, f[0], f[1], f[2], c) for c, f in fits]
        cutoff, (t, b, s2, d0, n_inf) = fits[int(np.argmin(scores))]
    floor = (1e-3 * max(float(np.std(x)), 1e-12)) ** 2
    s2 = np.maximum(s2, floor)
    s2_item = s2[workers]
    r = x - b[workers] - t[tasks]
    u = _huber(r / np.sqrt(s2_item), cutoff) if robust else np.ones_like(x)
    info = group_sum(tasks, u / s2_item, n_tasks)
    # Over-dispersion per item: sum_j u r^2 / s_j^2 has about n_i - 1 degrees of freedom
    # when the worker model fits; a hard item (every answer further off than its worker's
    # noise says) inflates its own standard error by the ratio, shrunk towards 1 by
    # `item_prior_answers` pseudo-answers (inf: off).
    q_i = group_sum(tasks, u * r * r / s2_item, n_tasks)
    dof_i = np.maximum(n_i - 1.0, 0.0)
    if math.isfinite(item_prior_answers):
        phi = (q_i + item_prior_answers) / (dof_i + item_prior_answers)
        item_df = dof_i + item_prior_answers
    else:
        phi, item_df = np.ones(n_tasks), np.full(n_tasks, np.inf)
    se = np.where(has, np.sqrt(phi / np.maximum(info, 1e-300)), np.nan)
    # The standard error leans on the workers' variances, each estimated from their n_j
    # answers plus d0 prior pseudo-answers: the item's degrees of freedom are its least
    # informed worker's, not its own answer count (and its own when it is rescaled).
    # The prior's pseudo-answers carry no more than the pooled variance they come from was
    # estimated on: its residual degrees of freedom (answers less one per item that has two
    # or more). On a whole job that is large and changes nothing; on one item's few answers
    # (the per-item stopping rule) it makes the interval Student's t with n - 1 degrees of
    # freedom, where a pooled variance taken as known made it a normal one, too narrow.
    pooled_df = float(np.sum(n_i[n_i >= 2] - 1.0))
    df = np.full(n_tasks, np.inf)
    np.minimum.at(df, tasks, n_inf[workers] + min(d0, max(pooled_df, 1.0)) - 1.0)
    df = np.minimum(df, item_df)
    if item_var is None:
        # No gold: the crowd's shared error is not identifiable from the answers (an error
        # every worker makes looks like the truth); assume a share of the typical answer's
        # noise variance, a constant chosen across simulated crowds (see SHARED_RATIO).
        item_var = shared_ratio * float(np.median(s2_item))
    value = np.where(has, np.clip(t, lower, upper), np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        weight = np.where(n_j > 0, np.min(s2[n_j > 0]) / s2, 0.0) if n_workers else np.zeros(0)
    result = _unwidened(n_i, weight, value, se, df, b, np.sqrt(s2), level)
    return with_item_var(result, item_var, lower=lower, upper=upper, tolerance=tolerance)


def _unwidened(n_i, weight, value, se, df, b, noise, level) -> NumericResult:
    """A result before `with_item_var` gives it its intervals and confidence (NaN here)."""
    nan_t = np.full(n_i.size, np.nan)
    return NumericResult(
        n_answers=n_i,
        confidence=nan_t,
        worker_weight=weight,
        value=value,
        low=nan_t,
        high=nan_t,
        half_width=nan_t,
        se=se,
        df=df,
        bias=b,
        noise=noise,
        level=level,
    )


def with_item_var(
    result: NumericResult,
    item_var: float,
    *,
    lower: float = -math.inf,
    upper: float = math.inf,
    tolerance: float = math.inf,
) -> NumericResult:
    """The result with its intervals (and confidence) for a shared per-item error variance.

    The values and standard errors do not depend on it, so gold's measure of it
    (`gold_item_variance`) widens a result without refitting.
    """
    has = np.isfinite(result.value)
    half = np.where(has, interval_half_width(result.se, result.df, item_var, result.level), np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = np.where(has, np.clip(1.0 - half / tolerance, 0.0, 1.0), np.nan)
    return replace(
        result,
        half_width=half,
        low=np.clip(result.value - half, lower, upper),
        high=np.clip(result.value + half, lower, upper),
        confidence=conf,
        item_var=float(item_var),
    )


def gold_item_variance(result: NumericResult, gold_tasks: np.ndarray, gold: np.ndarray) -> float:
    """The crowd's shared error on an item beyond the worker model: tau^2 from gold items.

    The worker model's standard error says how well the crowd's consensus is pinned down,
    not how far that consensus is from the truth: when every worker misreads an item the
    same way, no number of answers shows it. Gold items do: tau^2 = mean over gold items of
    (value - gold)^2 - se^2 (moments, never below 0). Pass it back as `item_var` so the
    interval covers the truth, not only the consensus. 0 without gold.
    """
    gold_tasks = np.asarray(gold_tasks, dtype=np.int64)
    v = result.value[gold_tasks]
    se = result.se[gold_tasks]
    ok = np.isfinite(v) & np.isfinite(se)
    if not ok.any():
        return 0.0
    err2 = (v[ok] - np.asarray(gold, np.float64)[ok]) ** 2
    return max(float(np.mean(err2 - se[ok] ** 2)), 0.0)


@dataclass(frozen=True)
class NumericKind:
    """A number in [minimum, maximum] (with a unit for display); interval at `level`."""

    minimum: float = -math.inf
    maximum: float = math.inf
    unit: str = ""
    level: float = 0.9
    name: str = NAME

    def __post_init__(self) -> None:
        if not self.minimum < self.maximum:
            raise AnswerError("bad_range", "minimum must be below maximum")
        if not 0.0 < self.level < 1.0:
            raise AnswerError("bad_level", "level must be in (0, 1)")

    def encode(self, answers: list[Any]) -> np.ndarray:
        out = np.empty(len(answers))
        for i, a in enumerate(answers):
            if isinstance(a, bool) or not isinstance(a, int | float) or not math.isfinite(a):
                raise AnswerError("not_a_number", f"expected a finite number, got {a!r}", index=i)
            if not self.minimum <= a <= self.maximum:
                raise AnswerError(
                    "out_of_range",
                    f"{a} is outside [{self.minimum}, {self.maximum}]{self.unit and ' ' + self.unit}",
                    index=i,
                )
            out[i] = a
        return out

    def aggregate(
        self,
        tasks: np.ndarray,
        workers: np.ndarray,
        answers: np.ndarray,
        *,
        n_tasks: int | None = None,
        n_workers: int | None = None,
        tolerance: float = float("inf"),
        item_var: float | None = None,
    ) -> NumericResult:
        """`item_var` is the crowd's shared error measured on gold (`gold_item_variance`);
        None without gold (the kernel's assumed share, `SHARED_RATIO`)."""
        return numeric_em(
            tasks,
            workers,
            answers,
            n_tasks=n_tasks,
            n_workers=n_workers,
            level=self.level,
            tolerance=tolerance,
            item_var=item_var,
            lower=self.minimum,
            upper=self.maximum,
        )

    def aggregate_with_gold(
        self,
        tasks: np.ndarray,
        workers: np.ndarray,
        answers: np.ndarray,
        *,
        gold_tasks: np.ndarray,
        gold: np.ndarray,
        n_tasks: int | None = None,
        n_workers: int | None = None,
        tolerance: float = float("inf"),
    ) -> NumericResult:
        """`aggregate`, its intervals widened by the shared error measured on the gold items
        (`gold_item_variance`); without gold items, the kernel's no-gold assumption."""
        r = self.aggregate(
            tasks, workers, answers, n_tasks=n_tasks, n_workers=n_workers, tolerance=tolerance
        )
        if len(gold_tasks) == 0:
            return r
        return with_item_var(
            r,
            gold_item_variance(r, gold_tasks, gold),
            lower=self.minimum,
            upper=self.maximum,
            tolerance=tolerance,
        )

    def agreement(self, tasks: np.ndarray, answers: np.ndarray) -> float:
        """Krippendorff's alpha, interval distance."""
        return alpha_interval(tasks, answers)

    def gold_score(
        self, answers: np.ndarray, gold: np.ndarray, *, tolerance: float = 0.0
    ) -> np.ndarray:
        """1 within `tolerance` of gold, falling linearly to 0 at 2 x tolerance (exact if 0).

        With tolerance 0 only an exact answer scores; the absolute error itself is
        |answers - gold| for rules that want it.
        """
        err = np.abs(np.asarray(answers, np.float64) - np.asarray(gold, np.float64))
        if tolerance <= 0:
            return (err == 0).astype(np.float64)
        return np.clip(2.0 - err / tolerance, 0.0, 1.0)

    def is_confident(self, result: KindResult, *, target: float) -> np.ndarray:
        """The interval's half-width is at most `target` (a tolerance in the kind's unit)."""
        assert isinstance(result, NumericResult)
        return np.nan_to_num(result.half_width, nan=np.inf) <= target
