"""The Redis cache backend that keeps its redis clients agrees with Django's own."""

from __future__ import annotations

import os
import uuid

import pytest
from django.core.cache.backends.redis import RedisCache as DjangoRedisCache

from apps.common.redis_cache import RedisCache

REDIS_URL = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/15"


@pytest.fixture
def pair():
    prefix = uuid.uuid4().hex[:8]
    ours = RedisCache(REDIS_URL, {"KEY_PREFIX": f"ours-{prefix}"})
    theirs = DjangoRedisCache(REDIS_URL, {"KEY_PREFIX": f"theirs-{prefix}"})
    yield ours, theirs
    for backend in (ours, theirs):
        backend.delete_many(["a", "b", "n", "gone"])


def _script(backend) -> list:
    out = [backend.add("a", {"x": [1, 2.5, "y"]}, 30), backend.add("a", "other", 30)]
    backend.set("b", 7, 30)
    out += [backend.get("a"), backend.get("b"), backend.get("gone", "default")]
    out += [backend.incr("b", 5), backend.decr("b", 2)]
    out.append(backend.get_many(["a", "b", "gone"]))
    out.append(backend.add("n", 1, None))
    out.append(backend.incr("n"))
    out.append(backend.delete("a"))
    out.append(backend.get("a"))
    with pytest.raises(ValueError, match="not found"):
        backend.incr("gone")
    return out


def test_it_answers_every_operation_as_djangos_backend_does(pair):
    ours, theirs = pair
    assert _script(ours) == _script(theirs)


def test_it_builds_one_client_per_pool(pair):
    ours, _ = pair
    ours.get("a")
    ours.set("b", 1)
    assert ours._cache.get_client() is ours._cache.get_client(write=True)
    assert len(ours._cache._clients) == 1
