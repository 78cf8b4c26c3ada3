"""Every per-process cache of Concord, registered here with its lifetime and invalidation.

A production deployment runs many processes (gunicorn workers, Celery workers), so a value
kept in one process's memory is only as fresh as its invalidation can reach. Each
`ProcessCache` keeps its entries in the process for at most `ttl_s` seconds, and
`invalidate()` reaches every process once the caller's transaction commits:

- **Pushed** (the shared cache is Redis): `invalidate()` bumps the cache's version key in
  Redis and publishes the cache's name on one channel. Each process runs one listener
  thread (`Listener`, started lazily after a fork) subscribed to that channel: a message
  drops that cache's entries in the process within milliseconds, with no Redis read on the
  request path. As a safety net the listener also reads every version key once a second
  (`POLL_S`), so a lost message costs at most that second; while the listener is not
  subscribed (starting, or Redis away), reads fall back to the polled path below, and on
  (re)subscribing it drops every entry, since messages sent meanwhile are lost.
- **Polled** (no listener): every read checks the version key (within an HTTP request: all
  versions in one round trip at the request's first cache read), so a bump is seen on the
  very next read. If the shared cache cannot be reached, reads bypass the local entries
  (they load from the database every time) rather than trust entries whose invalidation
  they cannot see.

What must hold at once for safety does not rest on these caches: a lease and a submit read
the worker's status in the same statement that writes (a ban stops work on the next request
in every process, cached credentials or not); the caches only save reads of what changes
rarely. bench/annotate.py measures the two modes (`--polled-caches`).

The registry (`REGISTRY`) is the one list of such caches; README's "Caches" table mirrors it.
"""

from __future__ import annotations

import contextvars
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import redis
from django.conf import settings
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
    _generation: int = field(default=0, repr=False)  # bumped by every drop of the entries
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
        if not LISTENER.subscribed():
            version = self._shared_version()
            if version is _UNREACHABLE:
                return load()
            with self._lock:
                if version != self._seen_version:
                    self._entries.clear()
                    self._generation += 1
                    self._seen_version = version
        now = time.monotonic()
        with self._lock:
            generation = self._generation
            entry = self._entries.get(key)
        if entry is not None and entry[0] > now:
            return entry[1]
        value = load()
        with self._lock:
            # Not kept if the entries were dropped while loading: the load may have read
            # the database before the change that dropped them.
            if self._generation == generation:
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
        LISTENER.publish(self.name)

    def clear_local(self) -> None:
        with self._lock:
            self._entries.clear()
            self._generation += 1
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


# --- Pushed invalidation -------------------------------------------------------------------

POLL_S = 1.0  # the listener's safety-net read of every version key
_HOST = socket.gethostname()
_RETRY_S = (0.1, 0.5, 1.0, 2.0)  # back-off between reconnections


def _redis_location() -> str | None:
    """The shared cache's Redis URL, or None when the shared cache is not Redis."""
    default = settings.CACHES.get("default", {})
    if not default.get("BACKEND", "").endswith("RedisCache"):
        return None
    location = default.get("LOCATION")
    if isinstance(location, list | tuple):
        location = location[0] if len(location) == 1 else None
    return location or None


def _bumps(before: Any, after: Any) -> float:
    """How many bumps took a version key from `before` to `after` (inf when unknowable: the
    key vanished or was reset, as when Redis restarts or evicts it)."""
    try:
        count = int(after or 0) - int(before or 0)
    except (TypeError, ValueError):
        return float("inf")
    return count if count >= 0 and (after is not None or before is None) else float("inf")


class Listener:
    """This process's subscription to the invalidation channel (one thread per process).

    `subscribed()` is true while the thread holds a live subscription to the Redis the
    shared cache is on; the caches then skip their per-read version check. It starts the
    thread when there is none in this process (after a fork, or when the shared cache moved:
    tests point it at a throwaway Redis) and answers false until the thread is subscribed.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._location: str | None = None
        self._stop: threading.Event | None = None
        self._live = False
        self._publisher: redis.Redis | None = None
        self.messages = 0  # invalidations received, for /healthz
        self.polled_drops = 0  # drops the safety-net poll made (messages that were lost)

    @staticmethod
    def channel(location: str) -> str:
        # Channels are not per Redis database: the location keeps deployments (and test
        # runs) that share one redis-server apart.
        return f"concord:cache-invalidations:{location}"

    def subscribed(self) -> bool:
        if not settings.CACHE_INVALIDATION_PUSH:
            return False
        if self._live and self._pid == os.getpid() and self._location == _redis_location():
            return True
        self._ensure_started()
        return False

    def _ensure_started(self) -> None:
        location = _redis_location()
        with self._lock:
            if self._pid == os.getpid() and self._location == location:
                return
            if self._stop is not None and self._pid == os.getpid():
                self._stop.set()
            self._pid, self._location, self._live = os.getpid(), location, False
            self._publisher = None
            self._stop = None
            if location is None:
                return
            self._stop = threading.Event()
            thread = threading.Thread(
                target=self._run,
                args=(location, self._stop),
                name="concord-cache-listener",
                daemon=True,
            )
            thread.start()

    def stop(self) -> None:
        """Stop this process's listener (tests); the next read starts a new one."""
        with self._lock:
            if self._stop is not None:
                self._stop.set()
            self._pid = self._location = self._stop = None
            self._live = False

    def publish(self, name: str) -> None:
        location = _redis_location()
        if location is None:
            return
        try:
            if self._publisher is None:
                self._publisher = redis.Redis.from_url(
                    location, socket_connect_timeout=1, socket_timeout=1
                )
            self._publisher.publish(self.channel(location), f"{name} {self._sender()}")
        except Exception:  # noqa: BLE001 - the poll (POLL_S) or the fallback reads catch up
            logger.warning("could not publish the %s cache invalidation", name)
            self._publisher = None

    @staticmethod
    def _sender() -> str:
        # Who sent an invalidation: the sender has already dropped its own entries (and
        # may have re-read them since), so its listener only notes the message.
        return f"{_HOST}:{os.getpid()}"

    def _run(self, location: str, stop: threading.Event) -> None:
        failures = 0
        while not stop.is_set():
            try:
                self._listen(location, stop)
            except Exception:  # noqa: BLE001 - Redis away: fall back, then reconnect
                if self._pid == os.getpid() and self._stop is stop:
                    self._live = False
                clear_all_local()
                if failures == 0:
                    logger.warning("cache invalidation listener lost Redis; reads poll")
                stop.wait(_RETRY_S[min(failures, len(_RETRY_S) - 1)])
                failures += 1
            else:
                failures = 0
        if self._stop is stop:
            self._live = False

    def _listen(self, location: str, stop: threading.Event) -> None:
        client = redis.Redis.from_url(location, socket_connect_timeout=1, socket_timeout=POLL_S + 1)
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(self.channel(location))
            versions = self._versions(client)
            clear_all_local()  # what was sent before the subscription is lost
            if self._stop is not stop:
                return
            self._live = True
            next_poll = time.monotonic() + POLL_S
            heard: dict[str, int] = {}  # messages per cache since the last poll
            while not stop.is_set():
                message = pubsub.get_message(timeout=max(0.0, next_poll - time.monotonic()))
                if message is not None and message.get("type") == "message":
                    name, _, sender = message["data"].decode().partition(" ")
                    if name in REGISTRY:
                        if sender != self._sender():
                            REGISTRY[name].clear_local()
                            self.messages += 1
                        heard[name] = heard.get(name, 0) + 1
                if time.monotonic() >= next_poll:
                    latest = self._versions(client)
                    for name, version in latest.items():
                        if _bumps(versions.get(name), version) > heard.get(name, 0):
                            REGISTRY[name].clear_local()  # a bump whose message was lost
                            self.polled_drops += 1
                    versions, heard = latest, {}
                    next_poll = time.monotonic() + POLL_S
        finally:
            pubsub.close()
            client.close()

    @staticmethod
    def _versions(client: redis.Redis) -> dict[str, Any]:
        registered = list(REGISTRY.values())
        if not registered:
            return {}
        keys = [shared_cache.make_and_validate_key(c.version_key) for c in registered]
        return dict(zip([c.name for c in registered], client.mget(keys), strict=True))

    def figures(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "subscribed": self._live and self._pid == os.getpid(),
            "messages": self.messages,
            "polled_drops": self.polled_drops,
        }


LISTENER = Listener()


def _after_fork_in_child() -> None:
    # A fork copies no threads: the child starts its own listener on its first read, and
    # must not inherit a lock some other thread of the parent held at the fork.
    LISTENER._lock = threading.Lock()
    LISTENER._pid = LISTENER._location = LISTENER._stop = LISTENER._publisher = None
    LISTENER._live = False
    for registered in REGISTRY.values():
        registered._lock = threading.Lock()
        registered._entries.clear()
        registered._seen_version = None


os.register_at_fork(after_in_child=_after_fork_in_child)
