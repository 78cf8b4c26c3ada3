"""Abuse limits: request rates per token and failed sign-ins per client address, counted in
the shared cache so that every process enforces one limit.

Each limit is a fixed window counter (one atomic `incr` per request, no history list): a
client can get up to twice its rate across a window boundary, never more. When the shared
cache cannot be reached the limits are not enforced (logged), so that annotators keep
working while Redis is away. Rates are DRF rate strings ("600/min") from
REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]; an empty rate switches a limit off.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

from django.core.cache import cache
from django.http import HttpRequest, HttpResponse
from django.template.response import SimpleTemplateResponse
from rest_framework import exceptions
from rest_framework.mixins import ListModelMixin
from rest_framework.settings import api_settings
from rest_framework.throttling import BaseThrottle, SimpleRateThrottle

logger = logging.getLogger(__name__)


def _rate(scope: str) -> tuple[int, int] | None:
    """(requests, seconds) for a scope, or None when it is off."""
    rate = api_settings.DEFAULT_THROTTLE_RATES.get(scope)
    if not rate:
        return None
    return SimpleRateThrottle.parse_rate(None, rate)  # type: ignore[arg-type]


def client_address(request: HttpRequest) -> str:
    """The client's address as DRF's throttles see it (NUM_PROXIES decides whether
    X-Forwarded-For is trusted)."""
    return BaseThrottle().get_ident(request)  # type: ignore[arg-type]


class Window:
    """A fixed-window counter of one scope in the shared cache.

    `local_batch`: a request limit (not a security one) may count hits in this process and
    add them to the shared counter `local_batch` at a time, at most 1/60 of the limit (one
    cache round trip per batch instead of per request): a process then admits at most
    batch - 1 hits beyond what the shared count showed, per window.
    """

    def __init__(self, scope: str, *, local_batch: int = 1) -> None:
        self.scope = scope
        self.local_batch = local_batch
        # ident -> [window start, hits not yet added to the shared counter, shared count]
        self._local: dict[str, list] = {}
        self._lock = threading.Lock()

    def _key(self, ident: str, now: float, seconds: int) -> tuple[str, float]:
        start = math.floor(now / seconds) * seconds
        return f"concord:throttle:{self.scope}:{ident}:{int(start)}", start + seconds

    def _batch(self, limit: int) -> int:
        return max(1, min(self.local_batch, limit // 60))

    def count(self, ident: str, *, add: int = 1) -> float | None:
        """Count `add` hits (0: only look); the seconds to wait if the limit is now exceeded,
        else None. None too when the scope is off or the shared cache is unreachable."""
        rate = _rate(self.scope)
        if rate is None:
            return None
        limit, seconds = rate
        now = time.time()
        key, ends = self._key(ident, now, seconds)
        batch = self._batch(limit) if add else 1
        if batch > 1:
            with self._lock:
                entry = self._local.get(ident)
                if entry is None or entry[0] != ends:
                    if len(self._local) > 10_000:
                        self._local.clear()
                    entry = self._local[ident] = [ends, 0, 0]
                entry[1] += add
                if entry[1] < batch:
                    over = entry[2] + entry[1] > limit
                    return max(ends - now, 1.0) if over else None
                add, entry[1] = entry[1], 0
        try:
            if add:
                try:
                    hits = cache.incr(key, add)
                except ValueError:  # first hit of the window
                    if cache.add(key, add, timeout=seconds + 1):
                        hits = add
                    else:
                        hits = cache.incr(key, add)
            else:
                hits = cache.get(key, 0)
        except Exception:  # noqa: BLE001 - the shared cache is down: do not lock people out
            logger.warning("shared cache unreachable; %s limit not enforced", self.scope)
            return None
        if batch > 1:
            with self._lock:
                entry = self._local.get(ident)
                if entry is not None and entry[0] == ends:
                    entry[2] = hits
        over = hits > limit if add else hits >= limit
        return max(ends - now, 1.0) if over else None


# Request limits per token, counted in batches per process (see Window.local_batch); the
# sign-in limits below count every failure in the shared cache at once.
_TOKEN_WINDOWS = {scope: Window(scope, local_batch=10) for scope in ("submit", "list")}


class TokenRateThrottle(BaseThrottle):
    """Per-token request rate for views that name a `throttle_scope` ("submit"), and for
    every GET on a list view ("list"). Other requests are not limited here."""

    def __init__(self) -> None:
        self._wait: float | None = None

    def allow_request(self, request: Any, view: Any) -> bool:
        scope = getattr(view, "throttle_scope", None)
        if scope is None:
            if request.method != "GET" or not isinstance(view, ListModelMixin):
                return True
            scope = "list"
        auth = getattr(request, "auth", None)
        if getattr(auth, "pk", None) is not None:
            ident = f"token-{auth.pk}"
        elif request.user and request.user.is_authenticated:
            ident = f"user-{request.user.pk}"
        else:
            ident = f"ip-{self.get_ident(request)}"
        window = _TOKEN_WINDOWS.get(scope) or Window(scope)
        self._wait = window.count(ident)
        return self._wait is None

    def wait(self) -> float | None:
        return self._wait


AUTH_FAILURES = Window("auth_failure")


def auth_failure_check(request: Any) -> None:
    """Raise Throttled if the request's address has failed authentication too often."""
    wait = AUTH_FAILURES.count(client_address(request), add=0)
    if wait is not None:
        raise exceptions.Throttled(wait=wait)


def auth_failure_record(request: Any) -> float | None:
    """Count one failed authentication from the request's address; the wait if that makes
    it one too many."""
    return AUTH_FAILURES.count(client_address(request))


def login_throttled(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Limit failed sign-ins on a login page per client address (scope "login"): a POST that
    does not redirect is a failure. Over the limit the page answers 429 with Retry-After."""
    window = Window("login")

    @functools.wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.method != "POST":
            return view(request, *args, **kwargs)
        address = client_address(request)
        wait = window.count(address, add=0)
        if wait is None:
            response = view(request, *args, **kwargs)
            if response.status_code in (301, 302, 303):
                return response
            wait = window.count(address)
            if wait is None:
                return response
        seconds = math.ceil(wait)
        response = SimpleTemplateResponse(
            "429.html", {"retry_after": seconds}, status=429, content_type="text/html"
        )
        response["Retry-After"] = str(seconds)
        return response.render()

    return wrapped
