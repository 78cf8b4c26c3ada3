"""How the routing model's errors go with the crowd's: the model's confusion and joint errors,
measured against items people settled alone, by band of model confidence.

The model votes on routed items as one more voter (apps.routing.policy.model_vote); a voter
whose errors are independent of the crowd's given the true class is worth its calibrated
probabilities, one whose errors go with the crowd's is worth less (agreement on a wrong class
is no evidence). This module measures that dependence; the vote weight
(apps.routing.policy.vote_weight) acts on it.

On items people settled alone (seed set, audits: the model did not vote), with settled
posterior q, the model's label m and the first crowd answer's likelihood L(class):

- the model's confusion C[y, m] = sum of q[y] over items the model labelled m (soft counts,
  rows normalized), as in Dawid & Skene's M-step with the settled posterior as the E-step;
- per band, the model's error e_m = mean sum_{y != m} q[y]; the first answer's error e_c =
  mean sum_y q[y] [a != y], where a = argmax L is the class the answer favours;
- together = mean sum_{y != m} q[y] [a == m]: the model is wrong and the crowd's first answer
  says the same wrong class;
- lift = together / (e_m e_c / (K - 1)): 1 when the crowd's errors fall on the model's wrong
  label no more often than on any wrong class (independence with uniform errors), above 1
  when they err together.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Bands of calibrated model confidence, by design: the thresholds a job can take and where the
# vote decides sit in the upper ones; the lower bands are where model and crowd err together.
BAND_EDGES = (0.5, 0.8, 0.9, 0.95, 0.99)


@dataclass(frozen=True)
class Dependence:
    """The model's confusion (K x K) and, per band of confidence (`edges` between them), the
    count, the model's error, the first answer's error, their joint error on the model's
    label and its lift over independence (None where there is no error to compare)."""

    confusion: np.ndarray
    edges: tuple[float, ...]
    n: tuple[int, ...]
    model_error: tuple[float, ...]
    crowd_error: tuple[float, ...]
    together: tuple[float, ...]
    lift: tuple[float | None, ...]

    def as_card(self) -> dict:
        """A JSON-ready summary for a model card or a round's log."""
        labels = []
        lows = (0.0, *self.edges)
        highs = (*self.edges, 1.0)
        for lo, hi in zip(lows, highs, strict=True):
            labels.append(f"[{lo:g}, {hi:g})" if hi < 1.0 else f"[{lo:g}, 1]")
        bands = {
            label: {
                "n": n,
                "model_error": round(me, 4),
                "crowd_error": round(ce, 4),
                "together": round(tg, 4),
                "lift": None if lf is None else round(lf, 3),
            }
            for label, n, me, ce, tg, lf in zip(
                labels,
                self.n,
                self.model_error,
                self.crowd_error,
                self.together,
                self.lift,
                strict=True,
            )
            if n
        }
        return {
            "model_confusion": np.round(self.confusion, 4).tolist(),
            "by_confidence": bands,
        }


def model_crowd_dependence(
    probs: np.ndarray,
    targets: np.ndarray,
    first_likelihood: np.ndarray,
    *,
    edges: tuple[float, ...] = BAND_EDGES,
    prior: float = 1.0,
) -> Dependence:
    """The model's confusion and its joint errors with the crowd's first answer, by band.

    `probs` (n, K): the model's calibrated out-of-fold probabilities; `targets` (n, K): the
    posteriors people settled the items at; `first_likelihood` (n, K): P(first answer | class)
    under its worker's matrix (a row of equal values: no answer, left out of the crowd
    figures). `prior` pseudo-counts spread over each confusion row keep a class the model
    never met from a division by zero.
    """
    p = np.asarray(probs, dtype=np.float64)
    q = np.asarray(targets, dtype=np.float64)
    lik = np.asarray(first_likelihood, dtype=np.float64)
    n, k = q.shape
    m = p.argmax(axis=1) if n else np.zeros(0, int)
    counts = np.full((k, k), prior / k)
    np.add.at(counts.T, m, q)
    confusion = counts / counts.sum(axis=1, keepdims=True)

    rows = np.arange(n)
    wrong_model = 1.0 - q[rows, m]
    answered = (lik.max(axis=1) - lik.min(axis=1)) > 1e-12 if n else np.zeros(0, bool)
    a = lik.argmax(axis=1) if n else np.zeros(0, int)
    wrong_crowd = 1.0 - q[rows, a]
    together = np.where(a == m, wrong_model, 0.0)
    band = np.searchsorted(np.asarray(edges), p.max(axis=1), side="right") if n else m
    sizes, me, ce, tg, lift = [], [], [], [], []
    for b in range(len(edges) + 1):
        sel = band == b
        both = sel & answered
        sizes.append(int(sel.sum()))
        e_m = float(wrong_model[sel].mean()) if sel.any() else 0.0
        e_c = float(wrong_crowd[both].mean()) if both.any() else 0.0
        t = float(together[both].mean()) if both.any() else 0.0
        me.append(e_m)
        ce.append(e_c)
        tg.append(t)
        expected = e_m * e_c / max(k - 1, 1)
        lift.append(t / expected if expected > 1e-9 else None)
    return Dependence(
        confusion=confusion,
        edges=tuple(edges),
        n=tuple(sizes),
        model_error=tuple(me),
        crowd_error=tuple(ce),
        together=tuple(tg),
        lift=tuple(lift),
    )
