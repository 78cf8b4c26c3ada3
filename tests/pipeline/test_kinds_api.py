"""Every answer kind beyond single_choice over the API: create, upload with gold, annotate,
settle, export; and a 400 naming the problem for a bad schema, gold answer or submit."""

from __future__ import annotations

import csv
import io
import json

import pytest
from django.test import Client
from drf_spectacular.generators import SchemaGenerator

from apps.assignments.models import Assignment, Label
from apps.jobs.models import Item, Job
from apps.quality.aggregation import job_aggregate
from apps.workforce.models import Worker
from tests.workforce.factories import make_pool

pytestmark = pytest.mark.django_db

JOBS = "/api/v1/jobs/"
NEXT = "/api/v1/assignments/next/"

SCHEMAS = {
    "multi_choice": {"kind": "multi_choice", "tags": ["indoor", "people", "animal"]},
    "ordinal": {"kind": "ordinal", "levels": ["bad", "fair", "good", "great"]},
    "numeric": {
        "kind": "numeric",
        "minimum": 0,
        "maximum": 100,
        "unit": "years",
        "tolerance": 5,
    },
    "bbox": {"kind": "bbox", "classes": ["car", "person"], "width": 640, "height": 480},
}
# What three agreeing annotators answer on the item (boxes a few pixels apart).
ANSWERS = {
    "multi_choice": [["people", "indoor"], ["indoor", "people"], ["people", "indoor"]],
    "ordinal": ["good", "good", "good"],
    "numeric": [41, 42, 41.5],
    "bbox": [
        [{"box": [100, 100, 200, 100], "class": "car"}],
        [{"box": [102, 98, 198, 103], "class": "car"}],
        [{"box": [99, 101, 201, 99], "class": "car"}],
    ],
}
EXPECTED = {
    "multi_choice": ["indoor", "people"],
    "ordinal": "good",
    "numeric": 41.5,
}
GOLD = {
    "multi_choice": ["animal"],
    "ordinal": "fair",
    "numeric": 30,
    "bbox": [{"box": [10, 10, 50, 50], "class": "person"}],
}
# An answer the kind's score calls wrong against ANSWERS[kind][0].
FAR = {**GOLD, "ordinal": "bad"}
BAD_ANSWERS = {
    "multi_choice": (["indoor", "cat"], "unknown tags"),
    "ordinal": ("superb", "is not one of"),
    "numeric": (140, "outside [0.0, 100.0]"),
    "bbox": ([{"box": [600, 10, 100, 50], "class": "car"}], "leaves the 640.0x480.0 image"),
}


def _spec(schema: dict, **policy) -> dict:
    return {
        "name": f"{schema['kind']} job",
        "instructions": "Label it.",
        "label_schema": schema,
        "policy": {"min_labels": 3, "max_labels": 4, "gold_rate": 0.0, **policy},
        "pricing": {"crowd_label": 0.05, "expert_label": 0.5},
    }


def _annotators(make_actor, job_id: int, n: int = 3):
    actors = [make_actor("annotator") for _ in range(n)]
    workers = [Worker.objects.get(user=a.user) for a in actors]
    make_pool(jobs=[Job.objects.get(pk=job_id)], workers=workers)
    return actors


def _create_and_upload(client, kind: str, rows: list[dict], **policy) -> int:
    response = client.post(JOBS, _spec(SCHEMAS[kind], **policy), format="json")
    assert response.status_code == 201, response.json()
    job_id = response.json()["id"]
    body = "\n".join(json.dumps(r) for r in rows).encode()
    upload = client.post(f"{JOBS}{job_id}/items/", body, content_type="application/x-ndjson")
    assert upload.status_code in (200, 201), upload.json()
    assert upload.json()["rejected"] == 0, upload.json()
    assert client.post(f"{JOBS}{job_id}/launch/").status_code == 200
    return job_id


def _download(client, job_id: int, fmt: str, *, raw: bool = False):
    response = client.get(f"{JOBS}{job_id}/results/?format={fmt}")
    assert response.status_code == 200
    body = b"".join(response.streaming_content)
    return body if raw else json.loads(body)


def _label(actor, answer) -> dict:
    task = actor.client.post(NEXT, {}, format="json")
    assert task.status_code == 200, task.content
    body = task.json()
    response = actor.client.post(
        f"/api/v1/assignments/{body['id']}/submit/", {"label": answer}, format="json"
    )
    assert response.status_code == 200, response.json()
    return {"task": body, "submit": response.json()}


@pytest.mark.parametrize("kind", list(SCHEMAS))
def test_a_kind_settles_end_to_end_and_exports(kind, client_actor, make_actor):
    job_id = _create_and_upload(
        client_actor.client,
        kind,
        [
            {"external_id": "x-1", "payload": {"url": "https://example.org/1.jpg"}},
            {"external_id": "g-1", "payload": {"url": "g.jpg"}, "gold_label": GOLD[kind]},
        ],
        # Three agreeing answers at the assumed accuracy of a new worker (0.7) reach 0.9
        # on every tag; 0.95 would take a fourth.
        target_confidence=0.9,
    )
    annotators = _annotators(make_actor, job_id)

    for actor, answer in zip(annotators, ANSWERS[kind], strict=True):
        done = _label(actor, answer)
        assert done["task"]["label_schema"]["kind"] == kind

    item = Item.objects.get(job_id=job_id, external_id="x-1")
    assert (item.state, item.source, item.n_labels) == ("settled", "crowd", 3)
    results = _download(client_actor.client, job_id, "json")
    row = next(r for r in results if r["external_id"] == "x-1")
    if kind == "bbox":
        [box] = row["label"]
        assert box["class"] == "car"
        assert box["box"] == pytest.approx([100.3, 99.7, 199.7, 100.7], abs=1.0)
        assert row["confidence"] >= 0.7
        assert row["result_meta"]["objects"][0]["workers"] == 3
    else:
        assert row["label"] == EXPECTED[kind]
    assert 0 < row["confidence"] <= 1
    assert row["agreement"] is not None
    assert row["result_meta"]["kind"] == kind
    assert len(row["result_meta"]["workers"]) == 3
    if kind == "numeric":
        low, high = row["result_meta"]["interval"]
        assert low <= 41.5 <= high
        assert high - low <= 10
    gold_row = next(r for r in results if r["external_id"] == "g-1")
    assert gold_row["is_gold"] is True

    jsonl = _download(client_actor.client, job_id, "jsonl", raw=True)
    lines = [json.loads(line) for line in jsonl.splitlines()]
    assert next(r for r in lines if r["external_id"] == "x-1")["label"] == row["label"]
    text = _download(client_actor.client, job_id, "csv", raw=True).decode()
    csv_row = next(r for r in csv.DictReader(io.StringIO(text)) if r["external_id"] == "x-1")
    assert (csv_row["label"] if kind == "ordinal" else json.loads(csv_row["label"])) == row["label"]
    assert float(csv_row["confidence"]) == pytest.approx(row["confidence"])


@pytest.mark.parametrize("kind", list(SCHEMAS))
def test_a_disputed_item_goes_to_review_at_max_labels(kind, client_actor, make_actor):
    job_id = _create_and_upload(
        client_actor.client,
        kind,
        [{"external_id": "x-1", "payload": {"url": "1.jpg"}}],
    )
    annotators = _annotators(make_actor, job_id, n=4)
    disputed = {
        "multi_choice": [["indoor"], ["people"], ["animal"], ["indoor", "animal"]],
        "ordinal": ["bad", "great", "fair", "great"],
        "numeric": [10, 90, 50, 30],
        "bbox": [
            [{"box": [0, 0, 100, 100], "class": "car"}],
            [{"box": [300, 300, 100, 100], "class": "car"}],
            [{"box": [0, 300, 100, 100], "class": "person"}],
            [],
        ],
    }[kind]

    for n, (actor, answer) in enumerate(zip(annotators, disputed, strict=True)):
        _label(actor, answer)
        item = Item.objects.get(job_id=job_id, external_id="x-1")
        if n < 3:
            # Not confident: one more label each time, up to max_labels.
            assert item.state == "open"
            assert item.labels_needed == (3 if n < 2 else 4)

    assert item.state == "review"
    reviews = make_actor("qc").client.get(f"/api/v1/reviews/?job={job_id}").json()
    assert [r["item"] for r in reviews["results"]] == [item.pk]


@pytest.mark.parametrize("kind", list(SCHEMAS))
def test_a_bad_answer_is_a_400_naming_it_and_stores_nothing(kind, client_actor, make_actor):
    job_id = _create_and_upload(
        client_actor.client, kind, [{"external_id": "x-1", "payload": {"url": "1.jpg"}}]
    )
    [actor] = _annotators(make_actor, job_id, n=1)
    task = actor.client.post(NEXT, {}, format="json").json()
    bad, says = BAD_ANSWERS[kind]

    response = actor.client.post(
        f"/api/v1/assignments/{task['id']}/submit/", {"label": bad}, format="json"
    )

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert says in error["message"]
    assert says in error["details"]["label"][0]
    assert not Label.objects.filter(job_id=job_id).exists()
    good = actor.client.post(
        f"/api/v1/assignments/{task['id']}/submit/", {"label": ANSWERS[kind][0]}, format="json"
    )
    assert good.status_code == 200
    assert good.json()["label"] == (
        sorted(ANSWERS[kind][0]) if kind == "multi_choice" else ANSWERS[kind][0]
    )


@pytest.mark.parametrize("kind", list(SCHEMAS))
def test_gold_answers_are_scored_by_the_kind(kind, client_actor, make_actor):
    near = {
        "multi_choice": (["animal", "people"], ["indoor"]),  # Jaccard 0.5 passes, 0 fails
        "ordinal": ("good", "great"),  # one level off passes, two fail
        "numeric": (34, 36),  # within the tolerance of 5 passes
        "bbox": (
            [{"box": [12, 11, 49, 50], "class": "person"}],
            [{"box": [12, 11, 49, 50], "class": "car"}],  # right place, wrong class
        ),
    }[kind]
    job_id = _create_and_upload(
        client_actor.client,
        kind,
        [
            {"external_id": "x-1", "payload": {"url": "1.jpg"}},
            {"external_id": "g-1", "payload": {"url": "g.jpg"}, "gold_label": GOLD[kind]},
        ],
        gold_rate=1.0,
    )
    first, second = _annotators(make_actor, job_id, n=2)

    _label(first, near[0])
    _label(second, near[1])

    gold = Label.objects.filter(job_id=job_id, is_gold=True).order_by("id")
    assert [label.is_correct for label in gold] == [True, False]
    summary = client_actor.client.get(f"{JOBS}{job_id}/gold/").json()
    assert (summary["totals"]["answered"], summary["totals"]["correct"]) == (2, 1)


@pytest.mark.parametrize(
    ("schema", "where", "says"),
    [
        ({"kind": "multi_choice"}, "tags", "required"),
        ({"kind": "multi_choice", "tags": ["a", "a"]}, "tags", "unique"),
        ({"kind": "multi_choice", "tags": ["a"], "levels": ["x", "y"]}, "levels", "not a param"),
        (
            {"kind": "multi_choice", "tags": ["a", "b"], "min_tags": 2, "max_tags": 1},
            "min_tags",
            "at most",
        ),
        ({"kind": "multi_choice", "tags": ["a", "b"], "min_tags": 3}, "min_tags", "at most"),
        ({"kind": "ordinal", "levels": ["only"]}, "levels", "at least 2"),
        ({"kind": "numeric", "minimum": 5, "maximum": 1, "tolerance": 1}, "maximum", "below"),
        ({"kind": "numeric", "minimum": 0, "maximum": 10}, "tolerance", "required"),
        ({"kind": "bbox", "classes": ["car"], "width": 640}, "height", "required"),
        ({"kind": "bbox", "classes": ["car"], "width": 0, "height": 5}, "width", "greater"),
        ({"kind": "polygon", "classes": ["a", "b"]}, "kind", "not a valid choice"),
        ({"kind": "single_choice", "classes": ["a"]}, "classes", "at least 2"),
        ({"kind": "ordinal", "levels": ["a", "b"], "nivels": 1}, "nivels", "Unknown key"),
    ],
    ids=lambda v: json.dumps(v) if isinstance(v, dict) else str(v),
)
def test_a_bad_schema_is_a_400_naming_the_key(schema, where, says, client_actor):
    response = client_actor.client.post(JOBS, _spec(schema), format="json")

    assert response.status_code == 400
    details = response.json()["error"]["details"]["label_schema"]
    assert where in details, details
    assert says in " ".join(details[where])
    assert not Job.objects.exists()


def test_model_routing_is_refused_for_another_kind(client_actor):
    spec = {**_spec(SCHEMAS["numeric"]), "routing": {"mode": "model"}}

    response = client_actor.client.post(JOBS, spec, format="json")

    assert response.status_code == 400
    assert "mode" in response.json()["error"]["details"]["routing"]


@pytest.mark.parametrize("kind", list(SCHEMAS))
def test_an_upload_rejects_gold_that_does_not_fit_the_kind(kind, client_actor):
    response = client_actor.client.post(JOBS, _spec(SCHEMAS[kind]), format="json")
    job_id = response.json()["id"]
    bad, says = BAD_ANSWERS[kind]
    rows = [
        {"external_id": "ok", "payload": {}, "gold_label": GOLD[kind]},
        {"external_id": "bad", "payload": {}, "gold_label": bad},
        {"external_id": "pred", "payload": {}, "prediction": [0.5, 0.5]},
    ]

    report = client_actor.client.post(f"{JOBS}{job_id}/items/", rows, format="json").json()

    assert (report["created"], report["rejected"]) == (1, 2)
    errors = {e["row"]: e for e in report["errors"]}
    assert says in errors[2]["errors"]["gold_label"]
    assert "do not apply" in errors[3]["errors"]["prediction"]
    assert Item.objects.get(external_id="ok").gold_label is not None


def test_a_csv_upload_reads_gold_cells_as_json(client_actor):
    response = client_actor.client.post(JOBS, _spec(SCHEMAS["multi_choice"]), format="json")
    job_id = response.json()["id"]
    text = 'external_id,url,gold_label\nx-1,1.jpg,"[""animal"",""indoor""]"\nx-2,2.jpg,animal\n'

    report = client_actor.client.post(
        f"{JOBS}{job_id}/items/", text.encode(), content_type="text/csv"
    ).json()

    assert (report["created"], report["rejected"]) == (1, 1)
    assert Item.objects.get(external_id="x-1").gold_label == '["indoor","animal"]'


@pytest.mark.parametrize("kind", list(SCHEMAS))
def test_qc_resolves_a_disputed_item_with_an_answer_of_the_kind(kind, client_actor, make_actor):
    job_id = _create_and_upload(
        client_actor.client,
        kind,
        [{"external_id": "x-1", "payload": {"url": "1.jpg"}}],
        min_labels=1,
        max_labels=1,
    )
    [annotator] = _annotators(make_actor, job_id, n=1)
    _label(annotator, ANSWERS[kind][0])  # one answer at max_labels 1: never confident
    qc = make_actor("qc").client
    [review] = qc.get(f"/api/v1/reviews/?job={job_id}").json()["results"]
    bad, says = BAD_ANSWERS[kind]

    refused = qc.post(f"/api/v1/reviews/{review['id']}/resolve/", {"label": bad}, format="json")
    final = FAR[kind]
    resolved = qc.post(f"/api/v1/reviews/{review['id']}/resolve/", {"label": final}, format="json")

    assert refused.status_code == 400
    assert says in refused.json()["error"]["details"]["label"][0]
    assert resolved.status_code == 200, resolved.json()
    [row] = _download(client_actor.client, job_id, "json")
    assert (row["label"], row["source"], row["status"]) == (final, "qc", "settled")
    # The annotator's answer is judged by the kind's score against QC's (here: far off).
    feedback = annotator.client.get("/api/v1/feedback/").json()
    assert [f["correct"] for f in feedback["results"]] == [False]


def test_a_bbox_job_exports_coco(client_actor, make_actor):
    job_id = _create_and_upload(
        client_actor.client,
        "bbox",
        [
            {"external_id": "x-1", "payload": {"url": "https://example.org/1.jpg"}},
            {"external_id": "x-2", "payload": {"text": "no image field"}},
        ],
        target_confidence=0.9,
    )
    annotators = _annotators(make_actor, job_id)
    for actor, answer in zip(annotators, ANSWERS["bbox"], strict=True):
        _label(actor, answer)

    response = client_actor.client.get(f"{JOBS}{job_id}/results/?format=coco")
    coco = response.json()
    refused = client_actor.client.get(f"{JOBS}{job_id}/results/?format=pascal")

    assert response.status_code == 200
    assert coco["categories"] == [
        {"id": 1, "name": "car", "supercategory": ""},
        {"id": 2, "name": "person", "supercategory": ""},
    ]
    first, second = coco["images"]
    assert (first["file_name"], first["width"], first["height"]) == (
        "https://example.org/1.jpg",
        640,
        480,
    )
    assert second["file_name"] == "x-2"
    [annotation] = coco["annotations"]
    assert annotation["image_id"] == first["id"]
    assert annotation["category_id"] == 1
    x, y, w, h = annotation["bbox"]
    assert annotation["area"] == pytest.approx(w * h, rel=1e-3)
    assert annotation["bbox"] == pytest.approx([100.3, 99.7, 199.7, 100.7], abs=1.0)
    assert 0.7 <= annotation["score"] <= 1
    assert refused.status_code == 400
    assert "coco" in refused.json()["error"]["message"]
    page = Client()
    page.force_login(client_actor.user)
    dashboard = page.get(f"/dashboard/jobs/{job_id}/").content.decode()
    assert f'href="/api/v1/jobs/{job_id}/results/?format=coco"' in dashboard


def test_a_numeric_job_run_learns_a_biased_worker_and_rewrites_results(client_actor, make_actor):
    """Per item, a worker's bias cannot be told from the truth; across the job it can: the
    job aggregation estimates it and moves every settled value back towards the truth."""
    truth = [10.0 + 2.5 * i for i in range(30)]
    job_id = _create_and_upload(
        client_actor.client,
        "numeric",
        [{"external_id": f"x-{i}", "payload": {"n": i}} for i in range(len(truth))],
    )
    Job.objects.filter(pk=job_id).update(
        label_schema={**SCHEMAS["numeric"], "tolerance": 50},
        policy={"min_labels": 3, "max_labels": 3, "gold_rate": 0.0, "reaggregate_every": 0},
    )
    annotators = _annotators(make_actor, job_id)
    noise = [0.4, -0.3, 0.2, -0.1, 0.0]
    careless = [9.0, -12.0, 15.0, -6.0, 11.0, -14.0]
    for _ in range(len(truth)):
        for w, actor in enumerate(annotators):
            task = actor.client.post(NEXT, {}, format="json").json()
            n = Assignment.objects.get(pk=task["id"]).item.payload["n"]
            answer = truth[n] + (careless[n % 6] if w == 2 else noise[(n + w) % 5])
            actor.client.post(
                f"/api/v1/assignments/{task['id']}/submit/", {"label": answer}, format="json"
            )

    def error() -> float:
        rows = _download(client_actor.client, job_id, "json")
        return sum(abs(r["label"] - truth[int(r["external_id"][2:])]) for r in rows) / len(rows)

    before = error()
    run = job_aggregate(job_id=job_id)
    after = error()
    agreement = client_actor.client.get(f"{JOBS}{job_id}/agreement/").json()

    assert Item.objects.filter(job_id=job_id, state="settled").count() == len(truth)
    assert before > 2.0
    assert after < 0.5
    assert run.method == "numeric"
    assert run.n_labels == 90
    assert agreement["kind"] == "numeric"
    assert agreement["distance"] == "interval"
    assert 0.5 < agreement["krippendorff_alpha"] < 1.0


@pytest.mark.parametrize("kind", list(SCHEMAS))
def test_every_read_of_a_job_of_the_kind_answers_without_a_server_error(
    kind, client_actor, ops_actor, qc_actor, make_actor
):
    """The endpoints and pages written for classes meet a job of another kind: each answers
    (2xx, or a 4xx naming why), never a 500."""
    job_id = _create_and_upload(
        client_actor.client,
        kind,
        [
            {"external_id": "x-1", "payload": {"url": "1.jpg"}},
            {"external_id": "x-2", "payload": {"url": "2.jpg"}},
            {"external_id": "g-1", "payload": {"url": "g.jpg"}, "gold_label": GOLD[kind]},
        ],
        min_labels=1,
        max_labels=1,
        gold_rate=0.3,
    )
    [annotator] = _annotators(make_actor, job_id, n=1)
    for _ in range(2):
        _label(annotator, ANSWERS[kind][0])
    worker = Worker.objects.get(user=annotator.user)
    review = qc_actor.client.get(f"/api/v1/reviews/?job={job_id}").json()["results"][0]
    qc_page = Client()
    qc_page.force_login(qc_actor.user)
    open_review = qc_page.get(f"/qc/reviews/{review['id']}/").content.decode()
    assert f'data-kind="{kind}"' in open_review  # the kind's widget, not class buttons
    qc_actor.client.post(
        f"/api/v1/reviews/{review['id']}/resolve/", {"label": ANSWERS[kind][1]}, format="json"
    )
    assert job_aggregate(job_id=job_id) is not None
    reads = {
        client_actor.client: [
            f"{JOBS}{job_id}/",
            f"{JOBS}{job_id}/agreement/",
            f"{JOBS}{job_id}/gold/",
            f"{JOBS}{job_id}/metrics/",
            f"{JOBS}{job_id}/models/",
            f"{JOBS}{job_id}/review-metrics/",
            f"{JOBS}{job_id}/guideline-gaps/",
            f"{JOBS}{job_id}/prelabel-effect/",
            f"{JOBS}{job_id}/items/x-1/similar/",
            f"{JOBS}{job_id}/items/",
            "/api/v1/metrics/",
        ],
        ops_actor.client: [f"/api/v1/workers/{worker.pk}/quality/"],
        qc_actor.client: [f"/api/v1/reviews/{review['id']}/"],
        annotator.client: ["/api/v1/feedback/"],
    }
    pages = [
        (client_actor, [f"/dashboard/jobs/{job_id}/"]),
        (ops_actor, [f"/dashboard/workers/{worker.pk}/", f"/dashboard/jobs/{job_id}/"]),
        (qc_actor, [f"/qc/reviews/{review['id']}/", "/qc/"]),
        (annotator, ["/annotate/"]),
    ]
    posts = {
        client_actor.client: [
            f"{JOBS}{job_id}/evaluate-strategy/",
            f"{JOBS}{job_id}/retrain/",
            f"{JOBS}{job_id}/aggregate/",
            f"{JOBS}{job_id}/items/x-2/dispute/",
        ]
    }

    answers = {}
    for client, urls in reads.items():
        for url in urls:
            answers[url] = client.get(url).status_code
    for actor, urls in pages:
        page = Client()
        page.force_login(actor.user)
        for url in urls:
            answers[f"page {url}"] = page.get(url).status_code
    for client, urls in posts.items():
        for url in urls:
            answers[f"POST {url}"] = client.post(url, {"note": "why"}, format="json").status_code

    assert {
        url: code for url, code in answers.items() if url.startswith("page") and code != 200
    } == {}
    assert {url: code for url, code in answers.items() if code >= 500 or code in (403, 404)} == {}


def test_the_openapi_schema_publishes_every_kind_and_its_parameters():
    schema = SchemaGenerator().get_schema(request=None, public=True)
    label_schema = schema["components"]["schemas"]["LabelSchemaRequest"]["properties"]

    assert set(SCHEMAS) | {"single_choice"} <= set(
        schema["components"]["schemas"]["LabelSchemaKindEnum"]["enum"]
    )
    for key in ("classes", "tags", "levels", "minimum", "maximum", "unit", "tolerance"):
        assert key in label_schema
    for key in ("width", "height", "target_iou", "min_tags", "max_tags", "level"):
        assert key in label_schema
    submit = schema["components"]["schemas"]["AssignmentSubmitInputRequest"]["properties"]["label"]
    assert {"type": "array", "items": {}} in submit["oneOf"]


def test_a_drafts_kind_cannot_change_under_its_gold_items(client_actor):
    response = client_actor.client.post(JOBS, _spec(SCHEMAS["ordinal"]), format="json")
    job_id = response.json()["id"]
    client_actor.client.post(
        f"{JOBS}{job_id}/items/",
        [{"external_id": "g", "payload": {}, "gold_label": "fair"}],
        format="json",
    )

    other_kind = client_actor.client.patch(
        f"{JOBS}{job_id}/", {"label_schema": SCHEMAS["multi_choice"]}, format="json"
    )
    dropped_level = client_actor.client.patch(
        f"{JOBS}{job_id}/",
        {"label_schema": {"kind": "ordinal", "levels": ["bad", "good", "great"]}},
        format="json",
    )
    added_level = client_actor.client.patch(
        f"{JOBS}{job_id}/",
        {"label_schema": {"kind": "ordinal", "levels": ["bad", "fair", "ok", "good"]}},
        format="json",
    )

    assert other_kind.status_code == 400
    assert "kind" in other_kind.json()["error"]["details"]["label_schema"]
    assert dropped_level.status_code == 400
    assert "'fair' is not one of" in dropped_level.json()["error"]["message"]
    assert added_level.status_code == 200
    assert Item.objects.get(external_id="g").gold_label == '"fair"'


def test_an_expert_answer_settles_an_escalated_item_of_another_kind(client_actor, make_actor):
    job_id = _create_and_upload(
        client_actor.client,
        "numeric",
        [{"external_id": "x-1", "payload": {}}],
        min_labels=2,
        max_labels=2,
        escalation={"disagreement": "expert"},
    )
    crowd = _annotators(make_actor, job_id, n=2)
    expert = make_actor("expert")
    make_pool(jobs=[Job.objects.get(pk=job_id)], workers=[Worker.objects.get(user=expert.user)])
    _label(crowd[0], 10)
    _label(crowd[1], 90)
    assert Item.objects.get(job_id=job_id).state == "expert"

    _label(expert, 55.5)

    [row] = _download(client_actor.client, job_id, "json")
    assert (row["label"], row["source"], row["status"]) == (55.5, "expert", "settled")


def test_an_answer_too_long_to_be_a_label_is_a_400(client_actor, make_actor):
    job_id = _create_and_upload(client_actor.client, "bbox", [{"external_id": "x", "payload": {}}])
    [actor] = _annotators(make_actor, job_id, n=1)
    task = actor.client.post(NEXT, {}, format="json").json()
    boxes = [{"box": [1.25, 1.25, 100.5, 100.5], "class": "person"}] * 2000

    response = actor.client.post(
        f"/api/v1/assignments/{task['id']}/submit/", {"label": boxes}, format="json"
    )

    assert response.status_code == 400
    assert "at most 65536" in response.json()["error"]["details"]["label"][0]


@pytest.mark.parametrize("with_record", [True, False], ids=["gold_record", "new_workers"])
def test_workers_proven_on_gold_settle_an_item_with_fewer_labels(
    with_record, client_actor, make_actor
):
    """Tags are weighed by each worker's per-tag accuracy on the job's gold: two workers
    who answered six gold items right settle a tag set they agree on; two new workers (the
    assumed accuracy, 0.7) agreeing are not sure enough and the item asks for a third."""
    gold = [{"external_id": f"g-{i}", "payload": {}, "gold_label": ["people"]} for i in range(6)]
    job_id = _create_and_upload(
        client_actor.client,
        "multi_choice",
        [{"external_id": "x-1", "payload": {}}, *(gold if with_record else [])],
        min_labels=2,
        max_labels=3,
        gold_rate=1.0 if with_record else 0.0,
    )
    workers = _annotators(make_actor, job_id, n=2)

    for actor in workers:
        for _ in range(6 if with_record else 0):
            _label(actor, ["people"])
        _label(actor, ["indoor", "animal"])

    item = Item.objects.get(job_id=job_id, external_id="x-1")
    assert Label.objects.filter(item=item).count() == 2
    if with_record:
        assert (item.state, item.label) == ("settled", '["indoor","animal"]')
        assert item.confidence > 0.95
    else:
        assert (item.state, item.labels_needed) == ("open", 3)
        # Per tag (indoor, people, animal): two agreeing answers at accuracy 0.7 each.
        assert item.posterior == pytest.approx([0.845, 0.155, 0.845], abs=0.001)


def test_a_numeric_job_run_widens_intervals_by_the_error_its_gold_shows(client_actor, make_actor):
    """A crowd that misreads every item the same way (+8) agrees tightly: each item's own
    interval is narrow and misses the truth. The gold items show the shared error; the job
    run widens every interval by it, so that the intervals cover the truth."""
    truth = {f"x-{i}": 10.0 + 3 * i for i in range(12)} | {f"g-{i}": 50.0 + 4 * i for i in range(5)}
    rows = [{"external_id": e, "payload": {"e": e}} for e in truth if e.startswith("x")]
    rows += [
        {"external_id": e, "payload": {"e": e}, "gold_label": v}
        for e, v in truth.items()
        if e.startswith("g")
    ]
    job_id = _create_and_upload(
        client_actor.client, "numeric", rows, gold_rate=1.0, reaggregate_every=0
    )
    noise = [0.3, -0.2, 0.1, -0.4, 0.2, 0.0, -0.1]
    for w, actor in enumerate(_annotators(make_actor, job_id)):
        for n in range(len(truth)):
            task = actor.client.post(NEXT, {}, format="json").json()
            external_id = Assignment.objects.get(pk=task["id"]).item.payload["e"]
            answer = truth[external_id] + 8 + noise[(n + w) % 7]
            actor.client.post(
                f"/api/v1/assignments/{task['id']}/submit/", {"label": answer}, format="json"
            )

    def coverage() -> float:
        results = [r for r in _download(client_actor.client, job_id, "json") if not r["is_gold"]]
        assert all(r["status"] == "settled" for r in results)
        inside = [
            r["result_meta"]["interval"][0]
            <= truth[r["external_id"]]
            <= r["result_meta"]["interval"][1]
            for r in results
        ]
        return sum(inside) / len(inside)

    before = coverage()
    job_aggregate(job_id=job_id)
    after = coverage()

    assert before == 0.0
    assert after >= 0.9
    meta = Item.objects.get(job_id=job_id, external_id="x-0").result_meta
    assert meta["item_var"] == pytest.approx(64, rel=0.2)
    assert meta["job_method"] == "numeric"
