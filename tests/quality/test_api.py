"""The quality and agreement APIs."""

from __future__ import annotations

import pytest

from apps.quality.aggregation import (
    job_aggregate,
)
from tests.quality.factories import CLASSES, crowd_job, crowd_label

pytestmark = pytest.mark.django_db


def test_quality_and_agreement_apis(make_actor, client_actor, ops_actor):
    job, items, crowd = crowd_job(4, workers=3, policy={"min_labels": 3, "max_labels": 3})
    for worker in crowd:
        for _ in range(4):
            crowd_label(worker, "dog")
    job.organization = client_actor.user.memberships.get().organization
    job.save(update_fields=["organization"])
    job_aggregate(job_id=job.pk)

    agreement = client_actor.client.get(f"/api/v1/jobs/{job.pk}/agreement/?n_boot=100").json()
    quality = ops_actor.client.get(f"/api/v1/workers/{crowd[0].pk}/quality/").json()

    assert agreement["n_labels"] == 12
    assert agreement["mean_item_agreement"] == 1.0
    assert set(agreement["krippendorff_alpha"]["per_class"]) == set(CLASSES)
    assert quality["labels"] == 4
    assert quality["jobs"][0]["job"] == job.pk
    assert len(quality["jobs"][0]["confusion"]) == 3
    other = make_actor("client", org="Globex Client")
    assert other.client.get(f"/api/v1/jobs/{job.pk}/agreement/").status_code == 404
    annotator = make_actor("annotator")
    assert annotator.client.get(f"/api/v1/workers/{crowd[0].pk}/quality/").status_code == 404
