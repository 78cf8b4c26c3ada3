"""Health check: the database always, the shared cache and the Celery broker when configured.

Without the database nothing works: 503 ("unavailable"), so a load balancer takes the
process out. Without Redis (cache, broker) annotators still get and submit work, and
follow-up work waits in the database for the beat's sweeps: 200 with status "degraded", so
that a Redis outage does not take every web process out with it.
"""

from collections.abc import Callable
from typing import Any

import redis
from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.http import HttpRequest, JsonResponse


def _check_database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return "ok"


def _check_cache() -> str:
    if "RedisCache" not in settings.CACHES["default"]["BACKEND"]:
        return "local"
    cache.get("concord:healthz")
    return "ok"


def _check_broker() -> str:
    if not settings.REDIS_URL:
        return "eager"

    client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=2)
    client.ping()
    return "ok"


# Figures of this process that apps add to /healthz (name -> a function returning JSON), for
# example apps.assignments: how many leases and submits each write path served.
HEALTH_FIGURES: dict[str, Callable[[], Any]] = {}


def healthz(request: HttpRequest) -> JsonResponse:
    checks: dict[str, str] = {}
    for name, check in (
        ("database", _check_database),
        ("cache", _check_cache),
        ("broker", _check_broker),
    ):
        try:
            checks[name] = check()
        except Exception as exc:  # noqa: BLE001 - a health check reports any failure
            checks[name] = f"error: {exc.__class__.__name__}: {exc}"
    if checks["database"] != "ok":
        state, code = "unavailable", 503
    elif any(value.startswith("error") for value in checks.values()):
        state, code = "degraded", 200
    else:
        state, code = "ok", 200
    process = {name: figures() for name, figures in HEALTH_FIGURES.items()}
    return JsonResponse({"status": state, "checks": checks, "process": process}, status=code)
