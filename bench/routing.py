"""Benchmark: Concord's routing policy (apps.routing.policy, job defaults) against fixed
redundancy and dynamic redundancy, on a simulated crowd over several scikit-learn data sets."""

# Run from the repository root: .venv/bin/python bench/routing.py [--seeds N] [--datasets a,b]
# (default 10 seeds on digits, breast_cancer, wine, iris). Only the crowd is simulated: the
# routing, its settings (`Routing()`, `Policy()`, `Pricing()`), the aggregation and the
# stopping rule are the production code. The last line is one JSON object.

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_breast_cancer, load_digits, load_iris, load_wine
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_predict

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from apps.jobs.policy import Pricing, Routing  # noqa: E402
from apps.quality.algorithms.aggregation import dawid_skene, majority_vote  # noqa: E402
from apps.routing.policy import RoutingLoop  # noqa: E402

DATASETS = {
    "digits": load_digits,
    "breast_cancer": load_breast_cancer,
    "wine": load_wine,
    "iris": load_iris,
}

# --------------------------------------------------------------------------- the simulated crowd
# The simulator's own parameters (the crowd's make-up), not policy settings.
N_WORKERS = 50
KINDS = (0,) * 30 + (1,) * 15 + (2,) * 5  # good, mediocre, spammers
HARD_PULL = 0.8  # how strongly a hard item's errors go to the classes a model confuses


@dataclass
class SimCrowd:
    """Pre-sampled answers of every worker on every item, so every policy sees the same crowd.

    The j-th answer asked of item i comes from the j-th not-yet-used worker of the item's
    fixed random worker order; the truth is never exposed to policies.
    """

    answers: np.ndarray  # (N, W)
    order: np.ndarray  # (N, W)
    expert_answers: np.ndarray  # (N,)
    expert_ratio: float
    cost: float = 0.0

    def reset(self) -> None:
        self.cost = 0.0
        self.used = np.zeros_like(self.answers, dtype=bool)

    def ask(self, items: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        items = np.asarray(items, dtype=int)
        if len(items) == 0:
            return items, items, items
        ok = np.take_along_axis(~self.used[items], self.order[items], axis=1)
        has = ok.any(axis=1)
        items = items[has]
        workers = self.order[items, ok[has].argmax(axis=1)]
        self.used[items, workers] = True
        self.cost += len(items)
        return items, workers, self.answers[items, workers]

    def ask_expert(self, items: np.ndarray) -> np.ndarray:
        self.cost += self.expert_ratio * len(items)
        return self.expert_answers[items]


def make_crowd(x: np.ndarray, y: np.ndarray, k: int, seed: int, expert_ratio: float) -> SimCrowd:
    """Workers of three kinds on items whose difficulty follows a model's confusion.

    A cross-validated logistic regression's probabilities say, per item, how hard it is
    (1 - p(true class)) and which wrong classes it looks like. A worker answers right with
    their skill lowered on hard items; their errors go, with weight HARD_PULL x hardness,
    to those look-alike classes (the ones the routing model will confuse too), else to their
    own confusion row. Spammers answer at random or mostly one favourite class.
    """
    rng = np.random.default_rng(1000 + seed)
    n = len(y)
    look = cross_val_predict(
        LogisticRegression(max_iter=300, C=0.05), x, y, cv=5, method="predict_proba"
    )
    hard = 1.0 - look[np.arange(n), y]
    wrong = look.copy()
    wrong[np.arange(n), y] = 0.0
    wrong = np.where(wrong.sum(1, keepdims=True) > 0, wrong, 1.0 - np.eye(k)[y])
    wrong /= wrong.sum(axis=1, keepdims=True)
    answers = np.zeros((n, N_WORKERS), dtype=int)
    for w, kind in enumerate(KINDS):
        if kind == 2:
            if w % 2:
                answers[:, w] = rng.integers(k, size=n)
            else:
                fav = rng.integers(k)
                answers[:, w] = np.where(rng.random(n) < 0.7, fav, rng.integers(k, size=n))
            continue
        skill = rng.uniform(0.85, 0.97) if kind == 0 else rng.uniform(0.6, 0.78)
        p_right = skill * (1.0 - 0.4 * hard)
        own = rng.dirichlet(np.ones(k), size=k)
        own[np.arange(k), np.arange(k)] = 0.0
        own /= own.sum(axis=1, keepdims=True)
        pull = HARD_PULL * hard[:, None]
        err = pull * wrong + (1.0 - pull) * own[y]
        err_draw = (rng.random(n)[:, None] > np.cumsum(err, axis=1)).sum(axis=1)
        answers[:, w] = np.where(rng.random(n) < p_right, y, np.minimum(err_draw, k - 1))
    expert_right = rng.random(n) < 0.97 * (1.0 - 0.3 * hard)
    expert = np.where(expert_right, y, (y + 1 + rng.integers(k - 1, size=n)) % k)
    order = np.argsort(rng.random((n, N_WORKERS)), axis=1)
    crowd = SimCrowd(answers=answers, order=order, expert_answers=expert, expert_ratio=expert_ratio)
    crowd.reset()
    return crowd


# --------------------------------------------------------------------------- policies


@dataclass(frozen=True)
class Outcome:
    cost: float
    accuracy: float
    auto_accuracy: float = float("nan")
    auto_share: float = 0.0
    expert_share: float = 0.0
    confidence: np.ndarray | None = None
    correct: np.ndarray | None = None


def fixed_mv(crowd: SimCrowd, y: np.ndarray, k: int) -> Outcome:
    items, workers, labels = _fixed(crowd, len(y), 3)
    pred = majority_vote(items, workers, labels, k, n_tasks=len(y)).labels
    return Outcome(crowd.cost / len(y), float((pred == y).mean()))


def fixed_ds(crowd: SimCrowd, y: np.ndarray, k: int) -> Outcome:
    items, workers, labels = _fixed(crowd, len(y), 5)
    pred = dawid_skene(items, workers, labels, k, n_tasks=len(y)).labels
    return Outcome(crowd.cost / len(y), float((pred == y).mean()))


def _fixed(crowd: SimCrowd, n: int, r: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    parts = [crowd.ask(np.arange(n)) for _ in range(r)]
    return tuple(np.concatenate([p[i] for p in parts]) for i in range(3))


def _delivered(crowd: SimCrowd, y: np.ndarray, out) -> Outcome:
    auto = out.route == "model"
    correct = out.label == y
    return Outcome(
        cost=crowd.cost / len(y),
        accuracy=float(correct.mean()),
        auto_accuracy=float(correct[auto].mean()) if auto.any() else float("nan"),
        auto_share=float(auto.mean()),
        expert_share=float((out.route == "expert").mean()),
        confidence=out.confidence,
        correct=correct,
    )


def dynamic(crowd: SimCrowd, x: np.ndarray, y: np.ndarray, k: int, seed: int) -> Outcome:
    loop = RoutingLoop(x=x, classes=[str(c) for c in range(k)], crowd=crowd, seed=seed)
    return _delivered(crowd, y, loop.run_without_model())


def routing(crowd: SimCrowd, x: np.ndarray, y: np.ndarray, k: int, seed: int) -> Outcome:
    # Job defaults, with routing switched on: the only thing a client sets here.
    loop = RoutingLoop(
        x=x,
        classes=[str(c) for c in range(k)],
        crowd=crowd,
        routing=Routing(mode="model"),
        seed=seed,
    )
    out = _delivered(crowd, y, loop.run())
    for r in loop.out.rounds:
        print(f"      {json.dumps(r, default=float)}", file=sys.stderr)
    return out


# --------------------------------------------------------------------------- main


def _ece(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error of delivered confidence against delivered correctness."""
    b = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    gap = np.bincount(b, weights=confidence - correct, minlength=bins)
    return float(np.abs(gap).sum() / max(len(confidence), 1))


def main() -> None:
    torch.set_num_threads(1)
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--datasets", default=",".join(DATASETS))
    # Exploration runs on seeds outside the reported 0-9 (e.g. --seed-offset 10).
    parser.add_argument("--seed-offset", type=int, default=0)
    args = parser.parse_args()
    pricing = Pricing()
    expert_ratio = pricing.expert_label / pricing.crowd_label
    policies = ("fixed-3 MV", "fixed-5 Dawid-Skene", "dynamic redundancy", "Concord routing")
    rows = {}
    start = time.time()
    for name in args.datasets.split(","):
        x, y = DATASETS[name](return_X_y=True)
        k = int(y.max()) + 1
        x = (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-9)
        res: dict[str, list[Outcome]] = {p: [] for p in policies}
        for seed in range(args.seed_offset, args.seed_offset + args.seeds):
            # Items arrive in a random order (data sets are often sorted by class).
            perm = np.random.default_rng(seed).permutation(len(y))
            xs, ys = x[perm], y[perm]
            crowd = make_crowd(xs, ys, k, seed, expert_ratio)
            for p in policies:
                crowd.reset()
                if p == "fixed-3 MV":
                    o = fixed_mv(crowd, ys, k)
                elif p == "fixed-5 Dawid-Skene":
                    o = fixed_ds(crowd, ys, k)
                elif p == "dynamic redundancy":
                    o = dynamic(crowd, xs, ys, k, seed)
                else:
                    o = routing(crowd, xs, ys, k, seed)
                res[p].append(o)
                print(
                    f"  {name} seed {seed} {p}: cost={o.cost:.3f} acc={o.accuracy:.4f} "
                    f"auto={o.auto_share:.3f}@{o.auto_accuracy:.4f} ({time.time() - start:.0f}s)",
                    file=sys.stderr,
                )
        rows[name] = (len(y), k, res)

    print(
        f"crowd: {N_WORKERS} workers ({KINDS.count(0)} good, {KINDS.count(1)} mediocre, "
        f"{KINDS.count(2)} spammers), hard items pulled toward a model's look-alike classes; "
        f"an expert label costs {expert_ratio:g} crowd labels; {args.seeds} seeds; "
        f"routing: apps.routing.policy with Routing(mode='model') defaults"
    )
    header = (
        f"{'data set':14s} {'policy':20s} {'cost/item':>9s} {'vs fix-3':>8s} {'accuracy':>8s} "
        f"{'min seed':>8s} {'auto share':>10s} {'auto acc':>8s} {'min auto':>8s} {'expert':>6s}"
    )
    print(header)
    print("-" * len(header))
    summary = {}
    for name, (n, k, res) in rows.items():
        base = np.mean([o.cost for o in res["fixed-3 MV"]])
        for p, outs in res.items():
            autos = [o.auto_accuracy for o in outs if not np.isnan(o.auto_accuracy)]
            print(
                f"{name + f' ({n}, {k}c)':14s} {p:20s} {np.mean([o.cost for o in outs]):9.3f} "
                f"{np.mean([o.cost for o in outs]) / base:8.3f} "
                f"{np.mean([o.accuracy for o in outs]):8.4f} "
                f"{min(o.accuracy for o in outs):8.4f} "
                f"{np.mean([o.auto_share for o in outs]):10.3f} "
                f"{np.mean(autos) if autos else float('nan'):8.4f} "
                f"{min(autos) if autos else float('nan'):8.4f} "
                f"{np.mean([o.expert_share for o in outs]):6.3f}"
            )
        r = res["Concord routing"]
        conf = np.concatenate([o.confidence for o in r])
        corr = np.concatenate([o.correct for o in r]).astype(float)
        summary[name] = {
            "accuracy": float(np.mean([o.accuracy for o in r])),
            "fixed5": float(np.mean([o.accuracy for o in res["fixed-5 Dawid-Skene"]])),
            "cost_ratio": float(np.mean([o.cost for o in r]) / base),
            "min_auto": min((o.auto_accuracy for o in r if o.auto_share > 0), default=1.0),
            "any_auto": any(o.auto_share > 0 for o in r),
            "conf": conf,
            "correct": corr,
            "ece": _ece(conf, corr),
        }
    worst = min(summary, key=lambda d: summary[d]["accuracy"] - summary[d]["fixed5"])
    shown = {
        k: round(v, 4)
        for k, v in summary[worst].items()
        if k not in ("conf", "correct", "any_auto")
    }
    print(f"worst data set (accuracy minus fixed-5): {worst} {json.dumps(shown)}")
    # The goals, per data set (not the mean).
    for d, s in summary.items():
        goal_cost = 0.30 if d == "digits" else 0.50
        print(
            f"  {d}: accuracy {s['accuracy']:.4f} vs fixed-5 {s['fixed5']:.4f} "
            f"[{'met' if s['accuracy'] >= s['fixed5'] else 'NOT met'}]; "
            f">= 0.97 where fixed-5 reaches it "
            f"[{'n/a' if s['fixed5'] < 0.97 else ('met' if s['accuracy'] >= 0.97 else 'NOT met')}]; "
            f"cost {s['cost_ratio']:.3f} of fixed-3 <= {goal_cost} "
            f"[{'met' if s['cost_ratio'] <= goal_cost else 'NOT met'}]; "
            f"auto-accepted >= 0.99 every seed "
            + (
                f"({s['min_auto']:.4f}) [{'met' if s['min_auto'] >= 0.99 else 'NOT met'}]; "
                if s["any_auto"]
                else "[n/a: nothing auto-accepted]; "
            )
            + f"ECE {s['ece']:.4f} <= 0.02 [{'met' if s['ece'] <= 0.02 else 'NOT met'}]"
        )
    conf = np.concatenate([s["conf"] for s in summary.values()])
    corr = np.concatenate([s["correct"] for s in summary.values()])
    ece = _ece(conf, corr)
    print(
        json.dumps(
            {
                "datasets": list(summary),
                "worst_accuracy": round(min(s["accuracy"] for s in summary.values()), 4),
                "worst_accuracy_minus_fixed5_pts": round(
                    100 * (summary[worst]["accuracy"] - summary[worst]["fixed5"]), 2
                ),
                "worst_cost_ratio_vs_fixed3": round(
                    max(s["cost_ratio"] for s in summary.values()), 4
                ),
                "digits_cost_ratio_vs_fixed3": round(summary["digits"]["cost_ratio"], 4)
                if "digits" in summary
                else None,
                # null when no seed of any data set auto-accepted anything
                "min_seed_auto_accept_accuracy": min(
                    (round(s["min_auto"], 4) for s in summary.values() if s["any_auto"]),
                    default=None,
                ),
                "ece": round(ece, 4),
            }
        )
    )


if __name__ == "__main__":
    main()
