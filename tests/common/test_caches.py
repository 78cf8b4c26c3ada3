"""Per-process caches: an invalidation made in any process reaches every process."""

from __future__ import annotations

import pytest
from django.core.cache import cache

import apps.accounts.authentication
import apps.assignments.fastpath
import apps.quality.matrices  # noqa: F401
from apps.common import caches


@pytest.fixture
def registered():
    made = caches.register(name="test-cache", ttl_s=60.0, max_entries=3, invalidated_by="tests")
    yield made
    caches.REGISTRY.pop("test-cache")


def test_an_entry_is_kept_until_it_expires(registered):
    loads = []

    def load():
        loads.append(1)
        return len(loads)

    assert registered.get("k", load) == 1
    assert registered.get("k", load) == 1
    assert len(loads) == 1


def test_an_invalidation_in_another_process_drops_this_processes_entries(registered):
    """Another process's invalidate() is a bump of the version in the shared cache: seen on
    the very next read here, whatever the entry's lifetime."""
    values = iter(["stale", "fresh"])
    assert registered.get("k", lambda: next(values)) == "stale"

    cache.set(registered.version_key, 41, timeout=None)  # what another process's bump does

    assert registered.get("k", lambda: next(values)) == "fresh"


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


def test_an_unreachable_shared_cache_bypasses_the_local_entries(registered, monkeypatch):
    registered.get("k", lambda: "old")

    def down(*args, **kwargs):
        raise ConnectionError("redis is down")

    monkeypatch.setattr(caches.shared_cache, "get", down)

    assert registered.get("k", lambda: "from the database") == "from the database"


def test_the_registry_names_every_per_process_cache():
    assert {"credentials", "open_jobs", "class_priors"} <= set(caches.REGISTRY)
    for registered in caches.REGISTRY.values():
        assert registered.ttl_s > 0
        assert registered.invalidated_by


def test_a_full_cache_starts_over(registered):
    for key in range(5):
        registered.get(key, lambda key=key: key)
    assert len(registered._entries) <= 3


def test_a_request_reads_every_cache_version_once(registered, monkeypatch):
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
