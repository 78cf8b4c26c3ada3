"""The answer kinds on the pages, in headless Chromium: an annotator answers one item of each
kind (a tag set and a level by keyboard, a number typed, boxes drawn with the mouse), and QC
corrects a disputed item's boxes on the review page."""

from __future__ import annotations

import contextlib
import json
import re

import pytest

from apps.assignments.models import Label
from apps.jobs.models import Item
from apps.reviews.models import Review, ReviewDecision
from apps.workforce.models import Worker
from tests.reviews.test_browser import CHROMIUM, CHROMIUM_ARGS, signed_in_page
from tests.workforce.factories import JobFactory, make_pool

# A 4 x 3 grey PNG: the canvas draws it stretched to the schema's image size.
IMAGE = (
    "data:image/png;base64,"
    "iVBORw0KGgoAAAANSUhEUgAAAAQAAAADCAAAAACRn/EaAAAADklEQVR4nGNoAAIGOAEALQ8GAa0C414AAAAASUVORK5CYII="
)
SCHEMAS = {
    "multi_choice": {"kind": "multi_choice", "tags": ["indoor", "people", "animal"]},
    "ordinal": {"kind": "ordinal", "levels": ["bad", "fair", "good", "great"]},
    "numeric": {"kind": "numeric", "minimum": 0, "maximum": 100, "unit": "years", "tolerance": 5},
    "bbox": {"kind": "bbox", "classes": ["car", "person"], "width": 400, "height": 300},
}


def _job(kind: str, **policy):
    job = JobFactory(
        label_schema=SCHEMAS[kind],
        policy={"min_labels": 1, "max_labels": 1, "gold_rate": 0.0, **policy},
    )
    Item.objects.create(
        job=job,
        external_id=f"{kind}-1",
        payload={"text": f"A {kind} item", "image": IMAGE},
        labels_needed=1,
    )
    return job


@contextlib.contextmanager
def _signed_in(url: str, token: str):
    """A headless Chromium page signed in with the token, and the list its console errors
    go to; the browser closes on leaving."""
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield signed_in_page(browser, url, token, viewport={"width": 1000, "height": 900})
        finally:
            browser.close()


def _drag(page, box, start: tuple[float, float], end: tuple[float, float]) -> None:
    """Press, move in steps and release the mouse between two points of the canvas, given
    in image pixels (the canvas may be shown smaller than the image)."""
    scale = box["width"] / SCHEMAS["bbox"]["width"]
    page.mouse.move(box["x"] + start[0] * scale, box["y"] + start[1] * scale)
    page.mouse.down()
    page.mouse.move(box["x"] + end[0] * scale, box["y"] + end[1] * scale, steps=8)
    page.mouse.up()


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_an_annotator_answers_one_item_of_each_kind(live_server, make_actor):
    jobs = {kind: _job(kind) for kind in SCHEMAS}
    annotator = make_actor("annotator", username="kim")
    worker = Worker.objects.get(user=annotator.user)
    make_pool(jobs=list(jobs.values()), workers=[worker])
    done: list[str] = []

    with _signed_in(live_server.url, annotator.token) as (page, errors):
        # Start labeling takes the focus once the page is there (autofocus): a key pressed
        # before then goes nowhere.
        page.wait_for_function("document.activeElement?.id === 'start-button'")
        with page.expect_navigation(url=re.compile(r"/annotate/tasks/\d+/")):
            page.keyboard.press("Enter")
        for _ in SCHEMAS:
            kind = page.get_attribute("#answer-widget", "data-kind")
            done.append(kind)
            if kind == "multi_choice":
                page.keyboard.press("1")
                page.keyboard.press("3")
                assert page.is_checked("#answer-tags input[value=animal]")
                submit = lambda: page.keyboard.press("Enter")  # noqa: E731
            elif kind == "ordinal":
                submit = lambda: page.keyboard.press("3")  # noqa: E731
            elif kind == "numeric":
                page.keyboard.type("42.5")  # the field has the focus
                submit = lambda: page.keyboard.press("Enter")  # noqa: E731
            else:
                canvas = page.locator("#answer-canvas")
                box = canvas.bounding_box()
                _drag(page, box, (40, 30), (200, 150))
                page.keyboard.press("2")  # the next box is a person
                _drag(page, box, (300, 60), (250, 280))  # drawn right to left
                _drag(page, box, (10, 10), (10.5, 10.5))  # a click is no box
                assert page.locator("#answer-boxes li").count() == 2
                submit = lambda: page.keyboard.press("Enter")  # noqa: E731
            with page.expect_navigation(url=re.compile(r"/annotate/")):
                submit()
        assert page.text_content("#labels-today") == "4"
        assert errors == []

    assert sorted(done) == sorted(SCHEMAS)
    values = {
        label.job.kind: json.loads(label.value)
        for label in Label.objects.filter(worker=worker).select_related("job")
    }
    assert values["multi_choice"] == ["indoor", "animal"]
    assert values["ordinal"] == "good"
    assert values["numeric"] == 42.5
    car, person = values["bbox"]
    assert car["class"] == "car"
    assert car["box"] == pytest.approx([40, 30, 160, 120], abs=2)
    assert person["class"] == "person"
    assert person["box"] == pytest.approx([250, 60, 50, 220], abs=2)
    # One answer at max_labels 1 is never confident enough: each item waits for QC.
    assert set(Item.objects.values_list("state", flat=True)) == {"review"}


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_qc_corrects_boxes_on_the_review_page(live_server, make_actor, client_actor):
    job = _job("bbox")
    annotator = make_actor("annotator")
    worker = Worker.objects.get(user=annotator.user)
    make_pool(jobs=[job], workers=[worker])
    task = annotator.client.post("/api/v1/assignments/next/", {}, format="json").json()
    answer = [
        {"box": [20, 20, 100, 80], "class": "car"},
        {"box": [200, 100, 50, 50], "class": "car"},
    ]
    annotator.client.post(
        f"/api/v1/assignments/{task['id']}/submit/", {"label": answer}, format="json"
    )
    review = Review.objects.get(job=job, status="open")  # one answer: never confident
    qc = make_actor("qc", username="quinn")

    with _signed_in(live_server.url, qc.token) as (page, errors):
        page.goto(f"{live_server.url}/qc/reviews/{review.pk}/")
        assert page.get_attribute("#answer-widget", "data-kind") == "bbox"
        # The current result (the one worker's boxes) is where QC starts.
        assert page.locator("#answer-boxes li").count() == 2
        page.keyboard.press("u")  # the second box was no car
        page.keyboard.press("2")
        _drag(page, page.locator("#answer-canvas").bounding_box(), (200, 100), (250, 200))
        with page.expect_navigation(url=re.compile(r"/qc/")):
            page.keyboard.press("Enter")
        assert errors == []

    decision = ReviewDecision.objects.get(review=review)
    first, second = json.loads(decision.label)
    assert first == answer[0]
    assert second["class"] == "person"
    assert second["box"] == pytest.approx([200, 100, 50, 100], abs=2)
    item = Item.objects.get(job=job)
    assert (item.state, item.source) == ("settled", "qc")
