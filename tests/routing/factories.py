"""Routing test data: a running three-class job, and a model version's score on an item."""

from __future__ import annotations

import numpy as np

from apps.jobs.models import Item, Job
from apps.routing.models import ItemScore, ModelVersion
from tests.workforce.factories import ClientOrgFactory


def voter_job(*, policy: dict | None = None, **routing) -> Job:
    """A running cat / dog / bird job routed by model, target 0.95 (`policy` and `routing`
    on top)."""
    return Job.objects.create(
        organization=ClientOrgFactory(),
        name="voter",
        status=Job.Status.RUNNING,
        label_schema={"kind": "single_choice", "classes": ["cat", "dog", "bird"]},
        policy={
            "gold_rate": 0.0,
            "min_labels": 3,
            "max_labels": 5,
            "target_confidence": 0.95,
            **(policy or {}),
        },
        pricing={"crowd_label": 0.05, "expert_label": 0.5},
        routing={"mode": "model", **routing},
    )


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
