"""Labels that are no class name (fractional, NaN, unknown) are a 400 naming the assignment
(the annotator's handle on the item; item ids are not sent to annotators)."""

from __future__ import annotations

import pytest

from apps.assignments.models import Label
from tests.workforce.factories import JobFactory, make_items

from .test_api import NEXT, _annotator


@pytest.fixture
def job():
    job = JobFactory()
    make_items(job, 2)
    return job


@pytest.mark.parametrize(
    "raw",
    [b'{"label": 1.5}', b'{"label": "NaN"}', b'{"label": "Cat"}', b'{"label": 0}'],
    ids=["fractional", "nan-string", "unknown-name", "class-index"],
)
def test_submit_of_a_label_that_is_no_class_is_400_naming_the_assignment(make_actor, job, raw):
    actor, _ = _annotator(make_actor, job)
    task = actor.client.post(NEXT).json()

    response = actor.client.generic(
        "POST", f"/api/v1/assignments/{task['id']}/submit/", raw, content_type="application/json"
    )

    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert error["details"]["assignment"] == task["id"]
    assert f"assignment {task['id']}" in error["message"]
    assert Label.objects.count() == 0


def test_submit_of_a_bare_nan_is_a_parse_error(make_actor, job):
    # NaN is not JSON: the body is rejected before any label is read.
    actor, _ = _annotator(make_actor, job)
    task = actor.client.post(NEXT).json()

    response = actor.client.generic(
        "POST",
        f"/api/v1/assignments/{task['id']}/submit/",
        b'{"label": NaN}',
        content_type="application/json",
    )

    assert (response.status_code, response.json()["error"]["code"]) == (400, "parse_error")
    assert Label.objects.count() == 0
