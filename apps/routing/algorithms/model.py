"""Routing model on item features: softmax regression or a small MLP, trained in torch."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

ModelKind = Literal["softmax", "mlp"]


@dataclass(frozen=True, eq=False)
class RoutingModel:
    """A trained routing model: architecture, feature scaling and weights as bytes.

    `state` is a torch-serialized state_dict so the whole model can live in a
    BinaryField; `model_to_bytes` / `model_from_bytes` round-trip everything.
    """

    kind: ModelKind
    n_features: int
    n_classes: int
    hidden: int
    feature_mean: np.ndarray
    feature_scale: np.ndarray
    state: bytes
    n_train: int
    train_loss: float


def _network(kind: ModelKind, n_features: int, n_classes: int, hidden: int) -> nn.Module:
    if kind == "softmax":
        return nn.Linear(n_features, n_classes)
    if kind == "mlp":
        return nn.Sequential(nn.Linear(n_features, hidden), nn.ReLU(), nn.Linear(hidden, n_classes))
    raise ValueError(f"unknown model kind {kind!r}")


def _state_to_bytes(state: dict[str, torch.Tensor]) -> bytes:
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in state.items()}, buffer)
    return buffer.getvalue()


def _state_from_bytes(data: bytes) -> dict[str, torch.Tensor]:
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def _soft_targets(targets: np.ndarray, n_classes: int) -> np.ndarray:
    targets = np.asarray(targets)
    if targets.ndim == 1:
        return np.eye(n_classes, dtype=np.float32)[targets.astype(np.int64)]
    if targets.shape[1] != n_classes:
        raise ValueError("soft targets must have one column per class")
    return targets.astype(np.float32) / targets.sum(axis=1, keepdims=True).astype(np.float32)


def train_routing_model(
    features: np.ndarray,
    targets: np.ndarray,
    *,
    n_classes: int | None = None,
    kind: ModelKind = "softmax",
    hidden: int = 64,
    sample_weight: np.ndarray | None = None,
    weight_decay: float = 1e-3,
    epochs: int = 200,
    lr: float = 0.01,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> RoutingModel:
    """Fit the model by full-batch weighted cross-entropy on hard labels or label posteriors.

    `targets` is either an int vector of class ids or an (n, K) matrix of label
    posteriors (soft targets, e.g. aggregated crowd posteriors). Full-batch training
    on a fixed seed keeps the result reproducible on the CPU. Softmax regression runs
    LBFGS for at most `epochs` iterations; the MLP runs `epochs` Adam steps at `lr`.
    """
    x = np.asarray(features, dtype=np.float64)
    targets = np.asarray(targets)
    if n_classes is None:
        n_classes = int(targets.max()) + 1 if targets.ndim == 1 else targets.shape[1]
    soft = _soft_targets(targets, n_classes)
    weight = (
        np.ones(len(x), dtype=np.float32)
        if sample_weight is None
        else np.asarray(sample_weight, dtype=np.float32)
    )
    # Standardizing inside the model keeps one learning rate sensible for any feature scale.
    # Weighted moments make a zero weight the same as dropping the row.
    mean = np.average(x, axis=0, weights=weight)
    scale = np.sqrt(np.average((x - mean) ** 2, axis=0, weights=weight))
    scale = np.where(scale > 1e-8, scale, 1.0)

    xt = torch.as_tensor((x - mean) / scale, dtype=torch.float32, device=device)
    yt = torch.as_tensor(soft, device=device)
    wt = torch.as_tensor(weight / weight.sum(), device=device)
    with torch.random.fork_rng(devices=[]):
        # Seeding inside fork_rng keeps callers' global torch RNG untouched.
        torch.manual_seed(seed)
        net = _network(kind, x.shape[1], n_classes, hidden).to(device)
    decay = [p for name, p in net.named_parameters() if name.endswith("weight")]

    def loss_fn() -> torch.Tensor:
        log_p = torch.log_softmax(net(xt), dim=1)
        nll = -(wt * (yt * log_p).sum(dim=1)).sum()
        return nll + weight_decay * sum((p**2).sum() for p in decay)

    if kind == "softmax":
        # The softmax-regression loss is convex, so LBFGS converges fast and exactly.
        lbfgs = torch.optim.LBFGS(
            net.parameters(), lr=1.0, max_iter=epochs, line_search_fn="strong_wolfe"
        )

        def closure() -> torch.Tensor:
            lbfgs.zero_grad()
            loss = loss_fn()
            loss.backward()
            return loss

        lbfgs.step(closure)
    else:
        adam = torch.optim.Adam(net.parameters(), lr=lr)
        for _ in range(epochs):
            adam.zero_grad()
            loss = loss_fn()
            loss.backward()
            adam.step()
    with torch.no_grad():
        final = float(loss_fn())
    return RoutingModel(
        kind=kind,
        n_features=x.shape[1],
        n_classes=n_classes,
        hidden=hidden,
        feature_mean=mean,
        feature_scale=scale,
        state=_state_to_bytes(net.state_dict()),
        n_train=len(x),
        train_loss=final,
    )


def load_network(model: RoutingModel, *, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the torch module of a trained model, in eval mode, on `device`."""
    net = _network(model.kind, model.n_features, model.n_classes, model.hidden)
    net.load_state_dict(_state_from_bytes(model.state))
    return net.to(device).eval()


def predict_logits(
    model: RoutingModel, features: np.ndarray, *, device: str | torch.device = "cpu"
) -> np.ndarray:
    """Uncalibrated class logits, shape (n, K)."""
    x = (np.asarray(features, dtype=np.float64) - model.feature_mean) / model.feature_scale
    net = load_network(model, device=device)
    with torch.no_grad():
        out = net(torch.as_tensor(x, dtype=torch.float32, device=device))
    return out.double().cpu().numpy()


def predict_proba(
    model: RoutingModel,
    features: np.ndarray,
    *,
    temperature: float = 1.0,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Class probabilities, optionally temperature-scaled, shape (n, K)."""
    logits = predict_logits(model, features, device=device) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    return p / p.sum(axis=1, keepdims=True)


def model_to_bytes(model: RoutingModel) -> bytes:
    """Serialize the whole model (metadata, scaling and weights) for storage in the DB."""
    buffer = io.BytesIO()
    torch.save(
        {
            "kind": model.kind,
            "n_features": model.n_features,
            "n_classes": model.n_classes,
            "hidden": model.hidden,
            "feature_mean": torch.as_tensor(model.feature_mean),
            "feature_scale": torch.as_tensor(model.feature_scale),
            "state": _state_from_bytes(model.state),
            "n_train": model.n_train,
            "train_loss": model.train_loss,
        },
        buffer,
    )
    return buffer.getvalue()


def model_from_bytes(data: bytes) -> RoutingModel:
    """Inverse of `model_to_bytes`; loads with weights_only so stored bytes cannot run code."""
    raw = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    return RoutingModel(
        kind=raw["kind"],
        n_features=int(raw["n_features"]),
        n_classes=int(raw["n_classes"]),
        hidden=int(raw["hidden"]),
        feature_mean=raw["feature_mean"].numpy(),
        feature_scale=raw["feature_scale"].numpy(),
        state=_state_to_bytes(raw["state"]),
        n_train=int(raw["n_train"]),
        train_loss=float(raw["train_loss"]),
    )


def set_torch_threads(n: int) -> None:
    """Use `n` intra-op threads: tiny models only lose time to more (see bench/routing.py)."""
    torch.set_num_threads(n)
