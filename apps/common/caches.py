"""Every per-process cache of Concord, registered here with its lifetime and invalidation.

A production deployment runs many processes (gunicorn workers, Celery workers), so a value
kept in one process's memory is only as fresh as its invalidation can reach. Each
`ProcessCache` keeps its entries in the process for at most `ttl_s` seconds and checks, on
every read (within an HTTP request: as read at the request's first cache read) a version
number kept in the shared cache (Redis when `CACHE_URL` or `REDIS_URL` is set): `invalidate()` bumps that version once the caller's transaction commits, so every
process drops its entries on its very next read. A ban, a suspension or a revoked token is
therefore seen on the next request everywhere, not `ttl_s` later.

If the shared cache cannot be reached, reads bypass the local entries (they load from the
database every time) rather than trust entries whose invalidation they cannot see.

The registry (`REGISTRY`) is the one list of such caches; README's "Caches" table mirrors it.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from django.core.cache import cache as shared_cache
from django.db import transaction

logger = logging.getLogger(__name__)

T = TypeVar("T")

_UNREACHABLE = object()


@dataclass
class ProcessCache:
    """A per-process map with a lifetime per entry and a version shared by all processes."""

    name: str
    ttl_s: float
    max_entries: int
    invalidated_by: str  # who invalidates it, for the registry's readers
    _entries: dict[Hashable, tuple[float, Any]] = field(default_factory=dict, repr=False)
    _seen_version: Any = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def version_key(self) -> str:
        return f"concord:cache-version:{self.name}"

    def _shared_version(self) -> Any:
        snapshot = _REQUEST_VERSIONS.get()
        if snapshot is not None:
            return _request_version(snapshot, self)
        try:
            return shared_cache.get(self.version_key, 0)
        except Exception:  # the shared cache is down: trust nothing kept locally
            logger.warning("shared cache unreachable; %s cache bypassed", self.name)
            return _UNREACHABLE

    def get(self, key: Hashable, load: Callable[[], T]) -> T:
        """The entry for `key`, loaded with `load()` when absent, expired or invalidated."""
        version = self._shared_version()
        if version is _UNREACHABLE:
            return load()
        now = time.monotonic()
        with self._lock:
            if version != self._seen_version:
                self._entries.clear()
                self._seen_version = version
            entry = self._entries.get(key)
        if entry is not None and entry[0] > now:
            return entry[1]
        value = load()
        with self._lock:
            if self._seen_version == version:
                if len(self._entries) >= self.max_entries:
                    self._entries.clear()
                self._entries[key] = (now + self.ttl_s, value)
        return value

    def invalidate(self) -> None:
        """Drop the entries here at once and, when the current transaction commits (at once
        outside one), in every process: a process that re-read a row before the commit drops
        it again on its next read."""
        self.clear_local()
        transaction.on_commit(self._bump)

    def _bump(self) -> None:
        try:
            try:
                shared_cache.incr(self.version_key)
            except ValueError:  # no version yet
                if not shared_cache.add(self.version_key, 1, timeout=None):
                    shared_cache.incr(self.version_key)
        except Exception:  # pragma: no cover - reads bypass the cache while it is down
            logger.exception("could not bump the %s cache version", self.name)
        self.clear_local()

    def clear_local(self) -> None:
        with self._lock:
            self._entries.clear()
            self._seen_version = None


REGISTRY: dict[str, ProcessCache] = {}

# Within one HTTP request the versions of every registered cache are read once, together
# (one round trip to the shared cache instead of one per cache read: each costs about half
# a millisecond on the annotator hot path). A request sees every invalidation committed
# before it started; outside requests (Celery tasks, commands) each read asks the shared
# cache. Set by the request_started / request_finished signals (apps.common.apps).
_REQUEST_VERSIONS: contextvars.ContextVar[dict | None] = contextvars.ContextVar(
    "concord_cache_versions", default=None
)
_FETCHED = "__fetched__"


def _request_version(snapshot: dict, registered: ProcessCache) -> Any:
    if _FETCHED not in snapshot:
        keys = [c.version_key for c in REGISTRY.values()]
        try:
            found = shared_cache.get_many(keys)
        except Exception:  # the shared cache is down: trust nothing kept locally
            logger.warning("shared cache unreachable; per-process caches bypassed")
            snapshot.update(dict.fromkeys(keys, _UNREACHABLE))
        else:
            snapshot.update({key: found.get(key, 0) for key in keys})
        snapshot[_FETCHED] = True
    return snapshot.get(registered.version_key, _UNREACHABLE)


def request_started(**_: Any) -> None:
    """A request begins: its cache versions are read at its first cache read."""
    _REQUEST_VERSIONS.set({})


def request_finished(**_: Any) -> None:
    _REQUEST_VERSIONS.set(None)


def register(*, name: str, ttl_s: float, max_entries: int, invalidated_by: str) -> ProcessCache:
    """Create and register a per-process cache (once per name)."""
    if name in REGISTRY:
        raise ValueError(f"cache {name!r} is registered twice")
    REGISTRY[name] = ProcessCache(
        name=name, ttl_s=ttl_s, max_entries=max_entries, invalidated_by=invalidated_by
    )
    return REGISTRY[name]


def clear_all_local() -> None:
    """Forget every registered cache's entries in this process (tests)."""
    for registered in REGISTRY.values():
        registered.clear_local()


def shared_get(key: str, default: Any = None) -> Any:
    """A read of the shared cache that answers `default` while the cache is unreachable (for
    values that are only a cache of the database: the caller then reads the database)."""
    try:
        return shared_cache.get(key, default)
    except Exception:  # noqa: BLE001 - the shared cache is down
        logger.warning("shared cache unreachable; %s read from the database", key)
        return default


def shared_set(key: str, value: Any, *, timeout: float | None) -> None:
    """A write to the shared cache that is dropped while the cache is unreachable."""
    try:
        shared_cache.set(key, value, timeout=timeout)
    except Exception:  # noqa: BLE001 - the shared cache is down
        logger.warning("shared cache unreachable; %s not cached", key)


def invalidate(name: str) -> None:
    """Invalidate the registered cache `name` in every process (after the current commit),
    for code that may not import the module owning it (a lower layer)."""
    REGISTRY[name].invalidate()
