"""The client's pages: create a job from a form, upload items with per-row errors shown,
launch / pause / resume / cancel, download results; never a worker's identity."""

from __future__ import annotations

import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from apps.accounts.models import Organization
from apps.accounts.services import membership_ensure
from apps.jobs.kinds import KIND_NAMES
from apps.jobs.models import Job

pytestmark = pytest.mark.django_db

FORM = {
    "name": "Pets from the page",
    "instructions": "Which animal?",
    "classes": "cat\ndog, bird",
    "min_labels": "2",
    "max_labels": "3",
    "target_confidence": "0.9",
    "gold_rate": "0",
    "lease_seconds": "300",
    "crowd_label": "0.10",
    "expert_label": "1",
    "routing_mode": "off",
    "target_accuracy": "0.95",
}


def _page(actor) -> Client:
    client = Client()
    client.force_login(actor.user)
    return client


def test_a_client_creates_uploads_launches_pauses_resumes_and_downloads(client_actor):
    page = _page(client_actor)

    created = page.post("/dashboard/jobs/new/", FORM)
    job = Job.objects.get(name="Pets from the page")
    rows = (
        b'{"external_id": "p1", "payload": {"text": "meow", "_row": 1}}\n'
        b'{"external_id": "p2", "payload": {"text": "woof"}, "gold_label": "fish"}\n'
        b'{"external_id": "p3", "payload": {"text": "tweet"}}\n'
    )
    uploaded = page.post(
        f"/dashboard/jobs/{job.pk}/upload/",
        {"file": SimpleUploadedFile("pets.jsonl", rows, content_type="application/x-ndjson")},
    )
    launched = page.post(f"/dashboard/jobs/{job.pk}/lifecycle/", {"action": "launch"})
    paused = page.post(f"/dashboard/jobs/{job.pk}/lifecycle/", {"action": "pause"})
    resumed = page.post(f"/dashboard/jobs/{job.pk}/lifecycle/", {"action": "resume"})
    again = page.post(f"/dashboard/jobs/{job.pk}/lifecycle/", {"action": "resume"})
    shown = page.get(again.url)
    download = page.get(f"/api/v1/jobs/{job.pk}/results/?format=csv")

    assert created.url.startswith(f"/dashboard/jobs/{job.pk}/?done=")
    assert (job.classes, job.policy["min_labels"], job.status) == (
        ["cat", "dog", "bird"],
        2,
        "draft",
    )
    html = uploaded.content.decode()
    assert "2 created · 0 updated · 1 rejected" in html
    assert "<td>2</td><td>p2</td><td>gold_label: " in html  # the row, its id and the reason
    assert "Estimated cost: 0.40–0.60" in html  # 2 items x 2..3 labels x 0.10
    assert "done=The+job+is+running" in launched.url
    assert "done=The+job+is+paused" in paused.url
    assert "done=The+job+is+running" in resumed.url
    assert "Cannot resume a job that is running." in shown.content.decode()
    assert download.status_code == 200
    assert b"p1" in b"".join(download.streaming_content)


def test_the_job_form_says_what_is_wrong_in_words_and_keeps_the_input(client_actor):
    response = _page(client_actor).post(
        "/dashboard/jobs/new/", {**FORM, "classes": "cat", "gold_rate": "2"}
    )

    assert response.status_code == 400
    html = response.content.decode()
    assert "label_schema.classes:" in html
    assert "policy.gold_rate:" in html
    assert 'value="Pets from the page"' in html
    assert not Job.objects.exists()


def test_only_clients_create_jobs_from_the_page_and_qc_cannot_change_one(
    ops_actor, qc_actor, client_actor
):
    _page(client_actor).post("/dashboard/jobs/new/", FORM)
    job = Job.objects.get()

    assert _page(ops_actor).get("/dashboard/jobs/new/").status_code == 403
    qc_page = _page(qc_actor)
    assert (
        qc_page.post(f"/dashboard/jobs/{job.pk}/lifecycle/", {"action": "cancel"}).status_code
        == 403
    )
    job.refresh_from_db()
    assert job.status == "draft"


@pytest.mark.parametrize("kind", ["single_choice", "ordinal"])
def test_a_client_creates_only_in_its_own_organization(client_actor, other_client_actor, kind):
    other_org = Organization.objects.get(name=other_client_actor.org_name)
    # The form has no organization field: one posted anyway is not read.
    fields = {**FORM, "kind": kind, "levels": "low, high", "organization": other_org.pk}

    response = _page(client_actor).post("/dashboard/jobs/new/", fields)

    job = Job.objects.get()
    assert response.status_code == 302
    assert job.organization.name == client_actor.org_name
    assert _page(other_client_actor).get(f"/dashboard/jobs/{job.pk}/").status_code == 404


def test_a_client_of_two_organizations_is_sent_to_the_api(client_actor):
    membership_ensure(
        username=client_actor.user.username, org_name="Globex Client", org_kind="client",
        role="client",
    )  # fmt: skip

    response = _page(client_actor).post("/dashboard/jobs/new/", {**FORM, "kind": "ordinal"})

    assert response.status_code == 400
    assert "create the job by API" in response.content.decode()
    assert 'value="Pets from the page"' in response.content.decode()
    assert not Job.objects.exists()


KIND_FORMS = {
    "multi_choice": (
        {"tags": "indoor, outdoor\nnight", "min_tags": "1", "max_tags": ""},
        {"kind": "multi_choice", "tags": ["indoor", "outdoor", "night"], "min_tags": 1},
    ),
    "ordinal": (
        {"levels": "bad\nfair\ngood\ngreat"},
        {"kind": "ordinal", "levels": ["bad", "fair", "good", "great"]},
    ),
    "numeric": (
        {"minimum": "0", "maximum": "100", "tolerance": "5", "unit": "years", "level": ""},
        {"kind": "numeric", "minimum": 0.0, "maximum": 100.0, "tolerance": 5.0, "unit": "years"},
    ),
    "bbox": (
        {"classes": "car, person", "width": "640", "height": "480", "target_iou": "0.75"},
        {
            "kind": "bbox",
            "classes": ["car", "person"],
            "width": 640.0,
            "height": 480.0,
            "target_iou": 0.75,
        },
    ),
}


@pytest.mark.parametrize("kind", sorted(KIND_FORMS))
def test_the_job_form_makes_each_answer_kind_with_its_parameters(client_actor, kind):
    fields, schema = KIND_FORMS[kind]
    # Another kind's fields in the same post are not read.
    response = _page(client_actor).post(
        "/dashboard/jobs/new/", {**FORM, "kind": kind, "levels": "x", **fields}
    )

    job = Job.objects.get()
    assert response.status_code == 302
    assert job.label_schema == schema


def test_the_job_form_offers_every_kind_the_api_takes(client_actor):
    html = _page(client_actor).get("/dashboard/jobs/new/").content.decode()

    for name in KIND_NAMES:
        assert f'<option value="{name}"' in html


@pytest.mark.parametrize(
    ("fields", "error", "kept", "field"),
    [
        pytest.param(
            {"kind": "numeric", "minimum": "10", "maximum": "1", "tolerance": "2"},
            "label_schema.maximum: minimum must be below maximum",
            'value="10"',
            "maximum",
            id="numeric-range",
        ),
        pytest.param(
            {"kind": "numeric", "minimum": "0", "maximum": "ten", "tolerance": "2"},
            "label_schema.maximum: A valid number is required.",
            'value="ten"',
            "maximum",
            id="numeric-not-a-number",
        ),
        pytest.param(
            {"kind": "numeric", "minimum": "0", "maximum": "10"},
            "label_schema.tolerance: required for kind &#x27;numeric&#x27;",
            'value="10"',
            "tolerance",
            id="numeric-no-tolerance",
        ),
        pytest.param(
            {"kind": "ordinal", "levels": "only"},
            "label_schema.levels:",
            ">only</textarea>",
            "levels",
            id="ordinal-one-level",
        ),
        pytest.param(
            {"kind": "multi_choice", "tags": "a, b", "min_tags": "3"},
            "label_schema.min_tags: must be at most the number of tags",
            'value="3"',
            "min_tags",
            id="multi-choice-min-tags",
        ),
        pytest.param(
            {"kind": "bbox", "classes": "car", "width": "0", "height": "480"},
            "label_schema.width:",
            'value="480"',
            "width",
            id="bbox-width",
        ),
        pytest.param(
            {"kind": "essay"}, "label_schema.kind:", 'value="Pets from the page"', "kind", id="kind"
        ),
        pytest.param(
            {"min_labels": "0"}, "policy.min_labels:", 'value="0"', "min_labels", id="policy"
        ),
        pytest.param(
            {"kind": "multi_choice", "tags": "short, " + "long" * 60},
            "label_schema.tags.1: Ensure this field has no more than 200 characters.",
            "short, longlong",
            "tags",
            id="multi-choice-one-tag-too-long",
        ),
    ],
)
def test_a_bad_kind_parameter_is_named_as_the_api_names_it_and_the_input_kept(
    client_actor, fields, error, kept, field
):
    response = _page(client_actor).post("/dashboard/jobs/new/", {**FORM, **fields})

    assert response.status_code == 400
    html = response.content.decode()
    assert error in html
    assert kept in html
    # The same message again beside its field, which points to it.
    message = error.split(": ", 1)[1] if ": " in error else ""
    beside = re.search(rf'<p class="field-error" id="{field}-error">(.*?)</p>', html)
    assert beside is not None
    assert message in beside.group(1)
    assert f'id="{field}" name="{field}" aria-invalid="true" aria-describedby="{field}-error"' in (
        html
    )
    assert html.count('class="field-error"') == 1
    assert not Job.objects.exists()


def test_what_was_typed_for_another_kind_is_kept_when_the_post_is_refused(client_actor):
    # Tags typed, then the kind switched to numeric with a bad range: the tags come back too.
    response = _page(client_actor).post(
        "/dashboard/jobs/new/",
        {**FORM, "kind": "numeric", "tags": "indoor\npeople", "minimum": "5", "maximum": "1"},
    )

    html = response.content.decode()
    assert response.status_code == 400
    assert ">indoor\npeople</textarea>" in html
    assert '<option value="numeric" selected>' in html
    assert not Job.objects.exists()
