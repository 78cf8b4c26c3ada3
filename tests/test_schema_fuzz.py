"""Schema-driven fuzzing: schemathesis runs every operation of /api/schema/ in-process.

Each operation gets a bounded number of generated requests (valid and invalid, NUL
characters included), sent through the WSGI app with a real token of the role the endpoint
is for, against seeded data that the path ids point at half of the time. Every answer must
be below 500 and conform to the schema: a documented status, content type, headers and
body (errors included, through the `4XX` response every operation documents). A 500 is a
bug.
"""

from __future__ import annotations

import os

import pytest
import schemathesis
from django.core import signals
from django.db import close_old_connections
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from apps.pipeline.next import assignment_next
from apps.reviews.models import Review
from config.wsgi import application
from tests.reviews.factories import label_items, review_job
from tests.workforce.factories import make_items, make_pool

# Bounded so the whole run stays within about three minutes on two shared cores; raise it
# locally (SCHEMA_FUZZ_EXAMPLES=200) for a deeper search.
MAX_EXAMPLES = int(os.environ.get("SCHEMA_FUZZ_EXAMPLES", "25"))
# CI runs the same examples every time; SCHEMA_FUZZ_RANDOM=1 explores new ones.
DERANDOMIZE = os.environ.get("SCHEMA_FUZZ_RANDOM", "") != "1"
CHECKS = [
    schemathesis.checks.not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]


def _role_for(path: str) -> str:
    if path.startswith(("/api/v1/assignments/", "/api/v1/feedback/")):
        return "annotator"
    if path.startswith("/api/v1/reviews/"):
        return "qc"
    if path.startswith(("/api/v1/workers/", "/api/v1/pools/")) or path.endswith("/pools/"):
        return "ops"
    return "client"


@pytest.fixture
def seeded(make_actor) -> dict:
    """A running job with items, three open reviews, a live lease, a pool and a worker, and
    one token per role; returns what the path parameters may point at."""
    actors = {role: make_actor(role) for role in ("client", "ops", "qc", "annotator")}
    job = review_job(n_items=6)
    make_items(job, 0, gold=["cat", "dog"])
    label_items(job, [["cat"] * 3, ["dog"] * 3])
    worker = actors["annotator"].user.worker
    pool = make_pool(jobs=[job], workers=[worker])
    lease = assignment_next(worker=worker, job_id=job.pk)
    return {
        "tokens": {role: actor.token for role, actor in actors.items()},
        "ids": {
            "job_id": job.pk,
            "assignment_id": lease.id,
            "review_id": Review.objects.order_by("id").values_list("id", flat=True).first(),
            "worker_id": worker.pk,
            "pool_id": pool.pk,
            "external_id": "it-0",
        },
    }


@pytest.fixture
def api_schema(seeded):
    # As Django's test client does: a request must not close the test's connection (and
    # with it the transaction that holds the seeded rows).
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", application)
    schema.config.generation.update(
        max_examples=MAX_EXAMPLES, deterministic=DERANDOMIZE, no_shrink=True
    )
    ids = seeded["ids"]

    @schema.hook
    def flatmap_path_parameters(context, path_parameters):
        known = {name: ids[name] for name in path_parameters or () if name in ids}
        if not known:
            return st.just(path_parameters)
        return st.sampled_from([path_parameters, {**path_parameters, **known}])

    yield schema
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(
    deadline=None,
    database=None,
    derandomize=DERANDOMIZE,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def test_every_operation_answers_below_500_and_as_documented(case, seeded):
    token = seeded["tokens"][_role_for(case.path)]

    response = case.call(headers={"Authorization": f"Token {token}"})

    case.validate_response(response, checks=CHECKS)
