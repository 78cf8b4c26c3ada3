"""The annotator page without a browser: landing, the lease-answer-next loop, skip, release,
idle reasons in words, own stats, what is never shown (ids, private fields), and choosing
the job the tasks come from."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from apps.assignments.models import Assignment, Label
from apps.assignments.records import item_send_to_expert
from apps.assignments.selectors import job_choices_for_worker
from apps.common.caches import clear_all_local
from apps.jobs.models import Item, Job
from apps.workforce.models import Worker
from tests.assignments.helpers import lease_and_label
from tests.workforce.factories import JobFactory, make_items, make_pool, make_worker

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


# --------------------------------------------------------------------------- choosing a job


def _pick_jobs(make_actor, *, role="annotator"):
    """Three running jobs open to the annotator's pool (first, second: single choice, 3
    items; tags: 2 items and a gold one), and two that are not open to them: one running
    but opened to another pool, one opened to theirs but paused."""
    policy = {"min_labels": 1, "max_labels": 1, "gold_rate": 0.0}
    first = JobFactory(name="Animals A", policy=policy)
    second = JobFactory(name="Animals B", policy=policy)
    tags = JobFactory(
        name="Scene tags",
        policy=policy,
        label_schema={"kind": "multi_choice", "tags": ["indoor", "people"]},
    )
    elsewhere = JobFactory(name="Not yours", policy=policy)
    paused = JobFactory(name="Paused one", policy=policy)
    for job in (first, second, elsewhere, paused):
        make_items(job, 3, prefix=f"j{job.pk}")
    make_items(tags, 2, gold=["[]"], prefix="tags")
    actor = make_actor(role)
    worker = Worker.objects.get(user=actor.user)
    make_pool(jobs=[first, second, tags, paused], workers=[worker])
    make_pool(jobs=[elsewhere], workers=[make_worker()])
    Job.objects.filter(pk=paused.pk).update(status=Job.Status.PAUSED)
    jobs = {"first": first, "second": second, "tags": tags, "elsewhere": elsewhere}
    return actor, worker, {**jobs, "paused": paused}


def _label_in_page(browser, url: str, label: str = "cat"):
    """Answer the task at `url` on the page; the response of the submit (a redirect)."""
    assignment_id = int(url.rstrip("/").rsplit("/", 1)[1])
    return browser.post(f"/annotate/tasks/{assignment_id}/submit/", {"label": label})


def test_the_start_page_lists_the_jobs_open_to_the_worker_with_what_is_left(make_actor):
    actor, worker, jobs = _pick_jobs(make_actor)
    other = make_worker()
    make_pool(jobs=[jobs["second"]], workers=[other])
    # One item of the first job is the worker's already; one of the second is full (another
    # worker's label was its one): 2 left in each. The tags job's gold item is not counted.
    lease_and_label(worker, job=jobs["first"], label="cat")
    lease_and_label(other, job=jobs["second"], label="dog")
    browser = _session(actor)

    page = browser.get("/annotate/")

    html = page.content.decode()
    listed = re.findall(r'<label id="job-(\d+)" data-left="(\d+)"', html)
    assert listed == [
        (str(jobs["first"].pk), "2"),
        (str(jobs["second"].pk), "2"),
        (str(jobs["tags"].pk), "2"),
    ]
    for name in ("Not yours", "Paused one"):
        assert name not in html
    assert 'value="any" checked' in html  # any job stays the default: Enter starts it
    assert "2 items left for you" in html
    assert '<span class="job-kind">single choice</span>' in html
    assert '<span class="job-kind">tags</span>' in html
    assert '<span class="job-pay">0.05</span> a label' in html
    assert "0.50" not in html  # the expert price is not the annotator's


def test_an_expert_sees_their_own_price_and_their_escalations_counted(make_actor):
    actor, worker, jobs = _pick_jobs(make_actor, role="expert")
    crowd = make_worker()
    make_pool(jobs=[jobs["first"]], workers=[crowd])
    item_id = lease_and_label(crowd, job=jobs["first"], label="cat")
    item_send_to_expert(item_id=item_id)

    html = _session(actor).get("/annotate/").content.decode()

    assert f'<label id="job-{jobs["first"].pk}" data-left="3"' in html
    assert '<span class="job-pay">0.50</span> a label' in html
    assert "0.05" not in html


def test_a_job_with_nothing_left_for_the_worker_cannot_be_chosen(make_actor):
    actor, worker, jobs = _pick_jobs(make_actor)
    for _ in range(3):
        lease_and_label(worker, job=jobs["second"], label="cat")
    capped = jobs["first"]
    capped.policy = {**capped.policy, "max_items_per_worker": 1}
    capped.save(update_fields=["policy"])
    clear_all_local()  # the save's invalidation runs on commit, which this test never makes
    lease_and_label(worker, job=capped, label="cat")

    html = _session(actor).get("/annotate/").content.decode()

    second = re.search(rf'<label id="job-{jobs["second"].pk}".*?</label>', html, re.S).group(0)
    assert 'class="done"' in second
    assert re.search(r'<input type="radio" name="job" value="\d+" disabled>', second)
    assert "nothing left for you" in second
    first = re.search(rf'<label id="job-{capped.pk}".*?</label>', html, re.S).group(0)
    assert "disabled" in first
    assert "you reached its limit" in first


def test_a_chosen_job_serves_every_task_until_it_has_nothing_left(make_actor):
    actor, worker, jobs = _pick_jobs(make_actor)
    second = jobs["second"]
    browser = _session(actor)

    response = browser.post("/annotate/next/", {"job": str(second.pk)})
    seen = []
    while response.url.startswith("/annotate/tasks/"):
        seen.append(int(response.url.rstrip("/").rsplit("/", 1)[1]))
        response = _label_in_page(browser, response.url)
    page = browser.get(response.url)

    # Three tasks, all from the chosen job, though the first job (tried first by "any
    # job") had work all along; then the worker is told, not moved on.
    assert len(seen) == 3
    assert set(Assignment.objects.filter(pk__in=seen).values_list("job_id", flat=True)) == {
        second.pk
    }
    assert not Assignment.objects.filter(worker=worker).exclude(job=second).exists()
    assert response.url == f"/annotate/?idle=exhausted&job={second.pk}"
    html = page.content.decode()
    assert "everything that is left for you in “Animals B”" in html
    assert "Choose another job below" in html
    assert 'value="any" checked' in html  # the finished job is no longer the choice
    assert f'<label id="job-{second.pk}" data-left="0" class="done">' in html
    # Going on is the worker's choice: "any job" now serves the first job.
    again = browser.post("/annotate/next/", {"job": "any"})
    assert Assignment.objects.get(pk=int(again.url.rstrip("/").rsplit("/", 1)[1])).job_id == (
        jobs["first"].pk
    )


def test_the_choice_is_kept_by_a_skip_a_release_and_the_start_page(make_actor):
    actor, worker, jobs = _pick_jobs(make_actor)
    second = jobs["second"]
    browser = _session(actor)

    first = browser.post("/annotate/next/", {"job": str(second.pk)})
    skipped = browser.post(first.url + "skip/")
    released = browser.post(skipped.url + "release/")
    page = browser.get(released.url)
    resumed = browser.post("/annotate/next/")  # the task page's "new task": no job field

    assert skipped.url.startswith("/annotate/tasks/")
    assert resumed.url.startswith("/annotate/tasks/")
    assert [a.job_id for a in Assignment.objects.filter(worker=worker).order_by("id")] == [
        second.pk
    ] * 3
    # One item of the job is left for the worker: the radio of the job is the one checked.
    html = page.content.decode()
    assert f'<label id="job-{second.pk}" data-left="1"' in html
    assert f'name="job" value="{second.pk}" checked' in html
    assert 'value="any" checked' not in html


@pytest.mark.parametrize(
    "value",
    ["not-a-number", "-1", "0", "1.5", "99999999999999999999999", "١٢", " 1"],
    ids=["word", "negative", "zero", "fraction", "too-big", "arabic-digits", "space"],
)
def test_a_bogus_job_is_refused_in_words(make_actor, value):
    actor, worker, _ = _pick_jobs(make_actor)
    browser = _session(actor)

    refused = browser.post("/annotate/next/", {"job": value})
    page = browser.get(refused.url)

    assert refused.url == "/annotate/?refused=1"
    assert page.status_code == 200
    assert "That job is not open to you" in page.content.decode()
    assert not Assignment.objects.filter(worker=worker).exists()


@pytest.mark.parametrize("which", ["elsewhere", "paused", "missing"])
def test_a_job_not_open_to_the_worker_is_refused_and_serves_nothing(make_actor, which):
    actor, worker, jobs = _pick_jobs(make_actor)
    job_id = jobs[which].pk if which in jobs else Job.objects.order_by("-pk")[0].pk + 100
    browser = _session(actor)

    refused = browser.post("/annotate/next/", {"job": str(job_id)})
    page = browser.get(refused.url)

    assert refused.url == "/annotate/?refused=1"
    assert 'id="refused"' in page.content.decode()
    assert not Assignment.objects.filter(worker=worker).exists()
    assert 'value="any" checked' in page.content.decode()


def test_a_chosen_job_paused_while_labeling_is_refused_not_swapped(make_actor):
    actor, worker, jobs = _pick_jobs(make_actor)
    second = jobs["second"]
    browser = _session(actor)
    first = browser.post("/annotate/next/", {"job": str(second.pk)})
    Job.objects.filter(pk=second.pk).update(status=Job.Status.PAUSED)
    clear_all_local()  # another process's pause: the open-jobs cache hears of it

    moved_on = browser.post(first.url + "skip/")
    page = browser.get(moved_on.url)

    assert moved_on.url == "/annotate/?refused=1"
    assert 'id="refused"' in page.content.decode()
    assert list(Assignment.objects.filter(worker=worker).values_list("job_id", flat=True)) == [
        second.pk
    ]


def test_the_job_list_takes_two_queries_however_many_jobs(
    make_actor, django_assert_max_num_queries
):
    actor = make_actor("annotator")
    worker = Worker.objects.get(user=actor.user)
    browser = _session(actor)
    counts = {}
    lefts = {}
    for n_jobs in (1, 6):
        jobs = [JobFactory() for _ in range(n_jobs - Job.objects.count())]
        for job in jobs:
            make_items(job, 4, prefix=f"j{job.pk}")
        make_pool(jobs=jobs, workers=[worker])
        if n_jobs == 1:
            lease_and_label(worker, job=jobs[0], label="cat")
        clear_all_local()

        with django_assert_max_num_queries(2):
            lefts[n_jobs] = [c.left for c in job_choices_for_worker(worker=worker)]
        clear_all_local()
        with CaptureQueriesContext(connection) as page_queries:
            page = browser.get("/annotate/")
        counts[n_jobs] = len(page_queries)
        assert page.content.decode().count('<input type="radio" name="job"') == n_jobs + 1

    assert lefts == {1: [3], 6: [3, 4, 4, 4, 4, 4]}
    # The page's other reads (session, user, sidebar, live lease) do not grow with the list.
    assert counts[6] == counts[1]
