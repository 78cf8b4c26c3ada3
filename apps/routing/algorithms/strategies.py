"""Active-learning query strategies that order the crowd queue, in pool and stream mode."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from apps.routing.algorithms.model import ModelKind, predict_proba, train_routing_model

_EPS = 1e-12

Disagreement = Literal["vote_entropy", "kl"]


def _sorted_probs(probs: np.ndarray) -> np.ndarray:
    return -np.sort(-np.asarray(probs, dtype=np.float64), axis=1)


def random_scores(n: int, *, seed: int = 0) -> np.ndarray:
    """Uniform random priorities: the unbiased baseline and the audit sampler."""
    return np.random.default_rng(seed).random(n)


def least_confidence_scores(probs: np.ndarray) -> np.ndarray:
    """1 - p1: ask first where the top class is least likely."""
    return 1.0 - _sorted_probs(probs)[:, 0]


def margin_scores(probs: np.ndarray) -> np.ndarray:
    """1 - (p1 - p2): a small margin between the two best classes asks first."""
    p = _sorted_probs(probs)
    return 1.0 - (p[:, 0] - p[:, 1])


def entropy_scores(probs: np.ndarray) -> np.ndarray:
    """Shannon entropy of the class distribution, in nats."""
    p = np.asarray(probs, dtype=np.float64)
    return -(p * np.log(np.clip(p, _EPS, 1.0))).sum(axis=1)


def medium_confidence_order(
    probs: np.ndarray,
    *,
    band: tuple[float, float] = (0.4, 0.9),
    seed: int = 0,
) -> np.ndarray:
    """Queue order interleaving lowest-in-band, highest-in-band and random items.

    Only asking the least confident items feeds the crowd the ambiguous ones spammers
    and biased workers get wrong most, and trains the model on a skewed sample; mixing
    both ends of a middle confidence band with random picks avoids both. Returns all
    indices in queue order (items outside the band arrive through the random stream).
    """
    confidence = _sorted_probs(probs)[:, 0]
    n = len(confidence)
    in_band = np.flatnonzero((confidence >= band[0]) & (confidence <= band[1]))
    low = in_band[np.argsort(confidence[in_band], kind="stable")]
    high = low[::-1]
    rand = np.random.default_rng(seed).permutation(n)
    pad = np.full(n, -1)
    streams = np.stack([pad.copy(), pad.copy(), rand], axis=1)
    streams[: len(low), 0] = low
    streams[: len(high), 1] = high
    flat = streams.ravel()
    seq = flat[flat >= 0]
    # Keep each item at its first appearance across the round-robin of the three streams.
    _, first = np.unique(seq, return_index=True)
    return seq[np.sort(first)]


def order_to_scores(order: np.ndarray) -> np.ndarray:
    """Turn a queue order into priorities (higher = ask first)."""
    scores = np.empty(len(order), dtype=np.float64)
    scores[order] = np.arange(len(order), 0, -1, dtype=np.float64)
    return scores


def density_weighted_scores(
    uncertainty: np.ndarray,
    features: np.ndarray,
    *,
    beta: float = 1.0,
    n_reference: int = 512,
    seed: int = 0,
) -> np.ndarray:
    """uncertainty x (mean cosine similarity to the pool)^beta (Settles & Craven 2008).

    Similarity is mapped to [0, 1] as (1 + cos) / 2 so the weight stays non-negative.
    Against a random reference subsample of `n_reference` items the cost is O(n·m)
    instead of O(n²); with n <= n_reference the whole pool is the reference (exact).
    """
    x = np.asarray(features, dtype=np.float64)
    unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), _EPS)
    if len(unit) > n_reference:
        reference = unit[np.random.default_rng(seed).choice(len(unit), n_reference, False)]
    else:
        reference = unit
    density = ((1.0 + unit @ reference.T) / 2.0).mean(axis=1)
    return np.asarray(uncertainty, dtype=np.float64) * density**beta


def committee_probabilities(
    labeled_features: np.ndarray,
    labeled_targets: np.ndarray,
    pool_features: np.ndarray,
    *,
    n_classes: int,
    n_members: int = 5,
    kind: ModelKind = "softmax",
    seed: int = 0,
    epochs: int = 100,
    weight_decay: float = 1e-3,
) -> np.ndarray:
    """Class probabilities of a bootstrap committee on the pool, shape (members, n, K)."""
    rng = np.random.default_rng(seed)
    n = len(labeled_features)
    out = []
    for member in range(n_members):
        idx = rng.integers(0, n, n)
        model = train_routing_model(
            labeled_features[idx],
            np.asarray(labeled_targets)[idx],
            n_classes=n_classes,
            kind=kind,
            seed=seed + member,
            epochs=epochs,
            weight_decay=weight_decay,
        )
        out.append(predict_proba(model, pool_features))
    return np.stack(out)


def vote_entropy_scores(committee_probs: np.ndarray) -> np.ndarray:
    """Entropy of the members' hard votes per item (committee shape (M, n, K))."""
    m, n, k = committee_probs.shape
    votes = committee_probs.argmax(axis=2)
    counts = np.zeros((n, k))
    np.add.at(counts, (np.tile(np.arange(n), m), votes.ravel()), 1.0)
    return entropy_scores(counts / m)


def kl_disagreement_scores(committee_probs: np.ndarray) -> np.ndarray:
    """Mean KL divergence of each member from the committee consensus (McCallum & Nigam)."""
    p = np.clip(committee_probs, _EPS, 1.0)
    consensus = p.mean(axis=0)
    return (p * (np.log(p) - np.log(consensus)[None])).sum(axis=2).mean(axis=0)


def query_by_committee_scores(
    labeled_features: np.ndarray,
    labeled_targets: np.ndarray,
    pool_features: np.ndarray,
    *,
    n_classes: int,
    n_members: int = 5,
    measure: Disagreement = "vote_entropy",
    seed: int = 0,
) -> np.ndarray:
    """Disagreement of a bootstrap committee of softmax-regression models on the pool."""
    committee = committee_probabilities(
        labeled_features,
        labeled_targets,
        pool_features,
        n_classes=n_classes,
        n_members=n_members,
        seed=seed,
    )
    if measure == "vote_entropy":
        return vote_entropy_scores(committee)
    return kl_disagreement_scores(committee)


def select_batch(scores: np.ndarray, k: int, *, exclude: np.ndarray | None = None) -> np.ndarray:
    """Pool mode: indices of the k highest-priority items, best first.

    Ties break by index (stable sort) so a round is reproducible; `exclude` is a
    boolean mask of items already settled or in flight.
    """
    s = np.asarray(scores, dtype=np.float64).copy()
    if exclude is not None:
        s[np.asarray(exclude, dtype=bool)] = -np.inf
    order = np.argsort(-s, kind="stable")
    order = order[np.isfinite(s[order])]
    return order[:k]


@dataclass(frozen=True)
class StreamDecision:
    """Per arriving item: send to people (`ask`), and whether that is only an `audit`."""

    ask: np.ndarray
    audit: np.ndarray


def stream_decisions(
    confidence: np.ndarray,
    *,
    threshold: float,
    audit_rate: float = 0.0,
    seed: int = 0,
) -> StreamDecision:
    """Stream mode: ask people when calibrated confidence is below the threshold.

    Confident items are auto-accepted except a random `audit_rate` share, which is
    still sent to people so the accepted labels' accuracy keeps being measured.
    """
    conf = np.atleast_1d(np.asarray(confidence, dtype=np.float64))
    below = conf < threshold
    audit = ~below & (np.random.default_rng(seed).random(len(conf)) < audit_rate)
    return StreamDecision(ask=below | audit, audit=audit)
