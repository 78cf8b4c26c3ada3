"""The family of simulated numeric crowds the numeric kernel's constants are chosen on.

Written down before any constant was tuned on it (issue F11): eight crowds of different
shapes, none of them the bench's own crowd (bench/label_kinds.py `sim_numeric`) nor the real
`emotion` crowd. `bench/numeric_lodo.py` chooses the constants by leaving one crowd out.
Each generator takes a numpy Generator and returns (tasks, workers, answers, truth, lower,
upper); every item is answered by distinct workers drawn at random from the pool.
"""

from __future__ import annotations

import numpy as np


def _assign(rng, n_items, per_item, n_workers):
    workers = np.argsort(rng.random((n_items, n_workers)), axis=1)[:, :per_item].ravel()
    return np.repeat(np.arange(n_items), per_item), workers


def mixed(rng):
    """1500 x 5, 60 workers on [0, 100]: 40% good (sd 5), 25% biased (+-8, sd 5), 25% noisy
    (sd 15), 10% answering uniformly at random."""
    truth = rng.uniform(0, 100, 1500)
    t, w = _assign(rng, 1500, 5, 60)
    kind = rng.choice(4, 60, p=[0.4, 0.25, 0.25, 0.1])
    bias = np.where(kind == 1, rng.choice([-8.0, 8.0], 60), 0.0)
    sd = np.where(kind == 2, 15.0, 5.0)
    x = truth[t] + bias[w] + rng.normal(0, 1, t.size) * sd[w]
    out = kind[w] == 3
    x[out] = rng.uniform(0, 100, out.sum())
    return t, w, np.clip(x, 0, 100), truth, 0.0, 100.0


def alike(rng):
    """1000 x 5, 40 workers on an open scale, all alike: no bias, sd 10."""
    truth = rng.normal(50, 20, 1000)
    t, w = _assign(rng, 1000, 5, 40)
    x = truth[t] + rng.normal(0, 10, t.size)
    return t, w, x, truth, -np.inf, np.inf


def alike_wide(rng):
    """700 x 10, 40 workers on [-100, 100], alike (sd 25, small biases N(0, 2)), clipped."""
    truth = rng.uniform(-80, 80, 700)
    t, w = _assign(rng, 700, 10, 40)
    bias = rng.normal(0, 2, 40)
    x = truth[t] + bias[w] + rng.normal(0, 25, t.size)
    return t, w, np.clip(x, -100, 100), truth, -100.0, 100.0


def shared(rng):
    """800 x 10, 40 workers: mildly different workers (sd 15 x lognormal(0, 0.3), bias
    N(0, 3)) and an error every worker shares per item, N(0, 10^2): the crowd misreads
    items together."""
    truth = rng.uniform(0, 100, 800)
    t, w = _assign(rng, 800, 10, 40)
    sd = 15 * np.exp(rng.normal(0, 0.3, 40))
    bias = rng.normal(0, 3, 40)
    common = rng.normal(0, 10, 800)
    x = truth[t] + common[t] + bias[w] + rng.normal(0, 1, t.size) * sd[w]
    return t, w, x, truth, -np.inf, np.inf


def sparse(rng):
    """2000 x 3, 400 workers (about 15 answers each): 60% good (sd 4), 20% biased (+-6,
    sd 4), 20% noisy (sd 12)."""
    truth = rng.uniform(0, 100, 2000)
    t, w = _assign(rng, 2000, 3, 400)
    kind = rng.choice(3, 400, p=[0.6, 0.2, 0.2])
    bias = np.where(kind == 1, rng.choice([-6.0, 6.0], 400), 0.0)
    sd = np.where(kind == 2, 12.0, 4.0)
    x = truth[t] + bias[w] + rng.normal(0, 1, t.size) * sd[w]
    return t, w, x, truth, -np.inf, np.inf


def heavy(rng):
    """1000 x 5, 50 workers: Student-t noise with 3 degrees of freedom (scale 6), 20% of
    workers biased by +-5."""
    truth = rng.uniform(0, 100, 1000)
    t, w = _assign(rng, 1000, 5, 50)
    bias = np.where(rng.random(50) < 0.2, rng.choice([-5.0, 5.0], 50), 0.0)
    x = truth[t] + bias[w] + 6 * rng.standard_t(3, t.size)
    return t, w, x, truth, -np.inf, np.inf


def difficulty(rng):
    """1000 x 7, 50 workers: items differ in difficulty (every worker's noise times
    lognormal(0, 0.5) per item) and share an error of half the item's noise level; workers'
    sd 8 x lognormal(0, 0.4)."""
    truth = rng.uniform(0, 100, 1000)
    t, w = _assign(rng, 1000, 7, 50)
    hard = np.exp(rng.normal(0, 0.5, 1000))
    sd = 8 * np.exp(rng.normal(0, 0.4, 50))
    common = rng.normal(0, 1, 1000) * 0.5 * 8 * hard
    x = truth[t] + common[t] + rng.normal(0, 1, t.size) * sd[w] * hard[t]
    return t, w, x, truth, -np.inf, np.inf


def bounded(rng):
    """1200 x 6, 30 workers on [0, 10], truths crowding the ends (beta(0.5, 0.5)), sd 1.5,
    a third of the workers biased by +-1, answers clipped to the scale."""
    truth = 10 * rng.beta(0.5, 0.5, 1200)
    t, w = _assign(rng, 1200, 6, 30)
    bias = np.where(rng.random(30) < 1 / 3, rng.choice([-1.0, 1.0], 30), 0.0)
    x = truth[t] + bias[w] + rng.normal(0, 1.5, t.size)
    return t, w, np.clip(x, 0, 10), truth, 0.0, 10.0


FAMILY = {
    f.__name__: f for f in (mixed, alike, alike_wide, shared, sparse, heavy, difficulty, bounded)
}
