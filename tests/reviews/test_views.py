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
