"""Middleware: lazy message storage, and JSON errors for everything under /api/."""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.contrib.messages.middleware import MessageMiddleware
from django.contrib.messages.storage import default_storage
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.functional import SimpleLazyObject, empty

from apps.common.errors import ErrorCode, error_body


class LazyMessageMiddleware(MessageMiddleware):
    """Django's MessageMiddleware with the message storage built on first use.

    The stock middleware builds the cookie and session storages for every request; API
    requests (annotators send two per label all day) never use them. Pages and the admin
    see the same `request._messages`, a lazy proxy of the storage Django would have built,
    and a storage that was used is saved into the response exactly as before.
    """

    def process_request(self, request: HttpRequest) -> None:
        request._messages = SimpleLazyObject(lambda: default_storage(request))

    def process_response(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        messages = getattr(request, "_messages", None)
        if isinstance(messages, SimpleLazyObject) and messages._wrapped is empty:
            return response  # never used: nothing to store or clear
        return super().process_response(request, response)


_API_PREFIX = "/api/"
_STATUS_CODES = {
    400: ErrorCode.INVALID,
    401: ErrorCode.NOT_AUTHENTICATED,
    403: ErrorCode.PERMISSION_DENIED,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    413: ErrorCode.PAYLOAD_TOO_LARGE,
    500: ErrorCode.SERVER_ERROR,
}
_STATUS_MESSAGES = {
    404: "No such API endpoint or object.",
    405: "Method not allowed on this endpoint.",
    500: "Internal server error.",
}


class ApiErrorMiddleware:
    """Every error under /api/ in the JSON error shape, whoever produced it.

    DRF's views render their own errors through apps.common.errors; this covers what never
    reaches a DRF view: a path no pattern matches (an unknown endpoint, a non-integer or
    out-of-range id), a method Django itself refuses, an oversized body Django rejects, and
    an unhandled exception (a bug, but still JSON for the client; DEBUG keeps Django's
    page). A NUL character in the path or query string is refused up front: no lookup,
    filter or template ever sees one (PostgreSQL cannot compare text with it). Pages
    outside /api/ keep Django's HTML.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not request.path.startswith(_API_PREFIX):
            return self.get_response(request)
        problem = _url_problem(request)
        if problem is not None:
            return JsonResponse(
                error_body(
                    ErrorCode.INVALID, f"The {problem} contains a NUL character.", {problem: "nul"}
                ),
                status=400,
            )
        response = self.get_response(request)
        if response.status_code < 400 or response.get("Content-Type", "").startswith(
            "application/json"
        ):
            return response
        if response.status_code >= 500 and settings.DEBUG:
            return response
        code = _STATUS_CODES.get(
            response.status_code,
            ErrorCode.SERVER_ERROR if response.status_code >= 500 else ErrorCode.INVALID,
        )
        message = _STATUS_MESSAGES.get(response.status_code) or (
            response.reason_phrase or "Request failed."
        )
        replacement = JsonResponse(error_body(code, message), status=response.status_code)
        if response.has_header("Allow"):
            replacement["Allow"] = response["Allow"]
        return replacement


def _url_problem(request: HttpRequest) -> str | None:
    if "\x00" in request.path:  # the path arrives percent-decoded
        return "path"
    query = request.META.get("QUERY_STRING", "")  # the query arrives as sent
    if "%00" in query or "\x00" in query:
        return "query"
    return None
