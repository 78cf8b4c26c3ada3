"""The QC page in headless Chromium: sign in with a token, work through the queue by
keyboard alone, then read the results through the API."""

from __future__ import annotations

import json
import re
from urllib.parse import urlparse

import pytest

from apps.reviews.models import Review, ReviewDecision
from tests.reviews.factories import label_items, review_job

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_qc_works_through_three_reviews_by_keyboard_alone(live_server, make_actor):
    playwright = pytest.importorskip("playwright.sync_api")
    qc = make_actor("qc", username="quinn")
    client = make_actor("client", username="alice")
    job = review_job(n_items=3)
    label_items(job, [["cat"] * 3, ["dog"] * 3])
    assert Review.objects.filter(status="open").count() == 3
    chosen: dict[str, str] = {}

    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(15000)
            page.goto(f"{live_server.url}/login/")
            type_token(page, qc.token)
            with page.expect_navigation():
                page.keyboard.press("Enter")
            assert page.url == f"{live_server.url}/qc/"
            assert "3 open" in page.text_content("#start")

            with page.expect_navigation(url=re.compile(r"/qc/reviews/\d+/")):
                page.keyboard.press("Enter")

            # First review: a number key decides and moves on.
            chosen[page.text_content("#external-id")] = "dog"
            with page.expect_navigation(url=re.compile(r"/qc/reviews/\d+/")):
                page.keyboard.press("2")

            # Second: n opens the note, Enter keeps it, the number key decides.
            chosen[page.text_content("#external-id")] = "cat"
            page.keyboard.press("n")
            page.keyboard.type("Pointy ears, so a cat.")
            page.keyboard.press("Enter")
            assert page.text_content("#status").startswith("Note kept")
            with page.expect_navigation(url=re.compile(r"/qc/reviews/\d+/")):
                page.keyboard.press("1")

            # Third: t tags a guideline gap, g makes it gold, then decide.
            chosen[page.text_content("#external-id")] = "bird"
            page.keyboard.press("t")
            page.keyboard.press("g")
            with page.expect_navigation(url=re.compile(r"/qc/\?done=1")):
                page.keyboard.press("3")
            assert page.is_visible("#queue-done")
        finally:
            browser.close()

    assert sorted(chosen) == ["it-0", "it-1", "it-2"]
    response = client.client.get(f"/api/v1/jobs/{job.pk}/results/")
    assert response.status_code == 200
    rows = json.loads(b"".join(response.streaming_content))
    assert {r["external_id"]: (r["label"], r["source"], r["status"]) for r in rows} == {
        external_id: (value, "qc", "settled") for external_id, value in chosen.items()
    }
    notes = dict(ReviewDecision.objects.values_list("item__external_id", "note"))
    by_label = {value: external_id for external_id, value in chosen.items()}
    assert notes[by_label["cat"]] == "Pointy ears, so a cat."
    third = ReviewDecision.objects.get(item__external_id=by_label["bird"])
    assert (third.tags, third.make_gold) == (["guideline_gap"], True)
    assert not Review.objects.filter(status="open").exists()


def _console_errors(page) -> list[str]:
    """Collect the page's console errors and uncaught exceptions into a list."""
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    return errors


def type_token(page, token: str) -> None:
    """Type the token on the login page once its field has the focus (autofocus): keys
    pressed before then go nowhere, and a partial token is refused with a 400."""
    page.wait_for_function("document.activeElement?.id === 'token'")
    page.keyboard.type(token)


def signed_in_page(browser, base_url: str, token: str, *, viewport: dict | None = None):
    """A new page (of `viewport`'s size, if given) signed in with `token` on the login page
    (by keyboard), and the list its console errors go to."""
    page = browser.new_page(**({"viewport": viewport} if viewport else {}))
    page.set_default_timeout(15000)
    errors = _console_errors(page)
    page.goto(f"{base_url}/login/")
    type_token(page, token)
    with page.expect_navigation():
        page.keyboard.press("Enter")
    return page, errors


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_qc_keeps_a_decision_and_its_note_across_an_expired_session(live_server, make_actor):
    playwright = pytest.importorskip("playwright.sync_api")
    qc = make_actor("qc", username="quinn")
    job = review_job()
    label_items(job, [["cat"], ["dog"]])
    review = Review.objects.get()

    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context()
            page = context.new_page()
            page.set_default_timeout(15000)
            errors = _console_errors(page)
            page.goto(f"{live_server.url}/login/?next=/qc/reviews/{review.pk}/")
            type_token(page, qc.token)
            with page.expect_navigation():
                page.keyboard.press("Enter")
            assert urlparse(page.url).path == f"/qc/reviews/{review.pk}/"
            page.keyboard.press("n")
            page.keyboard.type("The ears say dog.")
            page.keyboard.press("Enter")
            page.keyboard.press("t")

            # The session ends while the person writes (the CSRF cookie stays, as it does).
            kept = [c for c in context.cookies() if c["name"] != "sessionid"]
            context.clear_cookies()
            context.add_cookies(kept)
            with page.expect_navigation(url=re.compile(r"/login/")):
                page.keyboard.press("2")
            type_token(page, qc.token)
            with page.expect_navigation(url=re.compile(rf"/qc/reviews/{review.pk}/")):
                page.keyboard.press("Enter")

            assert page.is_visible("#kept")
            assert page.input_value("#note") == "The ears say dog."
            assert page.is_checked("#tag-guideline_gap")
            assert "Nothing is saved yet" in page.text_content("#kept")
            with page.expect_navigation(url=re.compile(r"/qc/\?done=1")):
                page.keyboard.press("Enter")  # the kept decision's button has the focus
            assert errors == []
        finally:
            browser.close()

    decision = ReviewDecision.objects.get()
    assert (decision.label, decision.note, decision.tags) == (
        "dog",
        "The ears say dog.",
        ["guideline_gap"],
    )
