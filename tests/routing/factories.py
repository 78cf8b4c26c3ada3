"""Routing test data: a model version's score on an item."""

from __future__ import annotations

import numpy as np

from apps.jobs.models import Item
from apps.routing.models import ItemScore, ModelVersion


def score_item(item: Item, probs: list[float], *, audit: bool = False) -> None:
    """The job's model version 1 (made on first use) scores `item` with `probs`."""
    version, _ = ModelVersion.objects.get_or_create(
        job=item.job,
        number=1,
        defaults={
            "kind": "prediction",
            "temperature": 1.0,
            "target_accuracy": 0.95,
            "n_train": 0,
            "n_heldout": 0,
            "is_active": True,
        },
    )
    ItemScore.objects.create(
        item=item,
        job=item.job,
        model_version=version,
        probs=probs,
        confidence=max(probs),
        predicted=item.job.classes[int(np.argmax(probs))],
        audit=audit,
    )
