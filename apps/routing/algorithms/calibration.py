"""Temperature-scaling calibration of model logits or client probabilities, and calibration metrics."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

_EPS = 1e-12


@dataclass(frozen=True)
class TemperatureFit:
    """A fitted temperature and the held-out NLL (mean, per item) before and after it."""

    temperature: float
    nll_before: float
    nll_after: float
    n: int


def _targets(labels: np.ndarray, n_classes: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim == 1:
        return np.eye(n_classes)[labels.astype(np.int64)]
    return labels / labels.sum(axis=1, keepdims=True)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax, stable for large logits."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def apply_temperature(logits: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities softmax(logits / T)."""
    return np.exp(log_softmax(np.asarray(logits, dtype=np.float64) / temperature))


def calibrate_probabilities(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Temperature-scale probability vectors (e.g. a client's `prediction`) via their logs.

    log p is a valid logit vector for p, so softmax(log p / T) is the same operation
    as on model logits; clipping keeps zero probabilities finite.
    """
    return apply_temperature(np.log(np.clip(probs, _EPS, 1.0)), temperature)


def negative_log_likelihood(
    probs: np.ndarray, labels: np.ndarray, *, sample_weight: np.ndarray | None = None
) -> float:
    """Mean (weighted) NLL of hard labels or soft label posteriors under `probs`."""
    probs = np.asarray(probs, dtype=np.float64)
    t = _targets(labels, probs.shape[1])
    per_item = -(t * np.log(np.clip(probs, _EPS, 1.0))).sum(axis=1)
    return float(np.average(per_item, weights=sample_weight))


def fit_temperature(
    logits: np.ndarray,
    labels: np.ndarray,
    *,
    sample_weight: np.ndarray | None = None,
    max_iter: int = 100,
) -> TemperatureFit:
    """Fit T > 0 minimizing the held-out NLL of softmax(logits / T).

    Optimizing log T keeps T positive without constraints; the NLL in log T is smooth
    and one-dimensional, so LBFGS with a Wolfe line search converges in a few steps.
    `labels` may be class ids or (n, K) soft posteriors of settled items.
    """
    z = torch.as_tensor(np.asarray(logits, dtype=np.float64))
    t = torch.as_tensor(_targets(labels, z.shape[1]))
    w = torch.ones(len(z), dtype=torch.float64)
    if sample_weight is not None:
        w = torch.as_tensor(np.asarray(sample_weight, dtype=np.float64))
    w = w / w.sum()

    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)

    def nll() -> torch.Tensor:
        log_p = torch.log_softmax(z / torch.exp(log_t), dim=1)
        return -(w * (t * log_p).sum(dim=1)).sum()

    with torch.no_grad():
        before = float(nll())
    opt = torch.optim.LBFGS([log_t], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = nll()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        # Bound T so a degenerate held-out set (all correct, huge logits) cannot blow up.
        log_t.clamp_(-5.0, 5.0)
        after = float(nll())
    return TemperatureFit(
        temperature=float(torch.exp(log_t.detach())), nll_before=before, nll_after=after, n=len(z)
    )


def fit_temperature_from_probabilities(
    probs: np.ndarray,
    labels: np.ndarray,
    *,
    sample_weight: np.ndarray | None = None,
) -> TemperatureFit:
    """Fit a temperature for probability vectors (client predictions) via their logs."""
    return fit_temperature(np.log(np.clip(probs, _EPS, 1.0)), labels, sample_weight=sample_weight)


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, *, n_bins: int = 15) -> float:
    """ECE of the top-class confidence over equal-width bins on (0, 1].

    Hard labels score 1/0 correctness; soft labels score the posterior mass on the
    predicted class, which is the expected correctness under the label posterior.
    """
    probs = np.asarray(probs, dtype=np.float64)
    t = _targets(labels, probs.shape[1])
    pred = probs.argmax(axis=1)
    confidence = probs[np.arange(len(probs)), pred]
    correct = t[np.arange(len(probs)), pred]
    # Bin i holds confidences in (i/B, (i+1)/B]; ceil maps the right edge inclusively.
    bins = np.clip(np.ceil(confidence * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    gap = np.bincount(bins, weights=confidence - correct, minlength=n_bins)
    return float(np.abs(gap).sum() / max(len(probs), 1))
