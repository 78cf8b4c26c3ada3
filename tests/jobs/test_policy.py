"""The typed job spec (apps.jobs.policy): one definition behind the API's validation, its
OpenAPI schema, the defaults a job runs with, and the migration of stored jobs."""

from __future__ import annotations

import dataclasses
import importlib

import pytest
from django.apps import apps as django_apps
from drf_spectacular.generators import SchemaGenerator

from apps.jobs.models import Job
from apps.jobs.policy import Policy, Pricing, Routing, normalized, spec_from_stored
from apps.jobs.specs import PolicySerializer, PricingSerializer, RoutingSerializer
from tests.jobs.test_api import job_spec
from tests.workforce.factories import JobFactory

PARTS = [(Policy, PolicySerializer), (Pricing, PricingSerializer), (Routing, RoutingSerializer)]


@pytest.mark.parametrize(("spec", "serializer"), PARTS, ids=["policy", "pricing", "routing"])
def test_every_knob_is_validated_and_documented_from_its_definition(spec, serializer):
    fields = serializer().fields

    assert set(fields) == {f.name for f in dataclasses.fields(spec)}
    for knob in dataclasses.fields(spec):
        assert fields[knob.name].help_text == knob.metadata["help"]
        low, high = knob.metadata["low"], knob.metadata["high"]
        if low is not None:
            assert fields[knob.name].min_value == low
        if high is not None:
            assert fields[knob.name].max_value == high


def test_the_openapi_schema_publishes_the_policy_with_its_bounds():
    schema = SchemaGenerator().get_schema(request=None, public=True)
    components = schema["components"]["schemas"]
    policy = components["Policy"]["properties"]

    assert set(policy) == {f.name for f in dataclasses.fields(Policy)}
    assert policy["min_labels"]["minimum"] == 1
    assert policy["min_labels"]["maximum"] == 100
    assert "posterior" in policy["target_confidence"]["description"].lower()


@pytest.mark.django_db
def test_a_job_reads_its_spec_with_the_defaults_filled_in():
    job = JobFactory(policy={"min_labels": 4}, pricing={"crowd_label": 0.2})

    assert job.spec.policy.min_labels == 4
    assert job.spec.policy.max_labels == Policy().max_labels
    assert job.spec.pricing.crowd_label == 0.2
    assert job.spec.routing == Routing()


@pytest.mark.django_db
def test_the_typed_spec_follows_a_change_of_the_stored_json():
    job = JobFactory(policy={"min_labels": 4})
    assert job.spec.policy.min_labels == 4

    job.policy = {"min_labels": 6}

    assert job.spec.policy.min_labels == 6


def test_the_api_shows_every_knob_of_the_effective_spec(client_actor):
    response = client_actor.client.post("/api/v1/jobs/", job_spec(), format="json")
    body = response.json()

    assert body["policy"] == dataclasses.asdict(
        Policy(min_labels=3, max_labels=5, target_confidence=0.9)
    )
    assert body["routing"] == dataclasses.asdict(Routing())
    # What a client read may be sent back as it is.
    again = client_actor.client.patch(
        f"/api/v1/jobs/{body['id']}/", {"policy": body["policy"]}, format="json"
    )
    assert again.status_code == 200, again.content


def test_stored_values_are_read_as_their_types():
    spec = spec_from_stored(
        policy={
            "min_labels": "4",
            "target_confidence": "0.9",
            "show_prelabel": "true",
            "max_items_per_worker": None,
            "max_labels": "many",
            "escalation": {"low_confidence": "qc"},
            "min_lables": 7,
        },
        pricing={"crowd_label": "0.1"},
        routing=None,
    )

    assert spec.policy.min_labels == 4
    assert spec.policy.target_confidence == 0.9
    assert spec.policy.show_prelabel is True
    assert spec.policy.max_labels == Policy().max_labels  # unreadable: the default
    assert spec.policy.route_for("low_posterior") == "qc"
    assert spec.policy.route_for("gold_dispute") == "qc"
    assert spec.policy.route_for("disagreement") == "auto"
    assert spec.pricing.crowd_label == 0.1


@pytest.mark.django_db
def test_the_migration_stores_every_job_spec_normalized_and_keeps_unknown_keys():
    job = JobFactory(
        policy={"min_labels": "2", "escalation": {"low_confidence": "expert"}, "min_lables": 7},
        routing={"epochs": 10.0},
    )
    migration = importlib.import_module("apps.jobs.migrations.0003_normalize_specs")

    migration.normalize(django_apps, None)

    job = Job.objects.get(pk=job.pk)
    assert job.policy == {
        "min_labels": 2,
        "escalation": {"low_posterior": "expert"},
        "min_lables": 7,
    }
    assert job.routing == {"epochs": 10}
    assert normalized(Policy, job.policy) == job.policy  # idempotent
