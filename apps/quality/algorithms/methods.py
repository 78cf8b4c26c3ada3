"""The aggregation methods by name: the registry a job's policy `aggregation` chooses from.

Kept apart from the kernels so that `default` (which combines the kernels of `aggregation`
and `dependence`) is imported like any other method, with no import cycle.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .aggregation import (
    Aggregation,
    dawid_skene,
    glad,
    mace,
    majority_vote,
    one_coin_dawid_skene,
    weighted_majority_vote,
)
from .default import default_aggregation

Aggregator = Callable[..., Aggregation]


METHODS: dict[str, Aggregator] = {
    "mv": majority_vote,
    "wmv": weighted_majority_vote,
    "ds": dawid_skene,
    "onecoin": one_coin_dawid_skene,
    "glad": glad,
    "mace": mace,
    "default": default_aggregation,
}


def aggregate(
    tasks: np.ndarray,
    workers: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    *,
    method: str = "default",
    n_tasks: int | None = None,
    n_workers: int | None = None,
    **options: object,
) -> Aggregation:
    """Run the named method (see `METHODS`); "default" is Concord's recommended aggregator."""
    try:
        fn = METHODS[method]
    except KeyError:
        raise ValueError(f"unknown method {method!r}; choose from {sorted(METHODS)}") from None
    return fn(tasks, workers, labels, n_classes, n_tasks=n_tasks, n_workers=n_workers, **options)
