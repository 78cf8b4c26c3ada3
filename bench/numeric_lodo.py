"""Choose the numeric kernel's constants by leaving one simulated crowd out (issue F11).

Run from the repository root: `.venv/bin/python bench/numeric_lodo.py` (a few minutes).

The crowds are bench/numeric_family.py's eight, two seeds each (seeds 11 and 12; the bench
uses 0-2 on its own crowd). For every grid point the kernel runs once per crowd; a random
10% of items play gold (their truth measures the shared error, `gold_item_variance`) and
the figures are: MAE over the per-item mean's, the 90% interval's coverage on the other
90% with gold, and on all items without gold. The constants come in two groups chosen one
after the other, for each crowd left out, on the other seven: first those that move the
values (Huber cutoff, the priors' floors) by the lowest mean MAE ratio; then, with those,
those that only move the intervals (the per-item over-dispersion prior, the no-gold shared
ratio) by the lowest mean |coverage with gold - 0.9| + |coverage without gold - 0.9|. The
point chosen is scored on the crowd left out; the constants finally used are those chosen
on all eight. The value constants are those of lowest mean MAE ratio among the points no
worse than the per-item mean on any of the seven (the issue's goal: no worse than the
mean). (A first run chose everything at once by MAE ratio + both coverage gaps, and the
coverage's sampling noise decided the cutoff; a second chose by mean MAE ratio alone and
took a cutoff of 2, which is worse than the mean on `alike_wide`, 1.002; this third,
goal-shaped rule was written after the second's `emotion` figure was seen. All three runs
are in the commit history.) Printed: per crowd left out, the point chosen and its figures
there; the worst crowd; the choice on all eight.
"""

from __future__ import annotations

import itertools
import json
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from numeric_family import FAMILY  # noqa: E402

from apps.quality.algorithms.kinds.numeric import (  # noqa: E402
    gold_item_variance,
    interval_half_width,
    numeric_em,
)

SEEDS = (11, 12)
GRID = {
    "cutoff": (2.0, 3.0, 5.0, math.inf, None),
    "min_prior_answers": (0.0, 3.0, 10.0, 30.0),
    "bias_prior_answers": (0.0, 3.0, 10.0, 30.0),
    "item_prior_answers": (3.0, 10.0, 30.0, math.inf),
}
RATIOS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5)


def crowds():
    for name, make in FAMILY.items():
        for seed in SEEDS:
            rng = np.random.default_rng(seed)
            t, w, x, truth, lo, hi = make(rng)
            gold = rng.permutation(truth.size)[: truth.size // 10]
            yield name, (t, w, x, truth, lo, hi, gold)


def figures(data, params) -> dict:
    """MAE ratio, coverage with gold, and coverage without gold for each shared ratio."""
    t, w, x, truth, lo, hi, gold = data
    n = truth.size
    r = numeric_em(t, w, x, lower=lo, upper=hi, item_var=0.0, **params)
    mean = np.bincount(t, x, n) / np.bincount(t, minlength=n)
    rest = np.ones(n, dtype=bool)
    rest[gold] = False
    tau2 = gold_item_variance(r, gold, truth[gold])

    def cover(item_var, where):
        half = interval_half_width(r.se, r.df, item_var, 0.9)
        lo_i, hi_i = np.clip(r.value - half, lo, hi), np.clip(r.value + half, lo, hi)
        return float(np.mean(((truth >= lo_i) & (truth <= hi_i))[where]))

    typical = float(np.median(r.noise[w] ** 2))
    return {
        "mae_ratio": float(np.abs(r.value - truth).mean() / np.abs(mean - truth).mean()),
        "cov_gold": cover(tau2, rest),
        "cov_no_gold": {rho: cover(rho * typical, slice(None)) for rho in RATIOS},
    }


def loss(f, rho) -> float:
    return f["mae_ratio"] + abs(f["cov_gold"] - 0.9) + abs(f["cov_no_gold"][rho] - 0.9)


def main() -> None:
    data = list(crowds())
    names = list(FAMILY)
    points = [dict(zip(GRID, v, strict=True)) for v in itertools.product(*GRID.values())]
    # table[p][name] = figures averaged over the crowd's seeds
    table = []
    for p in points:
        per: dict = {}
        for name, d in data:
            per.setdefault(name, []).append(figures(d, p))
        table.append(
            {
                name: {
                    "mae_ratio": np.mean([f["mae_ratio"] for f in fs]),
                    "cov_gold": np.mean([f["cov_gold"] for f in fs]),
                    "cov_no_gold": {
                        rho: np.mean([f["cov_no_gold"][rho] for f in fs]) for rho in RATIOS
                    },
                }
                for name, fs in per.items()
            }
        )

    value_keys = ("cutoff", "min_prior_answers", "bias_prior_answers")

    def choose(train):
        def mean_over(pi, fn):
            return np.mean([fn(table[pi][n]) for n in train])

        # Stage 1: the value constants, by MAE ratio (the interval constants do not move it):
        # the lowest mean among the points no worse than the per-item mean on any training
        # crowd (the goal is "no worse than the mean"), else the lowest worst one.
        def worst(pi):
            return max(table[pi][n]["mae_ratio"] for n in train)

        allowed = [pi for pi in range(len(points)) if worst(pi) <= 1.0] or [
            min(range(len(points)), key=worst)
        ]
        best_values = points[min(allowed, key=lambda pi: mean_over(pi, lambda f: f["mae_ratio"]))]
        same = [
            pi for pi, p in enumerate(points) if all(p[k] == best_values[k] for k in value_keys)
        ]
        # Stage 2: the interval constants, by the coverage gaps with and without gold.
        return min(
            ((pi, rho) for pi in same for rho in RATIOS),
            key=lambda c: mean_over(
                c[0],
                lambda f: abs(f["cov_gold"] - 0.9) + abs(f["cov_no_gold"][c[1]] - 0.9),
            ),
        )

    rows = []
    for held in names:
        pi, rho = choose([n for n in names if n != held])
        f = table[pi][held]
        rows.append(
            {
                "held_out": held,
                **{k: v for k, v in points[pi].items()},
                "shared_ratio": rho,
                "mae_ratio": round(float(f["mae_ratio"]), 4),
                "gain_vs_mean_pct": round(100 * (1 - float(f["mae_ratio"])), 1),
                "coverage_gold": round(float(f["cov_gold"]), 3),
                "coverage_no_gold": round(float(f["cov_no_gold"][rho]), 3),
                "loss": round(loss(f, rho), 4),
            }
        )
        print(json.dumps(rows[-1]))
    worst = max(rows, key=lambda r: r["loss"])
    print("worst crowd left out:", json.dumps(worst))
    pi, rho = choose(names)
    print("chosen on all eight:", json.dumps({**points[pi], "shared_ratio": rho}))


if __name__ == "__main__":
    main()
