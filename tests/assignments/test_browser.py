"""The annotator page in headless Chromium: sign in with a token, choose a job and label five
of its items by keyboard alone, with the lease countdown running and no console error."""

from __future__ import annotations

import re

import pytest

from apps.assignments.models import Assignment, Label
from apps.jobs.models import Item
from apps.workforce.models import Worker
from tests.reviews.test_browser import CHROMIUM, CHROMIUM_ARGS, _console_errors, type_token
from tests.workforce.factories import JobFactory, make_items, make_pool


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_an_annotator_chooses_a_job_and_labels_five_items_by_keyboard(live_server, make_actor):
    playwright = pytest.importorskip("playwright.sync_api")
    policy = {"min_labels": 1, "max_labels": 1, "gold_rate": 0.0}
    # "Any job" would serve the first job (the engine tries jobs in id order): the annotator
    # chooses the second.
    other = JobFactory(name="Plants", policy=policy)
    make_items(other, 6, prefix="plant")
    Item.objects.filter(job=other).update(payload={"text": "Which plant?"})
    job = JobFactory(name="Animals", policy=policy)
    make_items(job, 6)
    Item.objects.filter(job=job).update(payload={"text": "Which animal?", "_truth": "dog"})
    annotator = make_actor("annotator", username="anna")
    worker = Worker.objects.get(user=annotator.user)
    make_pool(jobs=[other, job], workers=[worker])
    keys = ["1", "2", "3", "2", "1"]

    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(15000)
            errors = _console_errors(page)
            page.goto(f"{live_server.url}/login/")
            type_token(page, annotator.token)
            with page.expect_navigation(url=re.compile(r"/annotate/$")):
                page.keyboard.press("Enter")
            assert page.text_content("#labels-today") == "0"
            assert page.text_content(f"#job-{job.pk} .left") == "6 items left for you"
            # Start labeling takes the focus once the page is there (autofocus): a key pressed
            # before then goes nowhere. Shift+Tab goes back to the list's checked choice (any
            # job), the arrow keys move down the list to the chosen job, Enter starts.
            page.wait_for_function("document.activeElement?.id === 'start-button'")
            page.keyboard.press("Shift+Tab")
            assert page.evaluate("document.activeElement.value") == "any"
            page.keyboard.press("ArrowDown")
            page.keyboard.press("ArrowDown")
            assert page.is_checked(f"#job-{job.pk} input")
            with page.expect_navigation(url=re.compile(r"/annotate/tasks/\d+/")):
                page.keyboard.press("Enter")

            for key in keys:
                assert "Which animal?" in page.text_content("#item")
                assert "_truth" not in page.content()
                assert re.fullmatch(r"\d+ min \d+ s|\d+ s", page.text_content("#countdown"))
                page.wait_for_timeout(300)  # a person takes a moment; durations are recorded
                with page.expect_navigation(url=re.compile(r"/annotate/")):
                    page.keyboard.press(key)
            assert page.text_content("#labels-today") == "5"
            assert errors == []
        finally:
            browser.close()

    labels = list(Label.objects.filter(worker=worker).order_by("id"))
    assert [label.value for label in labels] == [["cat", "dog", "bird"][int(k) - 1] for k in keys]
    # Every task came from the chosen job: the first, then each one after a submit.
    assert {label.job_id for label in labels} == {job.pk}
    assert set(Assignment.objects.filter(worker=worker).values_list("job_id", flat=True)) == {
        job.pk
    }
    assert all(label.duration_ms and label.duration_ms >= 250 for label in labels)
