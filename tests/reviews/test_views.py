"""The QC pages without a browser: access, the claim-decide-next loop, skipping."""

from __future__ import annotations

import pytest
from django.test import Client

from apps.jobs.models import Item
from apps.reviews.models import Review
from tests.reviews.factories import label_items, review_job

pytestmark = pytest.mark.django_db


def _session(actor) -> Client:
    client = Client()
    client.force_login(actor.user)
    return client


def test_the_qc_pages_need_a_qc_login(client, client_actor):
    assert client.get("/qc/").url == "/login/?next=/qc/"
    assert _session(client_actor).get("/qc/").status_code == 403
    assert _session(client_actor).post("/qc/next/").status_code == 403


def test_claim_decide_and_move_on_to_the_next(qc_actor):
    job = review_job(n_items=2)
    label_items(job, [["cat", "cat"], ["dog", "dog"]])
    first, second = Review.objects.order_by("id")
    browser = _session(qc_actor)

    queue = browser.get("/qc/", {"job": job.pk})
    started = browser.post("/qc/next/", {"job": job.pk})
    page = browser.get(started.url)
    decided = browser.post(
        f"/qc/reviews/{first.pk}/resolve/",
        {"label": "dog", "note": "Ears.", "tags": ["guideline_gap"], "job": job.pk},
    )

    assert queue.status_code == 200
    assert b"2 open" in queue.content
    assert started.url == f"/qc/reviews/{first.pk}/?job={job.pk}"
    assert page.status_code == 200
    assert b"it-0" in page.content
    assert decided.url == f"/qc/reviews/{second.pk}/?job={job.pk}"
    item = Item.objects.get(external_id="it-0")
    assert (item.label, item.source, item.state) == ("dog", "qc", "settled")


def test_a_bad_decision_shows_the_error_on_the_page(qc_actor):
    job = review_job()
    label_items(job, [["cat"], ["dog"]])
    review = Review.objects.get()

    response = _session(qc_actor).post(f"/qc/reviews/{review.pk}/resolve/", {"label": "fish"})

    assert response.status_code == 400
    assert b"is not one of the job" in response.content


def test_skip_moves_on_and_comes_back_when_nothing_else_is_left(qc_actor):
    job = review_job(n_items=2)
    label_items(job, [["cat", "cat"], ["dog", "dog"]])
    first, second = Review.objects.order_by("id")
    browser = _session(qc_actor)
    browser.post("/qc/next/")

    skipped = browser.post(f"/qc/reviews/{first.pk}/skip/")
    again = browser.post(f"/qc/reviews/{second.pk}/skip/")

    assert skipped.url == f"/qc/reviews/{second.pk}/"
    assert again.url == f"/qc/reviews/{first.pk}/"


def test_a_decision_posted_after_the_session_expired_survives_the_sign_in(client, qc_actor):
    """The session expired mid-review: the posted decision is kept, the person signs in
    again, lands on the review page with the decision shown, and saves it from there."""
    job = review_job()
    label_items(job, [["cat"], ["dog"]])
    review = Review.objects.get()
    form = {"label": "dog", "note": "Floppy ears.", "tags": ["guideline_gap"], "make_gold": "on"}

    expired = client.post(f"/qc/reviews/{review.pk}/", {**form, "job": job.pk})
    signed_in = client.post(expired.url, {"token": qc_actor.token})
    page = client.get(signed_in.url)
    again = client.get(signed_in.url)
    saved = client.post(f"/qc/reviews/{review.pk}/", form)

    review_path = f"/qc/reviews/{review.pk}/%3Fjob%3D{job.pk}"
    assert expired.url == f"/login/?next={review_path}"
    assert signed_in.url == f"/qc/reviews/{review.pk}/?job={job.pk}"
    assert page.status_code == 200
    html = page.content.decode()
    assert 'id="kept"' in html
    assert 'value="dog" class="primary" id="save-kept"' in html
    assert ">Floppy ears.</textarea>" in html
    assert 'id="make-gold" checked' in html
    assert 'id="tag-guideline_gap" checked' in html
    assert 'id="kept"' not in again.content.decode()  # shown once
    assert saved.status_code == 302
    decision = review.decisions.get()
    assert (decision.label, decision.note, decision.tags) == (
        "dog",
        "Floppy ears.",
        ["guideline_gap"],
    )


def test_the_old_resolve_url_answers_a_get_with_the_review_page(client, qc_actor):
    job = review_job()
    label_items(job, [["cat"], ["dog"]])
    review = Review.objects.get()

    anonymous = client.get(f"/qc/reviews/{review.pk}/resolve/")
    signed_in = _session(qc_actor).get(f"/qc/reviews/{review.pk}/resolve/?job={job.pk}")

    assert anonymous.status_code == 302
    assert anonymous.url.startswith("/login/?next=")
    assert signed_in.url == f"/qc/reviews/{review.pk}/?job={job.pk}"


def test_a_refused_decision_keeps_its_note(qc_actor, make_actor):
    job = review_job()
    label_items(job, [["cat"], ["dog"]])
    review = Review.objects.get()
    other = _session(make_actor("qc"))
    other.get(f"/qc/reviews/{review.pk}/")
    other.post("/qc/next/")  # the other QC person holds the review now

    response = _session(qc_actor).post(
        f"/qc/reviews/{review.pk}/", {"label": "dog", "note": "A long careful note."}
    )

    assert response.status_code == 409
    html = response.content.decode()
    assert "Another QC person holds this review." in html
    assert ">A long careful note.</textarea>" in html
    assert 'value="dog" class="primary"' in html


def test_a_resolved_review_refuses_a_second_decision_until_reopened(qc_actor):
    job = review_job()
    label_items(job, [["cat"], ["dog"]])
    review = Review.objects.get()
    browser = _session(qc_actor)
    browser.post(f"/qc/reviews/{review.pk}/", {"label": "dog"})

    refused = browser.post(f"/qc/reviews/{review.pk}/", {"label": "cat", "note": "Hm."})
    reopened = browser.post(f"/qc/reviews/{review.pk}/reopen/", {"note": "Second look."})
    decided = browser.post(f"/qc/reviews/{review.pk}/", {"label": "cat"})

    assert refused.status_code == 409
    assert "decisions are final" in refused.content.decode()
    assert 'id="reopen"' in refused.content.decode()
    assert reopened.url == f"/qc/reviews/{review.pk}/"
    assert decided.status_code == 302
    item = Item.objects.get()
    assert item.label == "cat"


def test_the_payload_is_shown_readably_not_as_a_python_repr(qc_actor):
    job = review_job()
    label_items(job, [["cat"], ["dog"]])
    review = Review.objects.get()
    Item.objects.update(
        payload={"text": "A cat?", "meta": {"source": "camera", "ok": True}, "_row": 3}
    )

    html = _session(qc_actor).get(f"/qc/reviews/{review.pk}/").content.decode()

    assert "A cat?" in html
    assert "{&#x27;source&#x27;" not in html
    assert "True" not in html
    assert "&quot;source&quot;: &quot;camera&quot;" in html
    assert "&quot;ok&quot;: true" in html
    assert "_row" in html  # QC sees the client's private fields, marked as such
    assert "private" in html
