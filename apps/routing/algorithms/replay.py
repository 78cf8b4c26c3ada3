"""Query-strategy dispatch by name, and the offline replay that compares a strategy with random."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from apps.routing.algorithms.model import ModelKind, predict_proba, train_routing_model
from apps.routing.algorithms.strategies import (
    density_weighted_scores,
    entropy_scores,
    least_confidence_scores,
    margin_scores,
    medium_confidence_order,
    order_to_scores,
    query_by_committee_scores,
    random_scores,
    select_batch,
)


def query_scores(
    strategy: str,
    probs: np.ndarray,
    *,
    pool_features: np.ndarray | None = None,
    labeled_features: np.ndarray | None = None,
    labeled_targets: np.ndarray | None = None,
    n_classes: int | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Priorities (higher = ask first) of the pool under a named strategy.

    "fifo" gives every item the same priority (the queue then runs in arrival order).
    "density" and "committee" need features (and the committee a labeled set); without
    them they fall back to entropy, the strategy they refine.
    """
    probs = np.asarray(probs, dtype=np.float64)
    n = len(probs)
    if strategy == "fifo":
        return np.zeros(n)
    if strategy == "random":
        return random_scores(n, seed=seed)
    if strategy == "least_confidence":
        return least_confidence_scores(probs)
    if strategy == "margin":
        return margin_scores(probs)
    if strategy == "entropy":
        return entropy_scores(probs)
    if strategy == "medium_mix":
        return order_to_scores(medium_confidence_order(probs, seed=seed))
    if strategy == "density":
        if pool_features is None:
            return entropy_scores(probs)
        return density_weighted_scores(entropy_scores(probs), pool_features, seed=seed)
    if strategy == "committee":
        if pool_features is None or labeled_features is None or len(labeled_features) < 2:
            return entropy_scores(probs)
        return query_by_committee_scores(
            labeled_features,
            labeled_targets,
            pool_features,
            n_classes=int(n_classes or probs.shape[1]),
            seed=seed,
        )
    raise ValueError(f"unknown strategy {strategy!r}")


@dataclass(frozen=True)
class LearningCurves:
    """Test accuracy after each round, for the strategy and for random picks (same seed set)."""

    n_labels: np.ndarray
    strategy: np.ndarray
    random: np.ndarray
    n_test: int


def replay_learning_curves(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    n_classes: int,
    strategy: str,
    rounds: int,
    batch: int,
    seed: int = 0,
    test_share: float = 0.3,
    kind: ModelKind = "softmax",
    epochs: int = 100,
) -> LearningCurves:
    """Replay active learning on already labeled items: accuracy vs labels bought.

    A random `test_share` is held out for measuring; the rest is the pool. Both runs start
    from the same random seed set of `batch` items, then buy `batch` labels per round,
    one by the strategy and one at random, retraining each time; an entry per round
    (rounds + 1 in all, the seed set included). Rounds stop early when the pool runs out.
    """
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    n_test = max(1, int(round(len(x) * test_share)))
    test, pool = order[:n_test], order[n_test:]
    start = pool[:batch]

    def run(name: str) -> list[float]:
        labeled = np.zeros(len(pool), dtype=bool)
        labeled[np.isin(pool, start)] = True
        curve = []
        for r in range(rounds + 1):
            idx = pool[labeled]
            model = train_routing_model(
                x[idx], y[idx], n_classes=n_classes, kind=kind, epochs=epochs, seed=seed
            )
            curve.append(float((predict_proba(model, x[test]).argmax(axis=1) == y[test]).mean()))
            if r == rounds or labeled.all():
                break
            probs = predict_proba(model, x[pool])
            scores = query_scores(
                name,
                probs,
                pool_features=x[pool],
                labeled_features=x[idx],
                labeled_targets=y[idx],
                n_classes=n_classes,
                seed=seed + r,
            )
            labeled[select_batch(scores, batch, exclude=labeled)] = True
        return curve

    chosen, baseline = run(strategy), run("random")
    size = min(len(chosen), len(baseline))
    n_labels = np.minimum(batch * (np.arange(size) + 1), len(pool))
    return LearningCurves(
        n_labels=n_labels,
        strategy=np.asarray(chosen[:size]),
        random=np.asarray(baseline[:size]),
        n_test=n_test,
    )
