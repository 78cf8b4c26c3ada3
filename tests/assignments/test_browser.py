"""The annotator page in headless Chromium: sign in with a token, label five items by
keyboard alone, with the lease countdown running and no console error."""

from __future__ import annotations

import re

import pytest

from apps.assignments.models import Label
from apps.jobs.models import Item
from apps.workforce.models import Worker
from tests.reviews.test_browser import CHROMIUM, CHROMIUM_ARGS, _console_errors, type_token
from tests.workforce.factories import JobFactory, make_items, make_pool


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_an_annotator_labels_five_items_by_keyboard(live_server, make_actor):
    playwright = pytest.importorskip("playwright.sync_api")
    job = JobFactory(policy={"min_labels": 1, "max_labels": 1, "gold_rate": 0.0})
    make_items(job, 6)
    Item.objects.filter(job=job).update(payload={"text": "Which animal?", "_truth": "dog"})
    annotator = make_actor("annotator", username="anna")
    worker = Worker.objects.get(user=annotator.user)
    make_pool(jobs=[job], workers=[worker])
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
            with page.expect_navigation(url=re.compile(r"/annotate/tasks/\d+/")):
                page.keyboard.press("Enter")  # Start labeling has the focus

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
    assert all(label.duration_ms and label.duration_ms >= 250 for label in labels)
