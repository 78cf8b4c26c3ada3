"""One application error type and the handler that renders every API error in one shape."""

from __future__ import annotations

import enum
import math
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import OperationalError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response

from apps.common.retry import is_retryable


class ErrorCode(enum.StrEnum):
    INVALID = "invalid"
    PARSE_ERROR = "parse_error"
    NOT_FOUND = "not_found"
    NOT_AUTHENTICATED = "not_authenticated"
    PERMISSION_DENIED = "permission_denied"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    NOT_ACCEPTABLE = "not_acceptable"
    THROTTLED = "throttled"
    CONFLICT = "conflict"
    INVALID_STATE = "invalid_state"
    LEASE_EXPIRED = "lease_expired"
    LEASE_NOT_YOURS = "lease_not_yours"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    WORKER_INACTIVE = "worker_inactive"
    RETRY = "retry"
    SERVER_ERROR = "server_error"


class ApplicationError(Exception):
    """A failure a client can act on: carries a machine code, a message and an HTTP status."""

    def __init__(
        self,
        message: str,
        *,
        code: ErrorCode = ErrorCode.INVALID,
        status_code: int = status.HTTP_400_BAD_REQUEST,
        details: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status_code = status_code
        self.details = details if details is not None else {}


def error_body(code: str, message: str, details: Any = None) -> dict:
    return {"error": {"code": str(code), "message": message, "details": details or {}}}


_DRF_CODES = {
    exceptions.ParseError: ErrorCode.PARSE_ERROR,
    exceptions.NotAuthenticated: ErrorCode.NOT_AUTHENTICATED,
    exceptions.AuthenticationFailed: ErrorCode.NOT_AUTHENTICATED,
    exceptions.PermissionDenied: ErrorCode.PERMISSION_DENIED,
    exceptions.NotFound: ErrorCode.NOT_FOUND,
    exceptions.MethodNotAllowed: ErrorCode.METHOD_NOT_ALLOWED,
    exceptions.UnsupportedMediaType: ErrorCode.UNSUPPORTED_MEDIA_TYPE,
    exceptions.NotAcceptable: ErrorCode.NOT_ACCEPTABLE,
    exceptions.Throttled: ErrorCode.THROTTLED,
    exceptions.ValidationError: ErrorCode.INVALID,
}


def exception_handler(exc: Exception, context: dict) -> Response | None:
    """Render ApplicationError, DRF and Django errors as {"error": {code, message, details}}."""
    if isinstance(exc, ApplicationError):
        return Response(error_body(exc.code, exc.message, exc.details), status=exc.status_code)
    if isinstance(exc, DjangoValidationError):
        details = (
            exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
        )
        exc = exceptions.ValidationError(details)
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, OperationalError) and is_retryable(exc):
        # Retried already where the transaction is owned (apps.common.retry): say so and
        # ask for the request again rather than a 500.
        response = Response(
            error_body(ErrorCode.RETRY, "The request collided with another; please retry."),
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
        )
        response["Retry-After"] = "1"
        return response

    # Imported here: rest_framework.views reads this module through its settings at import.
    from rest_framework.views import exception_handler as drf_exception_handler  # noqa: PLC0415

    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    code = next((c for t, c in _DRF_CODES.items() if isinstance(exc, t)), ErrorCode.INVALID)
    if isinstance(exc, exceptions.ValidationError):
        message = "The request is invalid; see details for each field."
        details = response.data
    else:
        data = response.data if isinstance(response.data, dict) else {}
        message = str(data.get("detail", exc))
        details = {}
        if isinstance(exc, exceptions.Throttled) and exc.wait is not None:
            details = {"retry_after": math.ceil(exc.wait)}
    response.data = error_body(code, message, details)
    return response
