"""OpenAPI generation: strict input bodies and unique lists said in the schema, and every
operation documenting the JSON error shape for 4xx."""

from __future__ import annotations

from typing import Any

from drf_spectacular import openapi

from apps.common.errors import ErrorCode
from apps.common.fields import UniqueListField
from apps.common.serializers import StrictInputSerializer


class AutoSchema(openapi.AutoSchema):
    """drf-spectacular's AutoSchema, told what Concord's own input types promise: a
    StrictInputSerializer takes no other properties, a UniqueListField no repeated items."""

    def _map_basic_serializer(self, serializer: Any, direction: str) -> dict:
        result = super()._map_basic_serializer(serializer, direction)
        if direction == "request" and isinstance(serializer, StrictInputSerializer):
            result["additionalProperties"] = False
        return result

    def _map_serializer_field(
        self, field: Any, direction: str, bypass_extensions: bool = False
    ) -> dict:
        result = super()._map_serializer_field(field, direction, bypass_extensions)
        if isinstance(field, UniqueListField):
            result["uniqueItems"] = True
        return result


ERROR_COMPONENT = "ApiError"
_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Every API error: a machine code, a message, and details by field.",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "code": {"type": "string", "enum": [code.value for code in ErrorCode]},
                "message": {"type": "string"},
                "details": {
                    "description": "What was wrong, by field or location (may be empty).",
                },
            },
            "required": ["code", "message", "details"],
        }
    },
    "required": ["error"],
}
_HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


def add_error_responses(result: dict, generator: Any, request: Any, public: bool) -> dict:
    """drf-spectacular POSTPROCESSING_HOOK: an `ApiError` component, and a `4XX` response
    with it on every operation (specific 4xx responses an operation documents stay)."""
    result.setdefault("components", {}).setdefault("schemas", {})[ERROR_COMPONENT] = _ERROR_SCHEMA
    response = {
        "description": "A client error, in the JSON error shape.",
        "content": {
            "application/json": {"schema": {"$ref": f"#/components/schemas/{ERROR_COMPONENT}"}}
        },
    }
    for methods in result.get("paths", {}).values():
        for method, operation in methods.items():
            if method in _HTTP_METHODS:
                operation.setdefault("responses", {}).setdefault("4XX", response)
    return result
