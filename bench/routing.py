"""Benchmark: Concord's confidence routing against fixed-redundancy policies on a simulated digits crowd."""

# Run from the repository root: .venv/bin/python bench/routing.py [seed ...]
# (default seeds 0-4; about 1-2 minutes).

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from apps.routing.algorithms import (  # noqa: E402
    CROWD,
    EXPERT,
    calibrate_probabilities,
    choose_threshold,
    cost_aware_decision,
    fit_temperature,
    margin_scores,
    model_crowd_posterior,
    one_coin_confusions,
    predict_logits,
    predict_proba,
    select_batch,
    train_routing_model,
)

K = 10
N_WORKERS = 50
CROWD_PRICE = 1.0
EXPERT_PRICE = 10.0
SEEDS = (0, 1, 2, 3, 4)

# Concord policy knobs (what a job's policy/routing settings would hold).
SEED_SET = 250  # random items labeled crowd-only: training start and calibration set
ROUND_SIZE = 100  # pool-mode active-learning batch
MAX_ROUNDS = 8
TARGET_ACCURACY = 0.97  # lower-bound target for auto-accepted items
BOUND_LEVEL = 0.90
AUDIT_SHARE = 0.03
CROWD_TARGET = 0.99  # posterior confidence at which crowd labeling stops
VALUE_PER_CORRECT = 25.0
MAX_LABELS = 5
MODEL_KIND = "mlp"


# --------------------------------------------------------------------------- simulation


@dataclass
class Crowd:
    """Pre-sampled answers of every worker on every item, so every policy sees the same crowd.

    The j-th label asked for item i comes from the j-th not-yet-used, non-banned worker
    of the item's fixed random worker order; the truth is never exposed to policies.
    """

    answers: np.ndarray  # (N, W) answer of worker w on item i
    order: np.ndarray  # (N, W) worker arrival order per item
    expert_answers: np.ndarray  # (N,) answer of the expert who would take item i
    kinds: np.ndarray  # (W,) 0 good, 1 mediocre, 2 spammer (for reporting only)
    cost: float = 0.0
    used: np.ndarray = field(default=None)  # (N, W) bool
    item: list = field(default_factory=list)
    worker: list = field(default_factory=list)
    label: list = field(default_factory=list)
    banned: np.ndarray = field(default=None)

    def reset(self) -> None:
        self.cost = 0.0
        self.used = np.zeros_like(self.answers, dtype=bool)
        self.item, self.worker, self.label = [], [], []
        self.banned = np.zeros(self.answers.shape[1], dtype=bool)

    def ask(self, items: np.ndarray) -> None:
        """One more crowd label for each item in `items` (vectorized over items)."""
        if len(items) == 0:
            return
        ok = ~self.used[items] & ~self.banned[None, :]
        ordered_ok = np.take_along_axis(ok, self.order[items], axis=1)
        has = ordered_ok.any(axis=1)
        items = items[has]
        pos = ordered_ok[has].argmax(axis=1)
        workers = self.order[items, pos]
        self.used[items, workers] = True
        self.item.extend(items.tolist())
        self.worker.extend(workers.tolist())
        self.label.extend(self.answers[items, workers].tolist())
        self.cost += CROWD_PRICE * len(items)

    def ask_expert(self, items: np.ndarray) -> np.ndarray:
        self.cost += EXPERT_PRICE * len(items)
        return self.expert_answers[items]

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return np.array(self.item, int), np.array(self.worker, int), np.array(self.label, int)


def make_crowd(y: np.ndarray, x: np.ndarray, seed: int) -> Crowd:
    rng = np.random.default_rng(1000 + seed)
    n = len(y)
    # Errors go mostly to look-alike digits: confusability from distances of class means.
    means = np.stack([x[y == c].mean(axis=0) for c in range(K)])
    d = ((means[:, None] - means[None]) ** 2).sum(-1)
    sim = np.exp(-d / np.median(d[d > 0]) * 3)
    np.fill_diagonal(sim, 0)
    base_err = 0.7 * sim / sim.sum(1, keepdims=True) + 0.3 * (1 - np.eye(K)) / (K - 1)

    kinds = np.array([0] * 30 + [1] * 15 + [2] * 5)
    conf = np.zeros((N_WORKERS, K, K))
    for w, kind in enumerate(kinds):
        if kind == 2:
            if w % 2:  # random clicker
                conf[w] = np.full((K, K), 1.0 / K)
            else:  # mostly one favourite answer
                conf[w] = 0.2 / K
                conf[w][:, rng.integers(K)] += 0.8
            continue
        acc = rng.uniform(0.86, 0.97, K) if kind == 0 else rng.uniform(0.55, 0.75, K)
        err = np.stack([rng.dirichlet(base_err[c] * 20 + 1e-3) for c in range(K)])
        err[np.arange(K), np.arange(K)] = 0
        err /= err.sum(1, keepdims=True)
        conf[w] = err * (1 - acc)[:, None]
        conf[w][np.arange(K), np.arange(K)] = acc

    def sample(c: np.ndarray) -> np.ndarray:
        cum = np.cumsum(c[y], axis=1)
        return np.minimum((rng.random(n)[:, None] > cum).sum(axis=1), K - 1)

    answers = np.stack([sample(conf[w]) for w in range(N_WORKERS)], axis=1)
    expert_conf = np.full((K, K), 0.01 / (K - 1))
    np.fill_diagonal(expert_conf, 0.99)
    expert_answers = sample(expert_conf)
    order = np.argsort(rng.random((n, N_WORKERS)), axis=1)
    crowd = Crowd(answers=answers, order=order, expert_answers=expert_answers, kinds=kinds)
    crowd.reset()
    return crowd


# --------------------------------------------------------------------------- shared pieces


def worker_accuracy_em(
    crowd: Crowd, n_items: int, *, iters: int = 20, prior: tuple[float, float] = (7.0, 3.0)
) -> np.ndarray:
    """One-coin Dawid–Skene on the labels so far, with a Beta prior on accuracies.

    The one-coin model has one parameter per worker, which dynamic redundancy's
    few labels per worker can estimate; full confusion matrices could not.
    """
    items, workers, labels = crowd.arrays()
    acc = np.full(N_WORKERS, prior[0] / sum(prior))
    if len(items) == 0:
        return acc
    n_w = np.bincount(workers, minlength=N_WORKERS)
    for _ in range(iters):
        post = model_crowd_posterior(
            None, items, workers, labels, one_coin_confusions(acc, K), n_items=n_items
        )
        hit = np.bincount(workers, weights=post[items, labels], minlength=N_WORKERS)
        acc = (hit + prior[0] - 1) / (n_w + sum(prior) - 2)
    return np.clip(acc, 0.02, 0.995)


def ban_spammers(crowd: Crowd, acc: np.ndarray) -> None:
    """Ops bans workers whose estimated accuracy is near chance after enough labels."""
    _, workers, _ = crowd.arrays()
    n_w = np.bincount(workers, minlength=N_WORKERS)
    crowd.banned |= (n_w >= 12) & (acc < 0.35)


def label_dynamically(
    crowd: Crowd,
    items: np.ndarray,
    n_items: int,
    *,
    model_probs: np.ndarray | None,
    cost_aware: bool,
    expert_done: dict[int, int],
) -> np.ndarray:
    """Ask labels one at a time per item until the stopping rule says stop; return posteriors.

    Items are processed together, one label per pending item per step, re-estimating
    worker accuracies between steps as the platform's quality job would.
    """
    expert_conf = one_coin_confusions(np.array([0.99]), K)[0]
    pending = np.asarray(items)
    # The calibrated model votes on its items; elsewhere a uniform vote changes nothing.
    voter = None
    if model_probs is not None:
        voter = np.full((n_items, K), 1.0 / K)
        voter[items] = model_probs
    crowd.ask(pending)  # every item gets at least one human label
    while len(pending):
        acc = worker_accuracy_em(crowd, n_items)
        ban_spammers(crowd, acc)
        post = item_posteriors(crowd, n_items, acc, expert_done, voter)[pending]
        n_labels = crowd.used[pending].sum(axis=1)
        typical = (one_coin_confusions(acc[~crowd.banned], K)).mean(axis=0)
        if cost_aware:
            decision = cost_aware_decision(
                post,
                n_labels,
                crowd_confusion=typical,
                label_price=CROWD_PRICE,
                value_per_correct=VALUE_PER_CORRECT,
                max_labels=MAX_LABELS,
                target_confidence=CROWD_TARGET,
                expert_confusion=expert_conf,
                expert_price=EXPERT_PRICE,
            )
            action = decision.action
            # At the label cap an unsettled item goes to an expert (the disputed path).
            stuck = (n_labels >= MAX_LABELS) & ~decision.confident & (action != EXPERT)
            action = np.where(stuck & (decision.error_now > 0.05), EXPERT, action)
        else:
            confident = post.max(axis=1) >= CROWD_TARGET
            action = np.where(confident, 0, np.where(n_labels >= MAX_LABELS, EXPERT, CROWD))
        to_expert = pending[action == EXPERT]
        for i, a in zip(to_expert.tolist(), crowd.ask_expert(to_expert).tolist(), strict=True):
            expert_done[i] = a
        pending = pending[action == CROWD]
        crowd.ask(pending)
    acc = worker_accuracy_em(crowd, n_items)
    return item_posteriors(crowd, n_items, acc, expert_done, voter)[items]


def item_posteriors(
    crowd: Crowd,
    n_items: int,
    acc: np.ndarray,
    expert_done: dict[int, int],
    model_probs: np.ndarray | None = None,
) -> np.ndarray:
    """Posteriors of all items from crowd and expert labels, with the model as a voter."""
    items, workers, labels = crowd.arrays()
    confusions = one_coin_confusions(np.append(acc, 0.99), K)
    if expert_done:
        e_items = np.fromiter(expert_done.keys(), int)
        e_labels = np.fromiter(expert_done.values(), int)
        items = np.append(items, e_items)
        workers = np.append(workers, np.full(len(e_items), N_WORKERS))
        labels = np.append(labels, e_labels)
    return model_crowd_posterior(model_probs, items, workers, labels, confusions, n_items=n_items)


@dataclass(frozen=True)
class Outcome:
    cost: float
    accuracy: float
    auto_accept_accuracy: float = float("nan")
    auto_share: float = 0.0
    expert_share: float = 0.0


# --------------------------------------------------------------------------- policies


def majority_vote(items: np.ndarray, labels: np.ndarray, n: int, rng) -> np.ndarray:
    counts = np.zeros((n, K))
    np.add.at(counts, (items, labels), 1)
    # Random tie-breaking: a tiny random jitter below the count resolution.
    return (counts + rng.random((n, K)) * 0.1).argmax(axis=1)


def policy_fixed_mv(crowd: Crowd, y: np.ndarray, seed: int, r: int = 3) -> Outcome:
    n = len(y)
    for _ in range(r):
        crowd.ask(np.arange(n))
    items, _, labels = crowd.arrays()
    pred = majority_vote(items, labels, n, np.random.default_rng(seed))
    return Outcome(crowd.cost / n, float((pred == y).mean()))


DS_SOURCE = ["crowd-kit DawidSkene"]


def dawid_skene_labels(items, workers, labels, n) -> np.ndarray:
    """Dawid–Skene labels: the house kernel when it imports and runs, else crowd-kit's."""
    try:
        from apps.quality.algorithms.aggregation import dawid_skene

        pred = np.asarray(dawid_skene(items, workers, labels, K, n_tasks=n).labels)
        if pred.shape != (n,):
            raise ValueError("unexpected shape from the house kernel")
        DS_SOURCE[0] = "apps.quality.algorithms dawid_skene"
        return pred
    except Exception:  # noqa: BLE001 - the house kernel is written concurrently; fall back
        import pandas as pd
        from crowdkit.aggregation import DawidSkene

        DS_SOURCE[0] = "crowd-kit DawidSkene"
        df = pd.DataFrame({"task": items, "worker": workers, "label": labels})
        res = DawidSkene(n_iter=100).fit_predict(df)
        return res.reindex(range(n)).to_numpy().astype(int)


def policy_fixed_ds(crowd: Crowd, y: np.ndarray, seed: int, r: int = 5) -> Outcome:
    n = len(y)
    for _ in range(r):
        crowd.ask(np.arange(n))
    pred = dawid_skene_labels(*crowd.arrays(), n)
    return Outcome(crowd.cost / n, float((pred == y).mean()))


def policy_dynamic(crowd: Crowd, y: np.ndarray, seed: int) -> Outcome:
    n = len(y)
    experts: dict[int, int] = {}
    order = np.random.default_rng(seed).permutation(n)
    for batch in np.array_split(order, 8):
        label_dynamically(crowd, batch, n, model_probs=None, cost_aware=False, expert_done=experts)
    acc = worker_accuracy_em(crowd, n)
    pred = item_posteriors(crowd, n, acc, experts).argmax(axis=1)
    return Outcome(crowd.cost / n, float((pred == y).mean()), expert_share=len(experts) / n)


def fit_calibrated(
    x: np.ndarray, targets: np.ndarray, cal_idx: np.ndarray, settled: np.ndarray, seed: int
):
    """Final model on all settled items + out-of-fold logits for the calibration items.

    Cross-fitting lets the random calibration set also be training data: each
    calibration item is scored by a model that never saw it.
    """
    model = train_routing_model(
        x[settled], targets[settled], n_classes=K, kind=MODEL_KIND, seed=seed, epochs=300
    )
    folds = np.array_split(np.random.default_rng(seed).permutation(cal_idx), 5)
    oof = np.zeros((len(x), K))
    for f, fold in enumerate(folds):
        train = np.setdiff1d(settled, fold)
        m = train_routing_model(
            x[train], targets[train], n_classes=K, kind=MODEL_KIND, seed=seed + f, epochs=300
        )
        oof[fold] = predict_logits(m, x[fold])
    temp = fit_temperature(oof[cal_idx], targets[cal_idx])
    return model, oof[cal_idx], temp


def policy_routing(crowd: Crowd, y: np.ndarray, x: np.ndarray, seed: int) -> Outcome:
    n = len(y)
    rng = np.random.default_rng(seed)
    experts: dict[int, int] = {}
    targets = np.zeros((n, K))  # settled label posteriors (soft training targets)
    settled = np.zeros(n, bool)
    delivered = np.full(n, -1)
    source = np.full(n, "", dtype=object)

    cal_idx = rng.choice(n, SEED_SET, replace=False)
    targets[cal_idx] = label_dynamically(
        crowd, cal_idx, n, model_probs=None, cost_aware=False, expert_done=experts
    )
    settled[cal_idx] = True

    for rnd in range(MAX_ROUNDS + 1):
        settled_idx = np.flatnonzero(settled)
        model, oof_logits, temp = fit_calibrated(x, targets, cal_idx, settled_idx, seed + rnd)
        oof_probs = calibrate_probabilities(
            np.exp(oof_logits - oof_logits.max(1, keepdims=True)), temp.temperature
        )
        pool = np.flatnonzero(~settled)
        pool_probs = predict_proba(model, x[pool], temperature=temp.temperature)
        pred = oof_probs.argmax(1)
        # Soft correctness: the crowd posterior's mass on the model's label, so noisy
        # settled labels do not count as certain agreement.
        correct = targets[cal_idx][np.arange(len(cal_idx)), pred]
        choice = choose_threshold(
            oof_probs.max(1),
            correct,
            target_accuracy=TARGET_ACCURACY,
            level=BOUND_LEVEL,
            pool_confidence=pool_probs.max(1),
        )
        below = pool_probs.max(1) < choice.threshold
        print(
            f"    seed {seed} round {rnd}: settled={settled.sum()} T={temp.temperature:.2f} "
            f"thr={choice.threshold:.4f} lb={choice.lower_bound:.4f} "
            f"coverage={choice.coverage:.3f} cost={crowd.cost:.0f}",
            file=sys.stderr,
        )
        if below.sum() <= ROUND_SIZE or rnd == MAX_ROUNDS:
            break
        ask = pool[select_batch(margin_scores(pool_probs), ROUND_SIZE, exclude=~below)]
        targets[ask] = label_dynamically(
            crowd,
            ask,
            n,
            model_probs=pool_probs[np.searchsorted(pool, ask)],
            cost_aware=True,
            expert_done=experts,
        )
        settled[ask] = True

    # Final pass: confident items are auto-accepted (minus a random audit share);
    # everything else goes to the crowd with the model as a voter.
    accept = pool[~below]
    audit = accept[rng.random(len(accept)) < AUDIT_SHARE]
    accept = np.setdiff1d(accept, audit)
    delivered[accept] = pool_probs[~below].argmax(1)[np.isin(pool[~below], accept)]
    source[accept] = "model"
    rest = np.concatenate([pool[below], audit])
    rest_probs = predict_proba(model, x[rest], temperature=temp.temperature)
    # Audit items are judged by people alone, so the model cannot vouch for itself.
    is_audit = np.isin(rest, audit)
    rest_probs[is_audit] = 1.0 / K
    targets[rest] = label_dynamically(
        crowd, rest, n, model_probs=rest_probs, cost_aware=True, expert_done=experts
    )
    settled[rest] = True
    human = np.flatnonzero(settled)
    delivered[human] = targets[human].argmax(1)
    source[human] = "crowd"
    assert (delivered >= 0).all()
    auto = source == "model"
    return Outcome(
        cost=crowd.cost / n,
        accuracy=float((delivered == y).mean()),
        auto_accept_accuracy=float((delivered[auto] == y[auto]).mean()),
        auto_share=float(auto.mean()),
        expert_share=len(experts) / n,
    )


# --------------------------------------------------------------------------- main


def main() -> None:
    # Tiny models: intra-op threads only add synchronization, and on a shared 2-core box
    # two spinning threads per process slow training by an order of magnitude.
    torch.set_num_threads(1)
    x, y = load_digits(return_X_y=True)
    policies = {
        "fixed-3 + majority vote": lambda c, s: policy_fixed_mv(c, y, s),
        "fixed-5 + Dawid-Skene": lambda c, s: policy_fixed_ds(c, y, s),
        "dynamic redundancy": lambda c, s: policy_dynamic(c, y, s),
        "Concord routing": lambda c, s: policy_routing(c, y, x, s),
    }
    results: dict[str, list[Outcome]] = {name: [] for name in policies}
    start = time.time()
    seeds = tuple(int(s) for s in sys.argv[1:]) or SEEDS
    for seed in seeds:
        crowd = make_crowd(y, x, seed)
        for name, run in policies.items():
            crowd.reset()
            results[name].append(run(crowd, seed))
            o = results[name][-1]
            print(
                f"  seed {seed} {name}: cost={o.cost:.3f} acc={o.accuracy:.4f} "
                f"auto_acc={o.auto_accept_accuracy:.4f} ({time.time() - start:.0f}s)",
                file=sys.stderr,
            )

    base_cost = np.mean([o.cost for o in results["fixed-3 + majority vote"]])
    header = (
        f"{'policy':26s} {'cost/item':>9s} {'accuracy':>8s} {'min seed':>8s} "
        f"{'cost/correct':>12s} {'vs fixed-3':>10s} {'auto share':>10s} {'auto acc':>8s} "
        f"{'expert':>7s}"
    )
    print(
        f"digits: {len(y)} items, {N_WORKERS} workers (30 good, 15 mediocre, 5 spammers) "
        f"+ 2 experts; price {CROWD_PRICE:g}/crowd label, {EXPERT_PRICE:g}/expert label; "
        f"seeds {list(seeds)}; Dawid-Skene: {DS_SOURCE[0]}"
    )
    print(
        f"Concord routing: {MODEL_KIND} on features, margin queries in rounds of {ROUND_SIZE}, "
        f"temperature-calibrated, threshold = smallest with Wilson {BOUND_LEVEL:.0%} lower "
        f"bound >= {TARGET_ACCURACY}, {AUDIT_SHARE:.0%} audit, model-as-voter + cost-aware "
        f"stopping"
    )
    print(header)
    print("-" * len(header))
    for name, outs in results.items():
        cost = np.mean([o.cost for o in outs])
        acc = np.mean([o.accuracy for o in outs])
        auto = (
            np.nanmean([o.auto_accept_accuracy for o in outs])
            if name == "Concord routing"
            else np.nan
        )
        print(
            f"{name:26s} {cost:9.3f} {acc:8.4f} {min(o.accuracy for o in outs):8.4f} "
            f"{cost / acc:12.3f} {cost / base_cost:10.3f} "
            f"{np.mean([o.auto_share for o in outs]):10.3f} {auto:8.4f} "
            f"{np.mean([o.expert_share for o in outs]):7.3f}"
        )
    r = results["Concord routing"]
    auto_correct = sum(o.auto_accept_accuracy * o.auto_share for o in r)
    summary = {
        "cost_ratio_vs_fixed3": round(float(np.mean([o.cost for o in r]) / base_cost), 4),
        "accuracy": round(float(np.mean([o.accuracy for o in r])), 4),
        "min_seed_accuracy": round(float(min(o.accuracy for o in r)), 4),
        "auto_accept_accuracy": round(float(auto_correct / sum(o.auto_share for o in r)), 4),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
