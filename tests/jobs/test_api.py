"""Client API for jobs and items: roles, tenants, upload, lifecycle, results."""

from __future__ import annotations

import csv
import io
import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from apps.jobs.models import Item, Job
from apps.quality.algorithms import aggregate

CLASSES = ["cat", "dog", "bird"]


def job_spec(**overrides) -> dict:
    spec = {
        "name": "Pets",
        "instructions": "Pick the animal.",
        "label_schema": {"kind": "single_choice", "classes": CLASSES},
        "policy": {"min_labels": 3, "max_labels": 5, "target_confidence": 0.9},
        "pricing": {"crowd_label": 0.04, "expert_label": 0.4},
    }
    spec.update(overrides)
    return spec


@pytest.fixture
def job(client_actor) -> Job:
    response = client_actor.client.post("/api/v1/jobs/", job_spec(), format="json")
    assert response.status_code == 201, response.content
    return Job.objects.get(pk=response.json()["id"])


def upload(actor, job_id: int, body: bytes | str, content_type: str):
    if isinstance(body, str):
        body = body.encode()
    return actor.client.generic(
        "POST", f"/api/v1/jobs/{job_id}/items/", body, content_type=content_type
    )


def rows_json(rows: list[dict]) -> bytes:
    return json.dumps(rows).encode()


def test_client_creates_draft_job_with_merged_policy(client_actor):
    response = client_actor.client.post("/api/v1/jobs/", job_spec(), format="json")

    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "draft"
    assert body["organization"] == "Acme Client"
    assert body["classes"] == CLASSES
    assert body["policy"]["min_labels"] == 3
    assert body["policy"]["gold_rate"] == 0.1  # a default filled in
    assert body["item_counts"] == {"open": 0, "expert": 0, "review": 0, "settled": 0}


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        pytest.param({"policy": {"min_labels": 4, "max_labels": 2}}, "policy", id="max-below-min"),
        pytest.param({"policy": {"gold_rate": 2}}, "policy", id="gold-rate-above-1"),
        pytest.param({"label_schema": {"classes": ["a", "a"]}}, "label_schema", id="dup-classes"),
        pytest.param({"label_schema": {"kind": "boxes"}}, "label_schema", id="unknown-kind"),
        pytest.param({"name": ""}, "name", id="empty-name"),
        pytest.param({"routing": {"mode": "magic"}}, "routing", id="bad-routing-mode"),
        pytest.param({"policy": {"gold_min_accuracy": 1.5}}, "policy", id="gold-accuracy-above-1"),
        pytest.param({"policy": {"reaggregate_every": -1}}, "policy", id="negative-reaggregate"),
        pytest.param(
            {"policy": {"escalation": {"disagreement": "oracle"}}}, "policy", id="bad-route"
        ),
        pytest.param({"policy": {"escalation": {"typo": "qc"}}}, "policy", id="bad-reason"),
        pytest.param({"policy": {"expert_weight": -1}}, "policy", id="negative-expert-weight"),
        pytest.param({"policy": {"aggregation": "one_coin"}}, "policy", id="unknown-method"),
    ],
)
def test_invalid_job_spec_is_a_400_naming_the_field(client_actor, overrides, field):
    response = client_actor.client.post("/api/v1/jobs/", job_spec(**overrides), format="json")

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert field in error["details"]
    assert Job.objects.count() == 0


def test_unauthenticated_request_gets_401_in_error_shape(db):
    response = APIClient().get("/api/v1/jobs/")

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


def test_bad_token_is_rejected(db):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token not-a-token")
    assert client.get("/api/v1/jobs/").status_code == 401


def _endpoints(job_id: int) -> list[tuple[str, str, object]]:
    return [
        ("get", f"/api/v1/jobs/{job_id}/", None),
        ("patch", f"/api/v1/jobs/{job_id}/", {"name": "x"}),
        ("get", f"/api/v1/jobs/{job_id}/items/", None),
        ("post", f"/api/v1/jobs/{job_id}/items/", [{"external_id": "z", "payload": {}}]),
        ("post", f"/api/v1/jobs/{job_id}/launch/", None),
        ("post", f"/api/v1/jobs/{job_id}/pause/", None),
        ("post", f"/api/v1/jobs/{job_id}/cancel/", None),
        ("get", f"/api/v1/jobs/{job_id}/results/", None),
    ]


def test_other_tenant_gets_404_on_every_job_endpoint(job, other_client_actor):
    for method, url, data in _endpoints(job.pk):
        response = getattr(other_client_actor.client, method)(url, data, format="json")
        assert response.status_code == 404, (method, url, response.content)
        assert response.json()["error"]["code"] == "not_found"
    assert other_client_actor.client.get("/api/v1/jobs/").json()["count"] == 0
    job.refresh_from_db()
    assert job.name == "Pets"
    assert job.status == "draft"
    assert job.items.count() == 0


@pytest.mark.parametrize("role", ["annotator", "expert"])
def test_annotators_cannot_use_client_endpoints(job, make_actor, role):
    actor = make_actor(role)
    assert actor.client.get("/api/v1/jobs/").status_code == 403
    assert actor.client.post("/api/v1/jobs/", job_spec(), format="json").status_code == 403
    for method, url, data in _endpoints(job.pk):
        response = getattr(actor.client, method)(url, data, format="json")
        assert response.status_code == 403, (method, url)
        assert response.json()["error"]["code"] == "permission_denied"


def test_qc_reads_every_job_but_cannot_change_them(job, qc_actor):
    assert qc_actor.client.get(f"/api/v1/jobs/{job.pk}/").status_code == 200
    assert qc_actor.client.get(f"/api/v1/jobs/{job.pk}/results/").status_code == 200
    assert qc_actor.client.patch(f"/api/v1/jobs/{job.pk}/", {"name": "x"}).status_code == 403
    assert qc_actor.client.post(f"/api/v1/jobs/{job.pk}/cancel/").status_code == 403


def test_ops_see_all_jobs_and_create_for_a_named_client(job, ops_actor, other_client_actor):
    other = other_client_actor.client.post("/api/v1/jobs/", job_spec(name="B"), format="json")
    assert other.status_code == 201

    listing = ops_actor.client.get("/api/v1/jobs/").json()
    assert {row["id"] for row in listing["results"]} == {job.pk, other.json()["id"]}

    missing = ops_actor.client.post("/api/v1/jobs/", job_spec(), format="json")
    assert missing.status_code == 400
    assert "organization" in missing.json()["error"]["details"]
    made = ops_actor.client.post(
        "/api/v1/jobs/", job_spec(organization="Globex Client"), format="json"
    )
    assert made.status_code == 201
    assert made.json()["organization"] == "Globex Client"


def test_job_list_filters_by_status_and_bounds_queries(client_actor, django_assert_max_num_queries):
    for i in range(12):
        client_actor.client.post("/api/v1/jobs/", job_spec(name=f"J{i}"), format="json")
    Job.objects.filter(name__in=["J1", "J2"]).update(status="paused")

    with django_assert_max_num_queries(6):
        response = client_actor.client.get("/api/v1/jobs/?status=paused")

    assert response.status_code == 200
    assert sorted(row["name"] for row in response.json()["results"]) == ["J1", "J2"]


GOOD_AND_BAD = [
    {"external_id": "a1", "payload": {"text": "meow"}, "features": [0.1, 0.2, 0.3]},
    {"external_id": "a2", "payload": {"text": "woof"}, "gold_label": "dog", "features": [1, 2, 3]},
    {"external_id": "a3", "payload": {"text": "?"}, "gold_label": "fish"},
    {"external_id": "a4", "payload": {"text": "?"}, "features": [1, 2]},
    {"external_id": "a5", "payload": {"text": "?"}, "prediction": [0.5, 0.6, 0.1]},
    {"external_id": "a1", "payload": {"text": "again"}},
    {"payload": {"text": "no id"}},
    {"external_id": "a8"},
    {"external_id": "a9", "payload": {"t": 1}, "prediction": {"cat": 0.2, "dog": 0.8}},
    {"external_id": "a10", "payload": {"t": 1}, "prediction": [0.2, 0.3, 1.5]},
    {"external_id": "a11", "payload": {"t": 1}, "features": [1, "x", 3]},
]
EXPECTED_ERRORS = {
    3: ("a3", "gold_label"),
    4: ("a4", "features"),
    5: ("a5", "prediction"),
    6: ("a1", "external_id"),
    7: (None, "external_id"),
    8: ("a8", "payload"),
    10: ("a10", "prediction"),
    11: ("a11", "features"),
}


def assert_good_and_bad_report(response, job: Job) -> None:
    assert response.status_code == 201, response.content
    report = response.json()
    assert (report["created"], report["updated"], report["rejected"]) == (3, 0, 8)
    got = {e["row"]: (e.get("external_id"), set(e["errors"])) for e in report["errors"]}
    assert got == {row: (eid, {field}) for row, (eid, field) in EXPECTED_ERRORS.items()}
    assert set(job.items.values_list("external_id", flat=True)) == {"a1", "a2", "a9"}
    a2 = job.items.get(external_id="a2")
    assert a2.gold_label == "dog"
    assert a2.state == "open"
    assert a2.labels_needed == 3
    job.refresh_from_db()
    assert job.feature_dim == 3
    assert job.items.get(external_id="a9").prediction == [0.2, 0.8, 0.0]


def test_upload_json_list_keeps_good_rows_and_names_every_bad_row(client_actor, job):
    response = upload(client_actor, job.pk, rows_json(GOOD_AND_BAD), "application/json")
    assert_good_and_bad_report(response, job)
    assert "duplicate" in response.json()["errors"][3]["errors"]["external_id"]


def test_upload_jsonl_keeps_good_rows_and_names_every_bad_row(client_actor, job):
    body = "\n".join(json.dumps(row) for row in GOOD_AND_BAD) + "\n"
    response = upload(client_actor, job.pk, body, "application/x-ndjson")
    assert_good_and_bad_report(response, job)


def test_upload_jsonl_reports_unparseable_line_and_keeps_others(client_actor, job):
    body = '{"external_id": "x1", "payload": {}}\n{"external_id": \n{"external_id": "x3", "payload": {}}\n'
    report = upload(client_actor, job.pk, body, "application/x-ndjson").json()
    assert (report["created"], report["rejected"]) == (2, 1)
    assert report["errors"][0]["row"] == 2
    assert "not valid JSON" in report["errors"][0]["errors"]["row"]


def test_upload_csv_keeps_good_rows_and_names_every_bad_row(client_actor, job):
    buffer = io.StringIO()
    writer = csv.DictWriter(
        buffer, fieldnames=["external_id", "payload", "features", "prediction", "gold_label"]
    )
    writer.writeheader()
    for row in GOOD_AND_BAD:
        cells = {
            k: json.dumps(v) if k != "external_id" and k != "gold_label" else v
            for k, v in row.items()
        }
        writer.writerow(cells)
    response = upload(client_actor, job.pk, buffer.getvalue(), "text/csv")
    assert_good_and_bad_report(response, job)


def test_csv_extra_columns_become_the_payload(client_actor, job):
    body = "external_id,text,url,gold_label\nc1,hello,http://x/1.png,\nc2,bye,http://x/2.png,cat\n"
    report = upload(client_actor, job.pk, body, "text/csv").json()
    assert (report["created"], report["rejected"]) == (2, 0)
    assert job.items.get(external_id="c1").payload == {"text": "hello", "url": "http://x/1.png"}
    assert job.items.get(external_id="c2").gold_label == "cat"


def test_reupload_is_idempotent_on_external_id(client_actor, job):
    rows = [{"external_id": f"r{i}", "payload": {"i": i}} for i in range(5)]
    first = upload(client_actor, job.pk, rows_json(rows), "application/json")
    rows[0]["payload"] = {"i": 100}
    second = upload(client_actor, job.pk, rows_json(rows), "application/json")

    assert first.status_code == 201
    assert second.status_code == 200
    assert (second.json()["created"], second.json()["updated"]) == (0, 5)
    assert job.items.count() == 5
    assert job.items.get(external_id="r0").payload == {"i": 100}


def test_broken_json_body_is_a_400_and_stores_nothing(client_actor, job):
    good = rows_json([{"external_id": "ok", "payload": {}}])
    upload(client_actor, job.pk, good, "application/json")

    response = upload(
        client_actor, job.pk, b'[{"external_id": "n1", "payload": {}}, {"ext', "application/json"
    )

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "parse_error"
    assert list(job.items.values_list("external_id", flat=True)) == ["ok"]


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        pytest.param(b"<xml/>", "application/xml", id="xml"),
        pytest.param(b"", "", id="no-content-type"),
        pytest.param(b'{"external_id": "a"}', "application/json", id="object-not-list"),
        pytest.param(b"id,text\n1,a\n", "text/csv", id="csv-without-external-id"),
    ],
)
def test_unreadable_uploads_are_400(client_actor, job, body, content_type):
    response = upload(client_actor, job.pk, body, content_type)
    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] in {"parse_error", "invalid"}
    assert job.items.count() == 0


def test_multipart_file_upload(client_actor, job):
    file = SimpleUploadedFile("items.jsonl", b'{"external_id": "m1", "payload": {}}\n')
    response = client_actor.client.post(
        f"/api/v1/jobs/{job.pk}/items/", {"file": file}, format="multipart"
    )
    assert response.status_code == 201
    assert response.json()["created"] == 1


def test_job_lifecycle_rules(client_actor, job):
    c = client_actor.client
    url = f"/api/v1/jobs/{job.pk}"
    assert (
        c.post(f"{url}/launch/").json()["error"]["message"].startswith("A job needs at least one")
    )
    upload(
        client_actor, job.pk, rows_json([{"external_id": "i1", "payload": {}}]), "application/json"
    )
    assert c.post(f"{url}/pause/").status_code == 409
    assert c.post(f"{url}/resume/").status_code == 409  # a draft is launched, not resumed
    assert c.post(f"{url}/launch/").json()["status"] == "running"
    assert c.post(f"{url}/resume/").json()["error"]["message"] == (
        "Cannot resume a job that is running."
    )
    assert c.post(f"{url}/launch/").status_code == 409
    assert (
        c.patch(f"{url}/", {"label_schema": {"classes": ["x", "y"]}}, format="json").status_code
        == 409
    )
    assert c.post(f"{url}/pause/").json()["status"] == "paused"
    assert c.post(f"{url}/resume/").json()["status"] == "running"
    assert c.post(f"{url}/pause/").json()["status"] == "paused"
    assert c.post(f"{url}/launch/").json()["status"] == "running"
    assert c.post(f"{url}/cancel/").json()["status"] == "cancelled"
    assert c.post(f"{url}/cancel/").status_code == 409
    assert c.post(f"{url}/launch/").status_code == 409

    response = upload(
        client_actor, job.pk, rows_json([{"external_id": "i2", "payload": {}}]), "application/json"
    )

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "invalid_state"
    assert job.items.count() == 1


@pytest.mark.parametrize(
    "label_schema",
    [
        {"kind": "single_choice", "classes": []},
        {"kind": "single_choice", "classes": ["only"]},
        {"kind": "single_choice", "classes": ["a", "a"]},
        {"kind": "single_choice"},
    ],
    ids=["empty", "one", "duplicate", "missing"],
)
def test_job_creation_needs_two_distinct_classes(client_actor, label_schema):
    spec = job_spec(label_schema=label_schema)

    response = client_actor.client.post("/api/v1/jobs/", spec, format="json")

    assert response.status_code == 400, response.content
    assert "classes" in response.json()["error"]["details"]["label_schema"]
    assert not Job.objects.exists()


def test_no_launch_without_classes(client_actor):
    # Jobs made before the API required classes (or through the admin) may still lack them.
    org = client_actor.user.memberships.first().organization
    job_id = Job.objects.create(organization=org, name="old", label_schema={"classes": []}).pk
    upload(
        client_actor, job_id, rows_json([{"external_id": "i1", "payload": {}}]), "application/json"
    )

    response = client_actor.client.post(f"/api/v1/jobs/{job_id}/launch/")

    assert response.status_code == 400
    assert "label_schema" in response.json()["error"]["details"]
    assert Job.objects.get(pk=job_id).status == "draft"


def test_launch_applies_current_min_labels(client_actor, job):
    upload(
        client_actor, job.pk, rows_json([{"external_id": "i1", "payload": {}}]), "application/json"
    )
    client_actor.client.patch(
        f"/api/v1/jobs/{job.pk}/", {"policy": {"min_labels": 2, "max_labels": 4}}, format="json"
    )
    client_actor.client.post(f"/api/v1/jobs/{job.pk}/launch/")
    assert job.items.get().labels_needed == 2
    assert Job.objects.get(pk=job.pk).spec.policy.target_confidence == 0.9


def _settle(job: Job) -> None:
    Item.objects.filter(job=job, external_id="s1").update(
        state="settled",
        label="dog",
        confidence=0.97,
        agreement=1.0,
        n_labels=3,
        source="crowd",
        posterior=[0.01, 0.97, 0.02],
        result_meta={"method": "test"},
    )


@pytest.mark.parametrize("fmt", ["json", "jsonl", "csv"])
def test_results_in_every_format(client_actor, job, fmt):
    rows = [
        {"external_id": "s1", "payload": {}},
        {"external_id": "s2", "payload": {}, "gold_label": "cat"},
    ]
    upload(client_actor, job.pk, rows_json(rows), "application/json")
    _settle(job)

    response = client_actor.client.get(f"/api/v1/jobs/{job.pk}/results/?format={fmt}")

    assert response.status_code == 200
    assert response.streaming
    text = b"".join(response.streaming_content).decode()
    if fmt == "json":
        records = json.loads(text)
    elif fmt == "jsonl":
        records = [json.loads(line) for line in text.splitlines()]
    else:
        records = list(csv.DictReader(io.StringIO(text)))
    by_id = {r["external_id"]: r for r in records}
    assert set(by_id) == {"s1", "s2"}
    s1 = by_id["s1"]
    assert s1["label"] == "dog"
    assert float(s1["confidence"]) == 0.97
    assert str(s1["n_labels"]) == "3"
    assert s1["source"] == "crowd"
    assert s1["status"] == "settled"
    assert by_id["s2"]["status"] == "open"
    assert by_id["s2"]["label"] in (None, "")
    if fmt == "csv":  # the provenance the JSON formats carry in result_meta
        assert json.loads(s1["provenance"]) == {"method": "test"}


def test_results_unknown_format_is_400(client_actor, job):
    response = client_actor.client.get(f"/api/v1/jobs/{job.pk}/results/?format=xml")
    assert response.status_code == 400


def test_items_list_is_paged_and_filtered(client_actor, job, django_assert_max_num_queries):
    rows = [{"external_id": f"p{i}", "payload": {"i": i}} for i in range(30)]
    rows[0]["gold_label"] = "cat"
    upload(client_actor, job.pk, rows_json(rows), "application/json")

    with django_assert_max_num_queries(6):
        response = client_actor.client.get(
            f"/api/v1/jobs/{job.pk}/items/?page_size=10&is_gold=true"
        )

    body = response.json()
    assert body["count"] == 1
    assert body["results"][0]["external_id"] == "p0"
    assert (
        client_actor.client.get(f"/api/v1/jobs/{job.pk}/items/?page_size=10").json()["count"] == 30
    )


def test_unknown_job_is_404_in_error_shape(client_actor):
    response = client_actor.client.get("/api/v1/jobs/999999/")
    assert response.status_code == 404
    assert set(response.json()["error"]) == {"code", "message", "details"}


@pytest.mark.parametrize("method", ["default", "mv", "wmv", "ds", "onecoin", "glad", "mace"])
def test_every_aggregation_method_a_policy_may_name_runs(client_actor, method):
    response = client_actor.client.post(
        "/api/v1/jobs/", job_spec(policy={"aggregation": method}), format="json"
    )
    assert response.status_code == 201, response.content
    assert response.json()["policy"]["aggregation"] == method
    result = aggregate([0, 0, 1], [0, 1, 0], [1, 1, 2], 3, method=method)
    assert result.posteriors.shape == (2, 3)


@pytest.mark.parametrize(
    ("part", "body", "key", "hint"),
    [
        ("policy", {"min_lables": 3}, "min_lables", "min_labels"),
        ("pricing", {"crowd_lable": 0.1}, "crowd_lable", "crowd_label"),
        ("routing", {"target_acuracy": 0.9}, "target_acuracy", "target_accuracy"),
        ("policy", {"zzz": 1}, "zzz", None),
    ],
    ids=["policy-typo", "pricing-typo", "routing-typo", "policy-unknown"],
)
def test_an_unknown_spec_key_is_a_400_naming_the_nearest(client_actor, part, body, key, hint):
    """F10: a typo like `min_lables` was stored silently and did nothing."""
    spec = {
        "name": "typo",
        "label_schema": {"kind": "single_choice", "classes": ["a", "b"]},
        part: body,
    }

    response = client_actor.client.post("/api/v1/jobs/", spec, format="json")

    assert response.status_code == 400
    (message,) = response.json()["error"]["details"][part][key]
    assert message.startswith(f"Unknown key {key!r}.")
    assert (f"Did you mean {hint!r}?" in message) if hint else ("Did you mean" not in message)


def test_a_key_stored_before_keys_were_checked_may_be_sent_back_unchanged(client_actor):
    created = client_actor.client.post(
        "/api/v1/jobs/",
        {"name": "old", "label_schema": {"kind": "single_choice", "classes": ["a", "b"]}},
        format="json",
    ).json()
    job = Job.objects.get(pk=created["id"])
    Job.objects.filter(pk=job.pk).update(policy={**job.policy, "legacy_knob": 7})
    url = f"/api/v1/jobs/{job.pk}/"

    same = client_actor.client.patch(url, {"policy": {"legacy_knob": 7, "min_labels": 2}})
    changed = client_actor.client.patch(url, {"policy": {"legacy_knob": 8}})

    assert same.status_code == 200
    assert same.json()["policy"]["min_labels"] == 2
    assert changed.status_code == 400
    assert "legacy_knob" in changed.json()["error"]["details"]["policy"]
