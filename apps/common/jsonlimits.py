"""The limits every JSON value from a client is held to, and the one strict API parser.

Whatever JSON reaches Concord, a request body or an uploaded item, passes one check before
any serializer or the database sees it: nesting at most `MAX_JSON_DEPTH` deep, numbers
finite and integers within 64 bits (what PostgreSQL's bigint and jsonb round-trip), no NUL
character in any string or key (PostgreSQL's text and jsonb cannot hold one). A request
body is also capped at `API_MAX_BODY_BYTES`. A violation is a 400 (413 for the size) in the
error shape whose details name where it is, e.g. `{"policy.notes": "contains a NUL ..."}`;
field-level bounds (a price, a label budget) are the serializers' business.
"""

from __future__ import annotations

import math
from typing import IO, Any

import orjson
from django.conf import settings
from rest_framework import status
from rest_framework.parsers import BaseParser
from rest_framework.renderers import JSONRenderer

from apps.common.errors import ApplicationError, ErrorCode

MAX_JSON_DEPTH = 32
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "MAX_JSON_DEPTH",
    "StrictJSONParser",
    "body_too_large",
    "json_problem",
    "json_loads_strict",
    "max_body_bytes",
]


def max_body_bytes() -> int:
    """The largest JSON request body the API reads (item uploads stream and are exempt)."""
    return int(getattr(settings, "API_MAX_BODY_BYTES", 1024 * 1024))


def _where(path: tuple[Any, ...]) -> str:
    """A readable location: `policy.escalation`, `[3].payload.tags[0]`, or `body`; a deep
    one is cut after about 60 characters and ends in `...`."""
    text = ""
    for part in path:
        if len(text) > 60:
            return text + "..."
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "body"


def json_problem(value: Any, *, max_depth: int = MAX_JSON_DEPTH) -> tuple[str, str] | None:
    """The first place where `value` breaks the JSON limits, as (where, what), or None.

    Iterative (a value nested 10,000 deep must not exhaust Python's stack). `where` names
    the key path from the top, `body` for the top itself.
    """
    stack: list[tuple[Any, tuple[Any, ...]]] = [(value, ())]
    while stack:
        node, path = stack.pop()
        if isinstance(node, str):
            if "\x00" in node:
                return _where(path), "contains a NUL character (\\u0000), which is not accepted"
        elif isinstance(node, bool) or node is None:
            continue
        elif isinstance(node, int):
            if not INT64_MIN <= node <= INT64_MAX:
                return _where(path), "integer out of range (beyond 64 bits)"
        elif isinstance(node, float):
            if not math.isfinite(node):
                return _where(path), "number must be finite (no NaN, Infinity or overflow)"
        elif isinstance(node, dict | list):
            if len(path) >= max_depth:
                return _where(path), f"nested deeper than {max_depth} levels"
            if isinstance(node, dict):
                for key, child in node.items():
                    if isinstance(key, str) and "\x00" in key:
                        return _where(path), "a key contains a NUL character (\\u0000)"
                    stack.append((child, (*path, key)))
            else:
                stack.extend((child, (*path, i)) for i, child in enumerate(node))
    return None


def body_too_large(limit: int) -> ApplicationError:
    """The 413 for a JSON body over `limit` bytes."""
    return ApplicationError(
        f"The request body is larger than {limit} bytes.",
        code=ErrorCode.PAYLOAD_TOO_LARGE,
        status_code=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        details={"body": f"at most {limit} bytes"},
    )


def json_loads_strict(body: bytes, *, limit: int | None = None) -> Any:
    """Parse a JSON request body under the API's limits; raise ApplicationError otherwise.

    orjson rejects NaN and Infinity literals, integers beyond 64 bits and nesting beyond
    1024 levels by itself; a literal such as 1e400 parses to infinity, which the walk
    rejects along with NUL characters and nesting beyond MAX_JSON_DEPTH.
    """
    limit = max_body_bytes() if limit is None else limit
    if len(body) > limit:
        raise body_too_large(limit)
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApplicationError(
            f"JSON parse error - {exc}", code=ErrorCode.PARSE_ERROR, details={"body": str(exc)}
        ) from exc
    problem = json_problem(value)
    if problem is not None:
        where, what = problem
        raise ApplicationError(f"{where}: {what}.", details={where: what})
    return value


class StrictJSONParser(BaseParser):
    """DRF's JSON parser replaced: orjson, the body cap and the limits of json_problem."""

    media_type = "application/json"
    renderer_class = JSONRenderer

    def parse(
        self, stream: IO[bytes], media_type: str | None = None, parser_context: Any = None
    ) -> Any:
        limit = max_body_bytes()
        # One byte beyond the limit tells an oversized body from one exactly at it.
        body = stream.read(limit + 1)
        return json_loads_strict(body, limit=limit)
