"""The database going away answers 503 with Retry-After, never a 500.

A connection PostgreSQL refused or dropped (a restart, a failover, a pooler restarting)
raises OperationalError in whatever query meets it. The middleware turns that into
`{"error": {"code": "retry", ...}}` with 503 (a short page for the HTML pages) and closes
the broken connection at once, so the next request opens a fresh one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.db import InterfaceError, OperationalError, connections
from django.http import HttpRequest, HttpResponse, JsonResponse

from apps.common.errors import ErrorCode, error_body
from apps.common.retry import is_retryable

logger = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5
# SQLSTATE classes of a lost server: connection exceptions, and admin/crash shutdowns.
_UNAVAILABLE_SQLSTATES = ("08", "57P01", "57P02", "57P03")


def database_unavailable(exc: BaseException) -> bool:
    """Whether `exc` means the database could not be reached or dropped the connection."""
    if not isinstance(exc, OperationalError | InterfaceError) or is_retryable(exc):
        return False
    pgcode = getattr(exc.__cause__, "pgcode", None)
    return pgcode is None or pgcode.startswith(_UNAVAILABLE_SQLSTATES)


class DatabaseUnavailableMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not database_unavailable(exception):
            return None
        logger.error("database unavailable: %s", exception)
        for connection in connections.all(initialized_only=True):
            try:
                connection.close_if_unusable_or_obsolete()
            except Exception:  # noqa: BLE001 - already broken: forget it
                logger.warning("could not close the %s connection", connection.alias)
        message = "The database is unavailable; please retry shortly."
        if request.path.startswith("/api/"):
            response: HttpResponse = JsonResponse(error_body(ErrorCode.RETRY, message), status=503)
        else:
            response = HttpResponse(message, status=503, content_type="text/plain")
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response
