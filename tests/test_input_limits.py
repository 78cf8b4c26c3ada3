"""Bad input anywhere in the API: a 4xx in the JSON error shape naming what was wrong,
never a 500 or an HTML page, and nothing already stored is lost (issue F7, findings 6-8)."""

from __future__ import annotations

import json

import pytest

from apps.jobs.ingest import MAX_PAYLOAD_BYTES
from apps.jobs.models import Job

CLASSES = ["cat", "dog"]


def job_spec(**overrides) -> dict:
    spec = {
        "name": "Pets",
        "label_schema": {"kind": "single_choice", "classes": CLASSES},
        "policy": {"min_labels": 1, "max_labels": 3},
        "pricing": {"crowd_label": 0.05, "expert_label": 0.5},
    }
    spec.update(overrides)
    return spec


@pytest.fixture
def job(client_actor) -> Job:
    response = client_actor.client.post("/api/v1/jobs/", job_spec(), format="json")
    assert response.status_code == 201, response.content
    return Job.objects.get(pk=response.json()["id"])


def post_raw(actor, url: str, body: bytes | str, content_type: str = "application/json"):
    if isinstance(body, str):
        body = body.encode()
    return actor.client.generic("POST", url, body, content_type=content_type)


def error_of(response, status: int) -> dict:
    assert response.status_code == status, response.content[:500]
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    error = response.json()["error"]
    assert set(error) == {"code", "message", "details"}
    return error


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


# ----------------------------------------------------------------- JSON bodies (finding 6)


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ('{"policy": {"gold_rate": NaN}}', "body"),
        ('{"policy": {"gold_rate": 1e400}}', "body"),
        ('{"name": "x", "policy": {"deep": ' + nested(10_000) + "}}", "body"),
        ('{"name": "x", "policy": {"deep": ' + nested(40) + "}}", "policy.deep"),
        ('{"name": "x", "policy": {"note": "a\\u0000b"}}', "policy.note"),
        ('{"name": "x", "policy": {"a\\u0000": 1}}', "policy"),
        ('{"name": "x", "policy": {"big": 99999999999999999999}}', None),
    ],
    ids=["nan", "overflow", "depth-10000", "depth-40", "nul-value", "nul-key", "huge-int"],
)
def test_a_json_body_beyond_the_limits_is_a_400_naming_where(client_actor, body, where):
    response = post_raw(client_actor, "/api/v1/jobs/", body)

    error = error_of(response, 400)
    if where is not None:
        assert any(key.startswith(where) for key in error["details"]), error
    assert not Job.objects.exists()


@pytest.mark.parametrize(
    ("section", "values"),
    [
        ("policy", {"gold_rate": "NaN"}),
        ("policy", {"target_confidence": "Infinity"}),
        ("pricing", {"crowd_label": "NaN"}),
        ("pricing", {"crowd_label": 1e308}),
        ("pricing", {"expert_label": 10_001}),
        ("pricing", {"crowd_label": 0.00001}),
        ("policy", {"max_items_per_worker": 10**18}),
        ("policy", {"gold_max_exposures": 10**18}),
        ("policy", {"expert_timeout_seconds": 10**18}),
        ("routing", {"class_targets": {"cat": "NaN"}}),
        ("routing", {"min_labels": "many"}),
    ],
    ids=lambda v: json.dumps(v) if isinstance(v, dict) else v,
)
def test_job_spec_numbers_must_be_finite_and_within_bounds(client_actor, job, section, values):
    created = client_actor.client.post(
        "/api/v1/jobs/", job_spec(**{section: values}), format="json"
    )
    patched = client_actor.client.patch(f"/api/v1/jobs/{job.pk}/", {section: values}, format="json")

    for response in (created, patched):
        details = error_of(response, 400)["details"]
        assert set(details[section]) == set(values), details
    assert Job.objects.count() == 1
    job.refresh_from_db()
    assert job.pricing == {"crowd_label": 0.05, "expert_label": 0.5}


@pytest.mark.parametrize(
    ("method", "url", "actor_name", "body", "field"),
    [
        (
            "post",
            "/api/v1/jobs/",
            "client_actor",
            job_spec(instructions="x" * 20_001),
            "instructions",
        ),
        (
            "patch",
            "/api/v1/jobs/{job}/",
            "client_actor",
            {"instructions": "x" * 20_001},
            "instructions",
        ),
        (
            "post",
            "/api/v1/pools/",
            "ops_actor",
            {"name": "p", "description": "x" * 2001},
            "description",
        ),
        (
            "post",
            "/api/v1/workers/",
            "ops_actor",
            {"username": "u", "skills": ["s"] * 101},
            "skills",
        ),
    ],
    ids=["job-instructions", "patch-instructions", "pool-description", "worker-skills"],
)
def test_text_and_list_fields_have_a_size_limit(request, job, method, url, actor_name, body, field):
    actor = request.getfixturevalue(actor_name)

    response = getattr(actor.client, method)(url.format(job=job.pk), body, format="json")

    assert set(error_of(response, 400)["details"]) == {field}


def test_a_price_with_four_decimals_is_kept(client_actor):
    response = client_actor.client.post(
        "/api/v1/jobs/", job_spec(pricing={"crowd_label": "0.0425"}), format="json"
    )

    assert response.status_code == 201, response.content
    assert response.json()["pricing"]["crowd_label"] == 0.0425


def test_a_body_over_the_size_limit_is_a_413(client_actor, settings):
    settings.API_MAX_BODY_BYTES = 1000
    body = json.dumps(job_spec(instructions="x" * 2000))

    error = error_of(post_raw(client_actor, "/api/v1/jobs/", body), 413)

    assert error["code"] == "payload_too_large"
    assert not Job.objects.exists()


def test_a_label_over_the_size_limit_is_a_413(make_actor, settings):
    settings.API_MAX_BODY_BYTES = 1000
    annotator = make_actor("annotator")
    body = json.dumps({"label": "cat", "note": "x" * 2000})

    response = post_raw(annotator, "/api/v1/assignments/1/submit/", body)

    assert error_of(response, 413)["code"] == "payload_too_large"


# ------------------------------------------------------------------ URLs (findings 6, 7)


@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/nothing-here/",
        "/api/v1/jobs/abc/",
        "/api/v1/jobs/1.5/items/",
        "/api/v1/jobs/99999999999999999999/",
        "/api/v1/assignments/9223372036854775808/submit/",
        "/api/v1/workers/-1/",
    ],
)
def test_unknown_paths_and_bad_ids_are_json_404s(client_actor, url):
    error = error_of(client_actor.client.get(url), 404)
    assert error["code"] == "not_found"
    error = error_of(client_actor.client.post(url), 404)


def test_an_assignment_id_beyond_bigint_is_a_404_for_the_annotator(make_actor):
    annotator = make_actor("annotator")

    response = annotator.client.post(
        "/api/v1/assignments/99999999999999999999/submit/", {"label": "cat"}, format="json"
    )

    assert error_of(response, 404)["code"] == "not_found"


def test_a_method_not_allowed_is_a_json_405(client_actor, job):
    error = error_of(client_actor.client.delete(f"/api/v1/jobs/{job.pk}/"), 405)
    assert error["code"] == "method_not_allowed"


@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/jobs/?name=a%00b",
        "/api/v1/jobs/{job}/items/?external_id=%00",
        "/api/v1/jobs/{job}/items/a%00b/similar/",
        "/api/v1/jobs/{job}/items/a%00b/dispute/",
    ],
)
def test_a_nul_byte_in_the_url_is_a_400(client_actor, job, url):
    response = client_actor.client.get(url.format(job=job.pk))

    error = error_of(response, 400)
    assert error["details"] in ({"query": "nul"}, {"path": "nul"})


def test_pages_outside_the_api_keep_html_404s(client):
    response = client.get("/no-such-page/")

    assert response.status_code == 404
    assert not response["Content-Type"].startswith("application/json")


# ----------------------------------------------------------------- query values (finding 7)


@pytest.mark.parametrize(
    ("actor_name", "url", "param"),
    [
        ("client_actor", "/api/v1/jobs/?page=abc", "page"),
        ("client_actor", "/api/v1/jobs/?page=0", "page"),
        ("client_actor", "/api/v1/jobs/?page_size=lots", "page_size"),
        ("client_actor", "/api/v1/jobs/?status=bogus", "status"),
        ("client_actor", "/api/v1/jobs/?format=xml", "format"),
        ("client_actor", "/api/v1/jobs/{job}/items/?status=bogus", "status"),
        ("client_actor", "/api/v1/jobs/{job}/items/?is_gold=maybe", "is_gold"),
        ("client_actor", "/api/v1/jobs/{job}/items/?format=xml", "format"),
        ("client_actor", "/api/v1/jobs/{job}/results/?format=xml", "format"),
        ("client_actor", "/api/v1/jobs/{job}/results/?status=bogus", "status"),
        ("client_actor", "/api/v1/jobs/{job}/agreement/?n_boot=abc", "n_boot"),
        ("client_actor", "/api/v1/jobs/{job}/gold/?retired=maybe", "retired"),
        ("ops_actor", "/api/v1/workers/?status=bogus", "status"),
        ("ops_actor", "/api/v1/workers/?page=abc", "page"),
        ("ops_actor", "/api/v1/pools/?format=xml", "format"),
        ("qc_actor", "/api/v1/reviews/?status=bogus", "status"),
        ("qc_actor", "/api/v1/reviews/?claimed=maybe", "claimed"),
    ],
)
def test_an_unknown_query_value_is_a_400_naming_the_parameter(request, job, actor_name, url, param):
    actor = request.getfixturevalue(actor_name)

    response = actor.client.get(url.format(job=job.pk))

    assert param in error_of(response, 400)["details"]


# --------------------------------------------------------------- request shapes (finding 7)


def test_patch_of_read_only_job_fields_is_refused(client_actor, job):
    response = client_actor.client.patch(
        f"/api/v1/jobs/{job.pk}/",
        {"name": "renamed", "status": "running", "organization": "Globex Client"},
        format="json",
    )

    details = error_of(response, 400)["details"]
    assert set(details) == {"status", "organization"}
    job.refresh_from_db()
    assert (job.name, job.status, job.organization.name) == ("Pets", "draft", "Acme Client")


def test_patch_of_a_workers_status_is_refused(ops_actor, make_actor):
    annotator = make_actor("annotator")
    worker_id = annotator.user.worker.pk

    response = ops_actor.client.patch(
        f"/api/v1/workers/{worker_id}/", {"status": "banned"}, format="json"
    )

    assert "status" in error_of(response, 400)["details"]
    annotator.user.worker.refresh_from_db()
    assert annotator.user.worker.status == "active"


@pytest.mark.parametrize("body", ["[]", "[1]", '"job"', "7"], ids=["list", "list1", "str", "int"])
def test_next_with_a_body_that_is_not_an_object_is_a_400(make_actor, body):
    annotator = make_actor("annotator")

    response = post_raw(annotator, "/api/v1/assignments/next/", body)

    assert error_of(response, 400)["code"] == "invalid"


@pytest.mark.parametrize(
    ("url", "body"),
    [
        ("/api/v1/assignments/next/", '{"job": 9223372036854775808}'),
        ("/api/v1/assignments/next/?job=10723151780598845931", "{}"),
        ("/api/v1/assignments/next/?job=9223372036854775808", ""),
    ],
    ids=["body", "query", "query-no-body"],
)
def test_next_with_a_job_id_beyond_bigint_is_a_400(make_actor, url, body):
    annotator = make_actor("annotator")

    response = post_raw(annotator, url, body)

    assert "job" in error_of(response, 400)["details"]


def test_reviews_next_with_a_job_id_beyond_bigint_is_a_400(qc_actor):
    response = post_raw(qc_actor, "/api/v1/reviews/next/", '{"job": 9223372036854775807}')
    assert response.status_code == 204  # the largest id is fine, it just has no reviews

    response = post_raw(qc_actor, "/api/v1/reviews/next/", '{"job": 9223372036854775808}')

    assert "job" in error_of(response, 400)["details"]


# ----------------------------------------------------------------------- uploads (6, 7)


def upload(actor, job: Job, body: bytes | str, content_type: str):
    return post_raw(actor, f"/api/v1/jobs/{job.pk}/items/", body, content_type)


def good_and_bad_rows(bad: dict) -> list[dict]:
    return [{"external_id": "good", "payload": {"n": 1}}, bad]


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"external_id": "a\u0000b", "payload": {}}, "external_id"),
        ({"external_id": "deep", "payload": {"x": json.loads(nested(100))}}, "payload"),
        ({"external_id": "nul", "payload": {"t": "a\u0000"}}, "payload"),
        ({"external_id": "big", "payload": {"t": "x" * (MAX_PAYLOAD_BYTES + 1)}}, "payload"),
    ],
    ids=["nul-external-id", "deep-payload", "nul-payload", "big-payload"],
)
@pytest.mark.parametrize("fmt", ["json", "jsonl"])
def test_a_bad_json_row_is_rejected_and_the_good_ones_stored(client_actor, job, bad, field, fmt):
    rows = good_and_bad_rows(bad)
    if fmt == "json":
        response = upload(client_actor, job, json.dumps(rows), "application/json")
    else:
        body = "\n".join(json.dumps(row) for row in rows)
        response = upload(client_actor, job, body, "application/x-ndjson")

    assert response.status_code == 201, response.content[:500]
    report = response.json()
    assert (report["created"], report["rejected"]) == (1, 1)
    assert field in report["errors"][0]["errors"]
    assert list(job.items.values_list("external_id", flat=True)) == ["good"]


def test_a_json_list_nested_10000_deep_is_a_row_error(client_actor, job):
    body = '[{"external_id": "good", "payload": {}}, {"external_id": "d", "payload": {"x": '
    body += nested(10_000) + "}}]"

    response = upload(client_actor, job, body, "application/json")

    assert response.status_code == 201, response.content[:500]
    assert response.json()["rejected"] == 1


@pytest.mark.filterwarnings("error::RuntimeWarning")
@pytest.mark.parametrize("fmt", ["json", "jsonl"])
def test_features_beyond_float32_are_a_quiet_row_error(client_actor, job, fmt):
    rows = [
        {"external_id": "good", "payload": {}},
        {"external_id": "huge", "payload": {}, "features": [1e300, 1.0]},
    ]
    if fmt == "json":
        response = upload(client_actor, job, json.dumps(rows), "application/json")
    else:
        body = "\n".join(json.dumps(row) for row in rows)
        response = upload(client_actor, job, body, "application/x-ndjson")

    assert response.status_code == 201, response.content[:500]
    assert response.json()["errors"][0]["errors"] == {
        "features": "must be a flat list of finite numbers"
    }


def test_a_nul_external_id_in_a_csv_is_a_row_error(client_actor, job):
    body = "external_id,text\ngood,hello\nb\x00ad,bye\n"

    response = upload(client_actor, job, body, "text/csv")

    assert response.status_code == 201, response.content
    assert response.json()["errors"][0]["errors"] == {
        "external_id": "contains a NUL character (\\u0000), which cannot be stored"
    }


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ('external_id,text\ngood,hello\nbad,"open quote\nnext,row\n', "row 2"),
        ("external_id,text,text\ngood,a,b\n", "'text' twice"),
    ],
    ids=["unterminated-quote", "duplicate-header"],
)
def test_a_malformed_csv_is_refused_whole(client_actor, job, body, words):
    upload(client_actor, job, "external_id,text\nkept,1\n", "text/csv")

    error = error_of(upload(client_actor, job, body, "text/csv"), 400)

    assert words in error["message"]
    assert list(job.items.values_list("external_id", flat=True)) == ["kept"]
