"""Content-Security-Policy header for every response (production settings switch it on).

The pages load scripts only from this site, plus their own inline scripts, which carry a
per-request nonce (`<script nonce="{{ request.csp_nonce }}">`): an injected script has none
and does not run. Styles may be inline (the pages use style attributes). The Swagger page
(`/api/docs/`) loads Swagger UI from its CDN and gets a policy that allows that.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils.functional import SimpleLazyObject

_PAGES = (
    "default-src 'self'; script-src 'self' 'nonce-{nonce}'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: https:; connect-src 'self'; font-src 'self'; object-src 'none'; "
    "base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)
# /api/docs/: Swagger UI's files come from the project (drf-spectacular-sidecar); its page
# starts them with an inline script.
_DOCS = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'self'; frame-ancestors 'none'"
)


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        nonce: list[str] = []

        def make() -> str:
            nonce.append(secrets.token_urlsafe(16))
            return nonce[0]

        request.csp_nonce = SimpleLazyObject(make)  # type: ignore[attr-defined]
        response = self.get_response(request)
        if "Content-Security-Policy" in response or not settings.CONTENT_SECURITY_POLICY:
            return response
        if request.path.startswith("/api/docs/"):
            policy = _DOCS
        else:
            policy = _PAGES.format(nonce=nonce[0] if nonce else secrets.token_urlsafe(16))
        response["Content-Security-Policy"] = policy
        return response
