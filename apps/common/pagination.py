"""Page-number pagination: a hard cap on page size, and a 400 for a malformed page, page
size or format (the query parameters every list shares)."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers
from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request

from apps.common.fields import ID_MAX


class CappedPageNumberPagination(PageNumberPagination):
    """`page` and `page_size` must be positive integers (a 400 naming the parameter, where
    DRF answered `?page=abc` with a 404 and ignored a bad page_size); a page size above
    `max_page_size` is capped; a page beyond the last is still a 404."""

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500

    def paginate_queryset(self, queryset: Any, request: Request, view: Any = None) -> Any:
        errors = {}
        for name in (self.page_query_param, self.page_size_query_param):
            raw = request.query_params.get(name)
            if raw is None or (name == self.page_query_param and raw in self.last_page_strings):
                continue
            if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= ID_MAX:
                errors[name] = [f"Must be a positive integer, not {raw[:50]!r}."]
        # Every list answers JSON only; `?format=xml` is refused, not ignored (DRF's own
        # format override is off: ?format= picks a results file format where one exists).
        fmt = request.query_params.get("format")
        if fmt is not None and fmt != "json":
            errors["format"] = [f"Unknown format {fmt[:50]!r}; this list is only json."]
        if errors:
            raise serializers.ValidationError(errors)
        return super().paginate_queryset(queryset, request, view)
