"""The review API: queue, claims, decisions, disputes, feedback, gaps and metrics."""

from __future__ import annotations

import json

import pytest
from django.utils import timezone

from apps.assignments.leasing import Task
from apps.assignments.models import Assignment, Label
from apps.jobs.models import Item
from apps.pipeline.next import assignment_next
from apps.pipeline.submit import assignment_submit
from apps.reviews.models import Review
from apps.workforce.models import Worker
from tests.reviews.factories import items, label, label_items, review_job
from tests.workforce.factories import ClientOrgFactory, make_items, make_pool

pytestmark = pytest.mark.django_db


def _tied_reviews(n: int = 1, **policy):
    job = review_job(n_items=n, **policy)
    workers = label_items(job, [["cat"] * n, ["dog"] * n])
    return job, list(Review.objects.order_by("id")), workers


def test_the_queue_filters_by_job_status_and_reason_in_few_queries(
    qc_actor, django_assert_max_num_queries
):
    job, reviews, _ = _tied_reviews(3)
    other, _, _ = _tied_reviews(2)
    Review.objects.filter(pk=reviews[0].pk).update(reason="low_posterior")

    with django_assert_max_num_queries(6):
        response = qc_actor.client.get(
            "/api/v1/reviews/", {"job": job.pk, "status": "open", "reason": "disagreement"}
        )

    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 2
    assert {row["id"] for row in body["results"]} == {reviews[1].pk, reviews[2].pk}
    row = body["results"][0]
    assert (row["job"], row["reason"], row["status"], row["claimed_by"], row["item_state"]) == (
        job.pk,
        "disagreement",
        "open",
        None,
        "review",
    )
    assert qc_actor.client.get("/api/v1/reviews/", {"job": other.pk}).json()["count"] == 2


def test_ops_may_read_the_queue_but_clients_and_annotators_may_not(
    ops_actor, client_actor, make_actor
):
    _tied_reviews()

    assert ops_actor.client.get("/api/v1/reviews/").status_code == 200
    for actor in (client_actor, make_actor("annotator")):
        response = actor.client.get("/api/v1/reviews/")
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "permission_denied"


def test_claim_release_and_a_second_qc_person(qc_actor, make_actor):
    _, (review,), _ = _tied_reviews()
    other = make_actor("qc")

    claimed = qc_actor.client.post(f"/api/v1/reviews/{review.pk}/claim/")
    assert claimed.status_code == 200
    assert claimed.json()["claimed_by"] == "quinn"
    held = other.client.post(f"/api/v1/reviews/{review.pk}/claim/")
    assert held.status_code == 409
    assert held.json()["error"]["code"] == "conflict"
    assert other.client.post("/api/v1/reviews/next/").status_code == 204

    assert qc_actor.client.post(f"/api/v1/reviews/{review.pk}/release/").status_code == 200
    response = other.client.post("/api/v1/reviews/next/", {}, format="json")
    assert (response.status_code, response.json()["id"]) == (200, review.pk)


@pytest.mark.parametrize("role", ["client", "annotator", "ops"])
def test_only_qc_may_resolve(role, make_actor):
    _, (review,), _ = _tied_reviews()
    actor = make_actor(role)

    response = actor.client.post(
        f"/api/v1/reviews/{review.pk}/resolve/", {"label": "cat"}, format="json"
    )

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"
    assert Review.objects.get().status == "open"


def test_resolve_returns_the_decision_and_the_results_show_it(qc_actor, client_actor):
    job, (review,), _ = _tied_reviews(organization=ClientOrgFactory())

    response = qc_actor.client.post(
        f"/api/v1/reviews/{review.pk}/resolve/",
        {"label": "dog", "note": "Barks.", "tags": ["guideline_gap"], "make_gold": False},
        format="json",
    )

    assert response.status_code == 200
    body = response.json()
    assert (body["review"], body["label"], body["previous_label"], body["tags"]) == (
        review.pk,
        "dog",
        None,
        ["guideline_gap"],
    )
    results = client_actor.client.get(f"/api/v1/jobs/{job.pk}/results/")
    (row,) = [r for r in _json(results) if not r["is_gold"]]
    assert (row["label"], row["source"], row["status"], row["confidence"]) == (
        "dog",
        "qc",
        "settled",
        1.0,
    )


def test_resolve_rejects_unknown_labels_and_tags(qc_actor):
    _, (review,), _ = _tied_reviews()

    bad_label = qc_actor.client.post(
        f"/api/v1/reviews/{review.pk}/resolve/", {"label": "fish"}, format="json"
    )
    bad_tag = qc_actor.client.post(
        f"/api/v1/reviews/{review.pk}/resolve/", {"label": "cat", "tags": ["nope"]}, format="json"
    )

    assert (bad_label.status_code, bad_tag.status_code) == (400, 400)
    assert bad_label.json()["error"]["details"]["label"]


def test_review_detail_has_what_a_decision_needs(qc_actor):
    _, (review,), workers = _tied_reviews()

    body = qc_actor.client.get(f"/api/v1/reviews/{review.pk}/").json()

    assert body["classes"] == ["cat", "dog", "bird"]
    assert body["payload"] == {"text": "item 0"}
    assert [(row["worker"], row["value"]) for row in body["labels"]] == [
        (workers[0].pk, "cat"),
        (workers[1].pk, "dog"),
    ]
    assert [p["p"] for p in body["posterior"]] == [0.5, 0.5, 0.0]
    assert body["decisions"] == []
    assert body["reviews"][0]["reason"] == "disagreement"


def test_a_client_disputes_a_delivered_result_of_its_own_job_only(
    client_actor, other_client_actor, ops_actor
):
    job = review_job(organization=ClientOrgFactory())
    label_items(job, [["cat"], ["cat"]])
    (item,) = items(job)
    url = f"/api/v1/jobs/{job.pk}/items/{item.external_id}/dispute/"

    foreign = other_client_actor.client.post(url, {"note": "Wrong."}, format="json")
    first = client_actor.client.post(url, {"note": "Wrong."}, format="json")
    again = client_actor.client.post(url, {"note": "Still wrong."}, format="json")
    by_ops = ops_actor.client.post(url, {"note": "Checked."}, format="json")
    missing = client_actor.client.post(
        f"/api/v1/jobs/{job.pk}/items/nope/dispute/", {"note": "?"}, format="json"
    )

    assert foreign.status_code == 404
    assert foreign.json()["error"]["code"] == "not_found"
    assert (first.status_code, first.json()["created"]) == (201, True)
    assert (again.status_code, again.json()["review"]) == (200, first.json()["review"])
    assert by_ops.status_code == 200
    assert missing.status_code == 404
    review = Review.objects.get()
    assert (review.reason, len(review.context["triggers"])) == ("client_dispute", 3)


def test_a_worker_disputes_a_gold_answer_after_submitting_it(make_actor):
    job = review_job(gold_rate=1.0)
    make_items(job, 0, gold=["cat"])
    annotator, stranger = make_actor("annotator"), make_actor("annotator")
    worker = Worker.objects.get(user=annotator.user)
    make_pool(jobs=[job], workers=[worker])
    task = assignment_next(worker=worker)
    assert isinstance(task, Task)
    url = f"/api/v1/assignments/{task.id}/dispute-gold/"

    early = annotator.client.post(url, {"note": "Dog."}, format="json")
    assignment_submit(worker=worker, assignment_id=task.id, label="dog")
    foreign = stranger.client.post(url, {"note": "Dog."}, format="json")
    response = annotator.client.post(url, {"note": "Clearly a dog."}, format="json")

    assert early.status_code == 409
    assert foreign.status_code == 404
    assert response.status_code == 202
    review = Review.objects.get()
    assert (review.reason, review.context["triggers"][0]["gold_label"]) == ("gold_dispute", "cat")


def test_disputing_answers_the_same_for_gold_and_other_items(make_actor):
    """No probing: the answer (status and body, first time or again) does not depend on
    whether the item is gold; QC gets a gold dispute or a worker dispute."""
    job = review_job(min_labels=1, max_labels=1)
    make_items(job, 0, gold=["cat"])
    annotator = make_actor("annotator")
    worker = Worker.objects.get(user=annotator.user)
    make_pool(jobs=[job], workers=[worker])
    gold_item = Item.objects.get(job=job, gold_label="cat")
    task = assignment_next(worker=worker)
    assignment_submit(worker=worker, assignment_id=task.id, label="dog")
    Assignment.objects.create(
        item=gold_item,
        job=job,
        worker=worker,
        is_gold=True,
        state="submitted",
        leased_at=timezone.now(),
        expires_at=timezone.now(),
    )
    gold_assignment = Assignment.objects.get(item=gold_item)
    Label.objects.create(
        assignment=gold_assignment,
        item=gold_item,
        job=job,
        worker=worker,
        value="dog",
        tier="crowd",
        is_gold=True,
    )

    answers = []
    for assignment_id in (task.id, gold_assignment.pk, task.id, gold_assignment.pk):
        url = f"/api/v1/assignments/{assignment_id}/dispute-gold/"
        response = annotator.client.post(url, {"note": "Looks wrong."}, format="json")
        answers.append((response.status_code, response.json()))

    assert all(answer == answers[0] for answer in answers)
    assert answers[0][0] == 202
    assert set(answers[0][1]) == {"received", "message"}
    reasons = dict(Review.objects.values_list("item_id", "reason"))
    assert reasons == {task.item: "worker_dispute", gold_item.pk: "gold_dispute"}


def test_workers_read_their_own_feedback(qc_actor, make_actor):
    job = review_job()
    annotators = [make_actor("annotator"), make_actor("annotator")]
    workers = [Worker.objects.get(user=a.user) for a in annotators]
    make_pool(jobs=[job], workers=workers)
    for worker, value in zip(workers, ["cat", "dog"], strict=True):
        label(worker, value, job=job)
    review = Review.objects.get()
    qc_actor.client.post(
        f"/api/v1/reviews/{review.pk}/resolve/", {"label": "dog", "note": "Ears."}, format="json"
    )

    mine = annotators[0].client.get("/api/v1/feedback/")

    assert mine.status_code == 200
    (row,) = mine.json()["results"]
    assert (row["your_label"], row["final_label"], row["correct"], row["note"]) == (
        "cat",
        "dog",
        False,
        "Ears.",
    )
    assert qc_actor.client.get("/api/v1/feedback/").status_code == 403


def test_guideline_gaps_and_review_metrics_are_exposed_to_the_jobs_readers(
    qc_actor, client_actor, other_client_actor
):
    job, (review,), _ = _tied_reviews(organization=ClientOrgFactory())
    qc_actor.client.post(
        f"/api/v1/reviews/{review.pk}/resolve/",
        {"label": "dog", "note": "Say what to do with puppies.", "tags": ["guideline_gap"]},
        format="json",
    )

    gaps = client_actor.client.get(f"/api/v1/jobs/{job.pk}/guideline-gaps/")
    metrics = client_actor.client.get(f"/api/v1/jobs/{job.pk}/review-metrics/")

    assert gaps.status_code == 200
    assert gaps.json()["tags"] == {"guideline_gap": 1}
    assert gaps.json()["results"][0]["note"] == "Say what to do with puppies."
    assert metrics.status_code == 200
    assert metrics.json()["decisions"] == 1
    assert (
        other_client_actor.client.get(f"/api/v1/jobs/{job.pk}/guideline-gaps/").status_code == 404
    )
    assert (
        other_client_actor.client.get(f"/api/v1/jobs/{job.pk}/review-metrics/").status_code == 404
    )


def test_the_schema_documents_the_review_api(client):
    text = client.get("/api/schema/?format=json").content.decode()

    for path in [
        "/api/v1/reviews/",
        "/api/v1/reviews/{review_id}/resolve/",
        "/api/v1/reviews/{review_id}/claim/",
        "/api/v1/assignments/{assignment_id}/dispute-gold/",
        "/api/v1/jobs/{job_id}/items/{external_id}/dispute/",
        "/api/v1/jobs/{job_id}/guideline-gaps/",
        "/api/v1/jobs/{job_id}/review-metrics/",
        "/api/v1/feedback/",
    ]:
        assert path in text


def test_admin_lists_the_review_models(admin_client, qc_actor):
    _, (review,), _ = _tied_reviews()
    qc_actor.client.post(f"/api/v1/reviews/{review.pk}/resolve/", {"label": "cat"}, format="json")

    for name in ("review", "reviewdecision", "reviewoutcome"):
        assert admin_client.get(f"/admin/reviews/{name}/").status_code == 200, name


def _json(response) -> list[dict]:
    content = b"".join(response.streaming_content) if response.streaming else response.content
    return json.loads(content)
