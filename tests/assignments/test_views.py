"""The annotator page without a browser: landing, the lease-answer-next loop, skip, release,
idle reasons in words, own stats, and what is never shown (ids, private fields)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from apps.assignments.models import Assignment, Label
from apps.assignments.records import item_send_to_expert
from apps.jobs.models import Item
from apps.workforce.models import Worker
from tests.workforce.factories import JobFactory, make_items, make_pool

pytestmark = pytest.mark.django_db


def _session(actor) -> Client:
    client = Client()
    client.force_login(actor.user)
    return client


def _annotator(make_actor, job, role="annotator"):
    actor = make_actor(role)
    worker = Worker.objects.get(user=actor.user)
    make_pool(jobs=[job], workers=[worker])
    return actor, worker


@pytest.fixture
def job():
    job = JobFactory(policy={"min_labels": 1, "max_labels": 1, "gold_rate": 0.0})
    make_items(job, 3)
    Item.objects.filter(job=job).update(payload={"text": "Which animal?", "_truth": "cat"})
    return job


def test_an_annotator_signing_in_lands_on_the_labeling_page(client, make_actor, job):
    actor, _ = _annotator(make_actor, job)

    signed_in = client.post("/login/", {"token": actor.token})
    home = client.get(signed_in.url)
    page = client.get(home.url)

    assert home.url == "/annotate/"
    assert page.status_code == 200
    assert 'id="start-button"' in page.content.decode()
    assert 'href="/annotate/"' in page.content.decode()  # the header links the page


def test_start_label_and_move_on_to_the_next(make_actor, job):
    actor, worker = _annotator(make_actor, job)
    browser = _session(actor)

    first = browser.post("/annotate/next/")
    page = browser.get(first.url)
    assignment = Assignment.objects.get(worker=worker)
    answered = browser.post(
        f"/annotate/tasks/{assignment.pk}/submit/", {"label": "dog", "duration_ms": "2300"}
    )
    after = browser.get(answered.url)

    assert first.url == f"/annotate/tasks/{assignment.pk}/"
    html = page.content.decode()
    assert "Which animal?" in html
    assert "Pick the animal." in html  # the instructions
    assert "<kbd>2</kbd> dog" in html
    assert 'id="countdown"' in html
    for hidden in ("_truth", "it-0", "it-1", "it-2"):  # private fields, the client's ids
        assert hidden not in html
    label = Label.objects.get(worker=worker)
    assert (label.value, label.duration_ms) == ("dog", 2300)
    second = Assignment.objects.exclude(pk=assignment.pk).get(worker=worker)
    assert answered.url == f"/annotate/tasks/{second.pk}/"
    assert 'id="labels-today">1<' in after.content.decode()


def test_skip_moves_on_and_release_stops(make_actor, job):
    actor, worker = _annotator(make_actor, job)
    browser = _session(actor)
    browser.post("/annotate/next/")
    first = Assignment.objects.get(worker=worker)

    skipped = browser.post(f"/annotate/tasks/{first.pk}/skip/")
    second = Assignment.objects.get(worker=worker, state="leased")
    released = browser.post(f"/annotate/tasks/{second.pk}/release/")
    start = browser.get(released.url)

    assert skipped.url == f"/annotate/tasks/{second.pk}/"
    assert released.url == "/annotate/?released=1"
    assert 'id="released"' in start.content.decode()
    assert dict(Assignment.objects.values_list("pk", "state")) == {
        first.pk: "skipped",
        second.pk: "released",
    }


def test_no_work_is_said_in_words_with_when_to_come_back(make_actor):
    actor = make_actor("annotator")  # in no pool: no job is open to them
    browser = _session(actor)

    idle = browser.post("/annotate/next/")
    page = browser.get(idle.url)

    assert idle.url == "/annotate/?idle=no_open_job&retry=60"
    html = page.content.decode()
    assert "No running job is open to your pools right now." in html
    assert 'id="retry" data-seconds="60"' in html


def test_a_late_answer_says_the_lease_ran_out(make_actor, job):
    actor, worker = _annotator(make_actor, job)
    browser = _session(actor)
    browser.post("/annotate/next/")
    assignment = Assignment.objects.get(worker=worker)
    past = timezone.now() - timedelta(minutes=30)
    Assignment.objects.filter(pk=assignment.pk).update(
        leased_at=past, expires_at=past + timedelta(seconds=1)
    )

    late = browser.post(f"/annotate/tasks/{assignment.pk}/submit/", {"label": "cat"})
    task_page = browser.get(f"/annotate/tasks/{assignment.pk}/")

    assert late.status_code == 409
    assert 'id="error"' in late.content.decode()
    assert task_page.url == "/annotate/?ended=1"
    assert "its time ran out" in browser.get(task_page.url).content.decode()
    assert not Label.objects.exists()


def test_experts_get_the_same_page_for_their_escalations(make_actor, job):
    actor, worker = _annotator(make_actor, job, role="expert")
    item = Item.objects.filter(job=job).order_by("id").last()
    item_send_to_expert(item_id=item.pk)
    browser = _session(actor)

    leased = browser.post("/annotate/next/")
    page = browser.get(leased.url)

    assert Assignment.objects.get(worker=worker).item_id == item.pk
    assert page.status_code == 200
    assert "<kbd>1</kbd> cat" in page.content.decode()


def test_other_roles_get_a_page_that_says_so_not_a_bare_403(qc_actor, make_actor, job):
    _, worker = _annotator(make_actor, job)
    browser = _session(qc_actor)
    browser.post("/qc/")  # any page: the session is a QC person's

    response = browser.get("/annotate/")
    foreign = browser.get("/annotate/tasks/1/")

    assert response.status_code == 403
    assert "This page is not for your role" in response.content.decode()
    assert 'href="/qc/"' in response.content.decode()
    assert foreign.status_code == 403
