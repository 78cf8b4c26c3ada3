"""Per-process caches: an invalidation made in any process reaches every process.

Two ways (apps.common.caches): pushed over Redis pub/sub to a listener thread in each
process (the default), and polled, each read checking a version key in Redis (the fallback
while the listener is not subscribed, and the whole story with CONCORD_CACHE_PUSH=0).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.core.cache import cache

import apps.accounts.authentication
import apps.assignments.fastpath
import apps.quality.matrices  # noqa: F401
from apps.common import caches

ROOT = Path(__file__).resolve().parents[2]
# Well under the poll's period: what is seen within it was pushed, not polled.
POLL_MARGIN = caches.POLL_S * 0.8


@pytest.fixture
def registered():
    made = caches.register(name="test-cache", ttl_s=60.0, max_entries=3, invalidated_by="tests")
    yield made
    caches.REGISTRY.pop("test-cache")


@pytest.fixture
def polled(monkeypatch):
    """This process without its listener: every read checks the shared version."""
    monkeypatch.setattr(settings, "CACHE_INVALIDATION_PUSH", False)


def _eventually(condition, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


@pytest.fixture
def pushed():
    """This process's listener, subscribed."""
    if caches._redis_location() is None:
        pytest.skip("pushed invalidation needs the shared cache on Redis (REDIS_URL)")
    assert _eventually(caches.LISTENER.subscribed), "the listener did not subscribe"
    return caches.LISTENER


def _publish_as_another_process(name: str) -> None:
    location = caches._redis_location()
    client = redis.Redis.from_url(location)
    client.publish(caches.Listener.channel(location), f"{name} elsewhere:1")
    client.close()


def test_an_entry_is_kept_until_it_expires(registered):
    loads = []

    def load():
        loads.append(1)
        return len(loads)

    assert registered.get("k", load) == 1
    assert registered.get("k", load) == 1
    assert len(loads) == 1


def test_polled_an_invalidation_in_another_process_is_seen_on_the_very_next_read(
    registered, polled
):
    """Another process's invalidate() bumps the version in the shared cache: seen on the
    very next read here, whatever the entry's lifetime."""
    values = iter(["stale", "fresh"])
    assert registered.get("k", lambda: next(values)) == "stale"

    cache.set(registered.version_key, 41, timeout=None)  # what another process's bump does

    assert registered.get("k", lambda: next(values)) == "fresh"


def test_pushed_reads_do_not_touch_redis(registered, pushed, monkeypatch):
    assert registered.get("k", lambda: "kept") == "kept"

    def no_reads(*args, **kwargs):
        raise AssertionError("a pushed read asked Redis")

    with monkeypatch.context() as patched:
        patched.setattr(caches.shared_cache, "get", no_reads)
        patched.setattr(caches.shared_cache, "get_many", no_reads)
        caches.request_started()
        try:
            assert registered.get("k", lambda: "loaded") == "kept"
        finally:
            caches.request_finished()


def test_pushed_a_message_from_another_process_drops_the_entries(registered, pushed):
    values = iter(["stale", "fresh"])
    assert registered.get("k", lambda: next(values)) == "stale"
    heard = pushed.messages

    _publish_as_another_process(registered.name)

    assert _eventually(lambda: pushed.messages > heard, seconds=POLL_MARGIN)
    assert registered.get("k", lambda: next(values)) == "fresh"


def test_pushed_a_lost_message_is_caught_by_the_poll(registered, pushed):
    """A bump whose message never arrived (published while this process was away) drops
    the entries at the listener's next poll of the versions."""
    values = iter(["stale", "fresh"])
    assert registered.get("k", lambda: next(values)) == "stale"
    assert _eventually(lambda: pushed.figures()["subscribed"])
    time.sleep(caches.POLL_S * 1.2)  # the listener has polled the current versions
    drops = pushed.polled_drops

    try:  # another process's bump, its message lost
        cache.incr(registered.version_key)
    except ValueError:
        cache.set(registered.version_key, 1, timeout=None)

    assert _eventually(lambda: pushed.polled_drops > drops, seconds=caches.POLL_S * 3)
    assert registered.get("k", lambda: next(values)) == "fresh"


def test_pushed_an_invalidation_in_a_real_other_process_reaches_this_one(pushed):
    """A Django process of its own invalidates the credentials cache; this process drops its
    entries, told by the message (well before the poll could)."""
    credentials = caches.REGISTRY["credentials"]
    assert credentials.get("probe", lambda: "cached") == "cached"
    heard = pushed.messages
    script = (
        "import django; django.setup(); "
        "from apps.common import caches; import apps.accounts.authentication; "
        "caches.invalidate('credentials')"
    )
    env = dict(
        os.environ,
        DJANGO_SETTINGS_MODULE="config.settings",
        DEBUG="1",
        DATABASE_URL="sqlite:///:memory:",  # no rows: only the shared cache is shared
    )
    subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, check=True, timeout=60)

    assert _eventually(lambda: pushed.messages > heard, seconds=5)
    assert credentials.get("probe", lambda: "reloaded") == "reloaded"


def test_pushed_a_resubscription_drops_every_entry(registered, pushed):
    """Messages sent while the listener was away are lost: it drops everything on return."""
    assert registered.get("k", lambda: "before") == "before"

    pushed.stop()
    assert _eventually(pushed.subscribed)

    assert registered.get("k", lambda: "after") == "after"


def test_an_entry_loaded_across_an_invalidation_is_not_kept(registered):
    """A load that read the database before a change must not outlive the change's drop."""

    def load_while_invalidated():
        registered.clear_local()  # the drop, arriving while this load runs
        return "read before the change"

    assert registered.get("k", load_while_invalidated) == "read before the change"
    assert registered.get("k", lambda: "read after") == "read after"


def test_an_unreachable_shared_cache_bypasses_the_local_entries(registered, polled, monkeypatch):
    registered.get("k", lambda: "old")

    def down(*args, **kwargs):
        raise ConnectionError("redis is down")

    monkeypatch.setattr(caches.shared_cache, "get", down)

    assert registered.get("k", lambda: "from the database") == "from the database"


@pytest.mark.django_db
def test_invalidate_bumps_the_shared_version_on_commit(
    registered, django_capture_on_commit_callbacks
):
    registered.get("k", lambda: "v")
    before = cache.get(registered.version_key, 0)

    with django_capture_on_commit_callbacks(execute=True):
        registered.invalidate()

    assert cache.get(registered.version_key) == before + 1
    assert registered.get("k", lambda: "new") == "new"


def test_the_registry_names_every_per_process_cache():
    assert {"credentials", "open_jobs", "class_priors"} <= set(caches.REGISTRY)
    for registered in caches.REGISTRY.values():
        assert registered.ttl_s > 0
        assert registered.invalidated_by


def test_a_full_cache_starts_over(registered):
    for key in range(5):
        registered.get(key, lambda key=key: key)
    assert len(registered._entries) <= 3


def test_polled_a_request_reads_every_cache_version_once(registered, polled, monkeypatch):
    """Inside a request the versions of all registered caches come in one round trip; the
    next request sees a bump made in between."""
    calls = []
    real = caches.shared_cache.get_many

    def counted(keys):
        calls.append(list(keys))
        return real(keys)

    monkeypatch.setattr(caches.shared_cache, "get_many", counted)
    caches.request_started()
    try:
        assert registered.get("k", lambda: "first") == "first"
        assert registered.get("k", lambda: "second") == "first"
        cache.set(registered.version_key, 7, timeout=None)  # another process's bump
        assert registered.get("k", lambda: "third") == "first"  # this request's versions
    finally:
        caches.request_finished()
    caches.request_started()
    try:
        assert registered.get("k", lambda: "fourth") == "fourth"
    finally:
        caches.request_finished()
    assert len(calls) == 2
    assert registered.version_key in calls[0]


def test_bumps_counts_what_it_can_and_distrusts_the_rest():
    assert caches._bumps(b"3", b"5") == 2
    assert caches._bumps(None, b"2") == 2
    assert caches._bumps(None, None) == 0
    assert caches._bumps(b"5", None) == float("inf")  # vanished: Redis restarted or evicted
    assert caches._bumps(b"5", b"1") == float("inf")


def test_a_forked_child_starts_its_own_listener(registered, pushed):
    """Threads do not survive a fork (gunicorn and Celery prefork workers): the child runs
    its own listener and keeps nothing the parent had cached."""
    registered.get("k", lambda: "parent's")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, then leave without running pytest's exit handlers
        ok = registered.get("k", lambda: "child's") == "child's" and _eventually(
            caches.LISTENER.subscribed
        )
        os.write(write, b"1" if ok else b"0")
        os._exit(0)
    os.close(write)
    answer = os.read(read, 1)
    os.waitpid(pid, 0)
    os.close(read)
    assert answer == b"1"
    assert caches.LISTENER.subscribed()  # the parent's own listener is untouched
