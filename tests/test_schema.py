"""The OpenAPI schema: generated without a warning, one component per serializer, and the
request bodies that once collided documented as what they are (issue F7, finding 8)."""

from __future__ import annotations

import pytest
from drf_spectacular.drainage import GENERATOR_STATS
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.validation import validate_schema


@pytest.fixture(scope="module")
def schema() -> dict:
    generated = SchemaGenerator().get_schema(request=None, public=True)
    # get_schema starts by clearing the stats: what is there now is this run's.
    warnings = dict(GENERATOR_STATS._warn_cache)
    errors = dict(GENERATOR_STATS._error_cache)
    assert not warnings, "\n".join(warnings)
    assert not errors, "\n".join(errors)
    return generated


def _request_properties(schema: dict, path: str, method: str) -> set[str]:
    body = schema["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]
    name = body["$ref"].rsplit("/", 1)[-1]
    return set(schema["components"]["schemas"][name]["properties"])


def test_the_schema_generates_without_warnings_and_validates(schema):
    validate_schema(schema)


@pytest.mark.parametrize(
    ("path", "method", "expected"),
    [
        ("/api/v1/workers/", "post", {"username", "email", "tier", "pay_rate", "skills", "pools"}),
        ("/api/v1/workers/{worker_id}/", "patch", {"tier", "pay_rate", "skills"}),
        ("/api/v1/pools/", "post", {"name", "description", "members"}),
        ("/api/v1/pools/{pool_id}/", "patch", {"name", "description", "members"}),
        ("/api/v1/jobs/{job_id}/pools/", "post", {"pool"}),
        (
            "/api/v1/workers/{worker_id}/bonuses/",
            "post",
            {"job", "amount", "idempotency_key", "note"},
        ),
        ("/api/v1/assignments/next/", "post", {"job"}),
        ("/api/v1/assignments/{assignment_id}/submit/", "post", {"label", "duration_ms"}),
    ],
)
def test_request_bodies_document_their_own_fields(schema, path, method, expected):
    assert _request_properties(schema, path, method) == expected


def test_every_operation_documents_the_json_error_shape(schema):
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            error = operation["responses"]["4XX"]["content"]["application/json"]["schema"]
            assert error == {"$ref": "#/components/schemas/ApiError"}, (method, path)
