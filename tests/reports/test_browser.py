"""The ops pages in headless Chromium: the job, pool and worker pages open with data, their
charts are drawn by the project's own Chart.js, and nothing errs in the console."""

from __future__ import annotations

import pytest

from apps.jobs.models import Job
from apps.workforce.models import Pool
from tests.reviews.factories import label_items, review_job
from tests.reviews.test_browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    _console_errors,
    signed_in_page,
    type_token,
)


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_ops_open_job_pool_and_worker_pages_with_charts_drawn(live_server, make_actor):
    playwright = pytest.importorskip("playwright.sync_api")
    ops = make_actor("ops", username="olivia")
    job = review_job(n_items=3)
    workers = label_items(job, [["cat", "cat", "dog"], ["cat", "dog", "dog"]])
    pool = Pool.objects.filter(members=workers[0]).get()
    pages = {
        f"/dashboard/jobs/{job.pk}/": ["#chart-hourly", "#chart-sources"],
        f"/dashboard/pools/{pool.pk}/": ["#chart-accuracy"],
        f"/dashboard/workers/{workers[0].pk}/": ["#chart-history"],
    }

    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(15000)
            errors = _console_errors(page)
            external: list[str] = []
            page.on(
                "request",
                lambda r: external.append(r.url) if not r.url.startswith(live_server.url) else None,
            )
            page.goto(f"{live_server.url}/login/")
            type_token(page, ops.token)
            with page.expect_navigation():
                page.keyboard.press("Enter")
            for path, charts in pages.items():
                page.goto(f"{live_server.url}{path}")
                for selector in charts:
                    page.wait_for_selector(f"{selector}[data-drawn='1']")
                    box = page.locator(selector).bounding_box()
                    assert box is not None
                    assert box["width"] > 100
                    assert box["height"] > 100
            assert workers[0].user.username in page.text_content("h1")
            assert errors == []
            assert external == []  # everything comes from the project: no CDN
        finally:
            browser.close()


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_a_client_creates_uploads_and_launches_a_job(live_server, make_actor, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    client = make_actor("client", username="alice")
    rows = tmp_path / "pets.csv"
    rows.write_text("external_id,text,gold_label\np1,meow,\np2,woof,fish\np3,tweet,\n")

    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page, errors = signed_in_page(browser, live_server.url, client.token)
            with page.expect_navigation():
                page.click("#new-job")
            page.fill("#name", "Pets")
            page.fill("#classes", "cat\ndog\nbird")
            with page.expect_navigation():
                page.click("#create")
            assert page.text_content("#job-status") == "draft"
            page.set_input_files("#upload-file", str(rows))
            with page.expect_navigation():
                page.click("#upload-button")
            report = page.text_content("#upload-report")
            assert "2 created" in report
            assert "1 rejected" in report
            assert "p2" in page.text_content("#upload-errors")
            with page.expect_navigation():
                page.click("#launch")
            assert page.text_content("#job-status") == "running"
            assert page.is_visible("#pause")
            assert errors == []
        finally:
            browser.close()


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_a_client_makes_an_ordinal_job_by_keyboard_and_sees_only_its_fields(
    live_server, make_actor
):
    playwright = pytest.importorskip("playwright.sync_api")
    client = make_actor("client", username="alice")

    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page, errors = signed_in_page(browser, live_server.url, client.token)
            page.goto(f"{live_server.url}/dashboard/jobs/new/")
            assert page.is_visible("#classes")
            assert not page.is_visible("#levels")
            page.keyboard.type("Relevance")  # the name field has the focus
            page.focus("#kind")
            page.keyboard.press("ArrowDown")  # multi_choice
            page.keyboard.press("ArrowDown")  # ordinal
            assert page.input_value("#kind") == "ordinal"
            assert page.is_visible("#levels")
            assert not page.is_visible("#classes")
            assert not page.is_visible("#tolerance")
            page.keyboard.press("Tab")
            page.keyboard.type("bad\nfair\ngood")
            with page.expect_navigation():
                page.click("#create")
            assert page.text_content("#job-status") == "draft"
            # A bad numeric job comes back with the API's words, the chosen kind's fields shown.
            page.goto(f"{live_server.url}/dashboard/jobs/new/")
            page.fill("#name", "Ages")
            # Tags typed for another kind first: hidden, not lost, when the post is refused.
            page.select_option("#kind", "multi_choice")
            page.fill("#tags", "young, old")
            page.select_option("#kind", "numeric")
            page.fill("#minimum", "90")
            page.fill("#maximum", "10")
            page.fill("#tolerance", "2")
            with page.expect_navigation():
                page.click("#create")
            assert "minimum must be below maximum" in page.text_content("#errors")
            assert page.is_visible("#minimum")
            assert page.input_value("#minimum") == "90"
            assert not page.is_visible("#levels")
            # The message again beside the field it is about, which points to it.
            assert page.is_visible("#maximum-error")
            assert "minimum must be below maximum" in page.text_content("#maximum-error")
            assert page.get_attribute("#maximum", "aria-describedby") == "maximum-error"
            page.select_option("#kind", "multi_choice")
            assert page.input_value("#tags") == "young, old"
            # The one console message is the refused post's 400.
            assert len(errors) <= 1
            assert all("400" in e for e in errors)
        finally:
            browser.close()

    job = Job.objects.get()
    assert job.name == "Relevance"
    assert job.label_schema == {"kind": "ordinal", "levels": ["bad", "fair", "good"]}
