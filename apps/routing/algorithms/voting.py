"""The model as a voter: posteriors from model probabilities and crowd labels, and cost-aware stopping."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_EPS = 1e-12

STOP, CROWD, EXPERT = 0, 1, 2


def crowd_log_likelihood(
    item_index: np.ndarray,
    worker_index: np.ndarray,
    labels: np.ndarray,
    confusions: np.ndarray,
    *,
    n_items: int,
    answer_weight: float | np.ndarray = 1.0,
) -> np.ndarray:
    """Sum over each item's labels of log P(label | true class), shape (n_items, K).

    `confusions[w, true, observed]` is worker w's confusion matrix (rows sum to 1).
    `answer_weight` (a scalar or one per label) tempers each label's log-likelihood: 1 counts
    it as independent evidence, 1/T softens an aggregation its calibration found
    overconfident by a temperature T, 0 drops it.
    """
    log_c = np.log(np.clip(np.asarray(confusions, dtype=np.float64), _EPS, 1.0))
    # Advanced indices around a slice put the label axis first: (n_labels, K_true).
    contrib = log_c[np.asarray(worker_index), :, np.asarray(labels)]
    contrib = contrib * np.asarray(answer_weight, dtype=np.float64).reshape(-1, 1)
    out = np.zeros((n_items, log_c.shape[1]))
    np.add.at(out, np.asarray(item_index), contrib)
    return out


def model_crowd_posterior(
    model_probs: np.ndarray | None,
    item_index: np.ndarray,
    worker_index: np.ndarray,
    labels: np.ndarray,
    confusions: np.ndarray,
    *,
    n_items: int | None = None,
    class_prior: np.ndarray | None = None,
    model_weight: float = 1.0,
    answer_weight: float | np.ndarray = 1.0,
) -> np.ndarray:
    """Posterior over true classes: p_model(y | x)^w * prod_labels P(label | y), normalized.

    The calibrated model probability already contains the class prior, so it replaces
    the prior in the usual Dawid–Skene item posterior; labels are assumed independent
    of the features given the true class. Without a model, `class_prior` (or uniform)
    is used. `model_weight` < 1 tempers a model that is trusted less than calibrated;
    `answer_weight` tempers the labels (see `crowd_log_likelihood`).
    """
    k = np.asarray(confusions).shape[1]
    if model_probs is not None:
        n = len(model_probs) if n_items is None else n_items
        log_post = model_weight * np.log(np.clip(np.asarray(model_probs, np.float64), _EPS, 1))
    else:
        n = int(np.max(item_index)) + 1 if n_items is None else n_items
        prior = np.full(k, 1.0 / k) if class_prior is None else np.asarray(class_prior)
        log_post = np.tile(np.log(np.clip(prior, _EPS, 1.0)), (n, 1))
    log_post = log_post + crowd_log_likelihood(
        item_index, worker_index, labels, confusions, n_items=n, answer_weight=answer_weight
    )
    log_post -= log_post.max(axis=1, keepdims=True)
    post = np.exp(log_post)
    return post / post.sum(axis=1, keepdims=True)


def expected_error_after_labels(
    posterior: np.ndarray, confusion: np.ndarray, n_labels: int = 1
) -> np.ndarray:
    """Expected error of the MAP label after `n_labels` more labels from `confusion`.

    E[1 - max_y P(y | new labels)] = 1 - sum over label sequences of max_y p(y) prod C[y, l];
    sequences are enumerated exactly (K^n_labels columns), so keep n_labels small.
    """
    post = np.asarray(posterior, dtype=np.float64)
    c = np.asarray(confusion, dtype=np.float64)
    joint = post[:, :, None]
    for _ in range(n_labels):
        joint = (joint[:, :, :, None] * c[None, :, None, :]).reshape(len(post), c.shape[0], -1)
    return 1.0 - joint.max(axis=1).sum(axis=1)


@dataclass(frozen=True)
class LabelDecision:
    """Per item: `action` is STOP (0), CROWD (1) or EXPERT (2), with the numbers behind it.

    `crowd_value` / `expert_value` are value_per_correct x expected error reduction minus
    the price paid (for the best crowd look-ahead of 1..horizon labels); -inf when
    not available.
    """

    action: np.ndarray
    confident: np.ndarray
    error_now: np.ndarray
    crowd_value: np.ndarray
    expert_value: np.ndarray


def cost_aware_decision(
    posterior: np.ndarray,
    n_labels: np.ndarray,
    *,
    crowd_confusion: np.ndarray,
    label_price: float,
    value_per_correct: float | np.ndarray,
    max_labels: int,
    target_confidence: float | np.ndarray,
    horizon: int = 2,
    expert_confusion: np.ndarray | None = None,
    expert_price: float | None = None,
) -> LabelDecision:
    """Decide per item whether to stop, ask one more crowd label, or ask an expert.

    Stop once the MAP class reaches its target confidence (`target_confidence` may be
    per class). Otherwise buy a crowd label while value x expected error reduction of
    the next h labels (h up to `horizon`, so a label that only pays off with a second
    one is not refused myopically) exceeds h x price, and only below `max_labels`.
    The expert is chosen when its net value beats both stopping and the crowd.
    `crowd_confusion` is the expected confusion of the next worker.
    """
    post = np.asarray(posterior, dtype=np.float64)
    n_items, k = post.shape
    labels_so_far = np.broadcast_to(np.asarray(n_labels), (n_items,))
    map_class = post.argmax(axis=1)
    confidence = post[np.arange(n_items), map_class]
    target = np.broadcast_to(np.asarray(target_confidence, dtype=np.float64), (k,))[map_class]
    value = np.broadcast_to(np.asarray(value_per_correct, dtype=np.float64), (k,))[map_class]
    confident = confidence >= target
    error_now = 1.0 - confidence

    remaining = max_labels - labels_so_far
    crowd_value = np.full(n_items, -np.inf)
    for h in range(1, horizon + 1):
        gain = value * (error_now - expected_error_after_labels(post, crowd_confusion, h))
        net = np.where(remaining >= h, gain - h * label_price, -np.inf)
        crowd_value = np.maximum(crowd_value, net)
    expert_value = np.full(n_items, -np.inf)
    if expert_confusion is not None and expert_price is not None:
        gain = value * (error_now - expected_error_after_labels(post, expert_confusion, 1))
        expert_value = gain - expert_price

    action = np.full(n_items, STOP)
    crowd_best = (crowd_value > 0) & (crowd_value >= expert_value)
    expert_best = (expert_value > 0) & (expert_value > crowd_value)
    action[crowd_best] = CROWD
    action[expert_best] = EXPERT
    action[confident] = STOP
    return LabelDecision(
        action=action,
        confident=confident,
        error_now=error_now,
        crowd_value=crowd_value,
        expert_value=expert_value,
    )


def one_coin_confusions(accuracy: np.ndarray, n_classes: int) -> np.ndarray:
    """Confusion matrices of 'one-coin' workers: accuracy on the diagonal, errors uniform."""
    acc = np.asarray(accuracy, dtype=np.float64)[:, None, None]
    eye = np.eye(n_classes)[None]
    return acc * eye + (1.0 - acc) * (1.0 - eye) / (n_classes - 1)
