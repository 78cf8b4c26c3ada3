"""`manage.py simulate` on a job of each answer kind: simulated annotators answer through the
same services the API uses, from each item's truth, until every item is settled or waits for
review, and the settled results are mostly right."""

from __future__ import annotations

import io
import re

import pytest
from django.core.management import CommandError, call_command

from apps.assignments.selectors import invariant_violations
from apps.jobs.kinds import KIND_NAMES, answer_text, schema_kind_name
from apps.jobs.models import Item, Job
from tests.workforce.factories import JobFactory

SCHEMAS = {
    "multi_choice": {"kind": "multi_choice", "tags": ["indoor", "people", "animal"]},
    "ordinal": {"kind": "ordinal", "levels": ["bad", "fair", "good", "great"]},
    "numeric": {"kind": "numeric", "minimum": 0, "maximum": 100, "tolerance": 5},
    "bbox": {"kind": "bbox", "classes": ["car", "person"], "width": 640, "height": 480},
}
TRUTHS = {
    "multi_choice": [["indoor"], ["people", "animal"], ["indoor", "people"]],
    "ordinal": ["bad", "good", "great"],
    "numeric": [12.5, 50, 87],
    "bbox": [
        [{"box": [100, 100, 200, 100], "class": "car"}],
        [{"box": [300, 50, 60, 180], "class": "person"}],
        [
            {"box": [10, 300, 150, 90], "class": "car"},
            {"box": [400, 200, 70, 200], "class": "person"},
        ],
    ],
}


@pytest.mark.parametrize("kind", sorted(SCHEMAS))
@pytest.mark.django_db(transaction=True)
def test_simulate_labels_a_job_of_each_kind_to_the_end(kind):
    job = JobFactory(
        label_schema=SCHEMAS[kind], policy={"min_labels": 3, "max_labels": 5, "gold_rate": 0.1}
    )
    truths = TRUTHS[kind]
    Item.objects.bulk_create(
        [Item(job=job, external_id=f"t{i}", payload={"truth": truths[i % 3]}) for i in range(24)]
        + [
            Item(job=job, external_id=f"g{i}", payload={}, gold_label=answer_text(truths[i]))
            for i in range(3)
        ]
    )
    out = io.StringIO()

    call_command(
        "simulate", str(job.pk), "--workers", "8", "--seconds", "60", "--seed", "5", stdout=out
    )

    states = set(Item.objects.filter(gold_label__isnull=True).values_list("state", flat=True))
    assert states <= {"settled", "review"}
    assert f"done: job {job.pk} is " in out.getvalue()
    assert invariant_violations() == []
    # The last progress line: settled results right (a number within the tolerance, boxes
    # matched one for one) for most items, and the answers stored as the kind's JSON.
    accuracy = float(re.findall(r"settled accuracy ([0-9.]+)", out.getvalue())[-1])
    assert accuracy >= 0.7  # a random answerer: well under 0.3 on every kind
    label = Item.objects.filter(job=job, state="settled", gold_label__isnull=True)[0].label
    assert label.startswith(("[", '"')) or float(label) >= 0


@pytest.mark.parametrize("kind", KIND_NAMES)
@pytest.mark.django_db(transaction=True)
def test_simulate_kind_makes_a_job_of_that_kind_and_settles_its_items(kind):
    out = io.StringIO()

    call_command(
        "simulate", "--kind", kind, "--items", "20", "--workers", "8", "--seconds", "60",
        "--seed", "3", stdout=out,
    )  # fmt: skip

    job = Job.objects.get()
    assert schema_kind_name(job.label_schema) == kind
    assert job.organization.name == "Simulated Client"
    assert job.items.count() == 20
    assert job.items.filter(gold_label__isnull=False).count() == 2
    states = list(job.items.filter(gold_label__isnull=True).values_list("state", flat=True))
    assert set(states) <= {"settled", "review"}
    assert states.count("settled") >= len(states) // 2
    assert f"job {job.pk} ({kind}): 20 items, 2 of them gold" in out.getvalue()
    assert invariant_violations() == []


@pytest.mark.django_db
def test_simulate_refuses_a_kind_its_job_is_not_and_no_job_without_a_kind():
    job = JobFactory(label_schema=SCHEMAS["ordinal"])

    with pytest.raises(CommandError, match=f"Job {job.pk} is ordinal, not bbox"):
        call_command("simulate", str(job.pk), "--kind", "bbox", stdout=io.StringIO())
    with pytest.raises(CommandError, match="Name a running job, or a --kind"):
        call_command("simulate", stdout=io.StringIO())
    assert Job.objects.count() == 1
