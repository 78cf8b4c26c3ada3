"""URL converters: ids that fit the database's bigint, so an oversized id is a 404."""

from __future__ import annotations

from apps.common.jsonlimits import INT64_MAX


class IdConverter:
    """A positive or zero integer id within bigint's range (Django's `int` has no bound, and
    an id beyond 2**63 - 1 made the lookup itself fail with a 500)."""

    regex = "[0-9]{1,19}"

    def to_python(self, value: str) -> int:
        number = int(value)
        if number > INT64_MAX:
            raise ValueError("beyond bigint")  # no match: the URL answers 404
        return number

    def to_url(self, value: int) -> str:
        return str(value)
