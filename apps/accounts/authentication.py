"""`Authorization: Token <key>` authentication against hashed tokens."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import connection
from django.utils import timezone
from rest_framework import authentication, exceptions

from apps.accounts.models import ApiToken
from apps.accounts.services import token_digest
from apps.common import caches
from apps.common.instances import copied
from apps.common.prepared import Prepared
from apps.common.throttling import auth_failure_check, auth_failure_record
from apps.workforce.models import Worker

# The user's worker record travels with the token: annotators call `next` and `submit` all
# day, and one query per request for both is the difference on the hot path.
WORKER_ATTR = "_concord_worker"


@functools.cache
def _token_sql() -> str:
    user_model = get_user_model()
    columns = ", ".join(f"u.{f.column}" for f in user_model._meta.concrete_fields)
    return (
        f'SELECT {columns}, t.id AS "token_pk", t.last_used_at AS "token_last_used_at", '
        f'w.id AS "worker_pk", w.tier AS "worker_tier", w.status AS "worker_status" '
        f"FROM {ApiToken._meta.db_table} t "
        f"JOIN {user_model._meta.db_table} u ON u.id = t.user_id "
        f"LEFT JOIN {Worker._meta.db_table} w ON w.user_id = u.id "
        f"WHERE t.digest = %(digest)s AND t.revoked_at IS NULL"
    )


# Credentials looked up on PostgreSQL are kept per process for a few seconds: annotators
# send two requests per label all day, and the lookup was a fifth of a request's time.
# The cache is registered in apps.common.caches: a revoked token, a deactivated user, a
# changed membership or a worker's new status invalidates it in every process on commit
# (signals connected in apps.accounts.apps, and the workforce services), so the very next
# request sees the change. What is cached is the built user, token and worker; each request
# gets its own copies, so nothing one request sets on them reaches another.
CREDENTIALS = caches.register(
    name="credentials",
    ttl_s=5.0,
    max_entries=10_000,
    invalidated_by="ApiToken / user / membership / worker saves and deletes (signals); "
    "worker ban, suspend, reinstate",
)


@dataclass(frozen=True)
class _Credentials:
    user: AbstractBaseUser
    token: ApiToken
    worker: Any  # Worker | None


def credentials_changed(*, update_fields: Any = None, **_: Any) -> None:
    """Invalidate the cached credentials in every process (after the current commit).

    A save that only records a login (`last_login`) changes nothing cached."""
    if update_fields is not None and set(update_fields) <= {"last_login"}:
        return
    CREDENTIALS.invalidate()


@functools.cache
def _token_statement() -> Prepared:
    return Prepared("concord_token", _token_sql(), {"digest": "text"})


def _credentials_from_row(row: tuple) -> _Credentials:
    user_model = get_user_model()
    user_fields = [f.attname for f in user_model._meta.concrete_fields]
    user = user_model.from_db("default", user_fields, row[: len(user_fields)])
    token_pk, last_used_at, worker_pk, worker_tier, worker_status = row[len(user_fields) :]
    token = ApiToken.from_db(
        "default", ["id", "user_id", "last_used_at"], [token_pk, user.pk, last_used_at]
    )
    worker = None
    if worker_pk is not None:
        # Loaded as if with .only(): other columns are read lazily, never defaulted.
        worker = Worker.from_db(
            "default",
            ["id", "user_id", "tier", "status"],
            [worker_pk, user.pk, worker_tier, worker_status],
        )
    return _Credentials(user=user, token=token, worker=worker)


class HashedTokenAuthentication(authentication.TokenAuthentication):
    """Token authentication with a limit on failures per client address: an address that
    failed too often gets 429 (before any token lookup) until its window passes. A token
    this process has already looked up is not checked against the limit: the hot path pays
    nothing for it. DRF makes one instance per request, so the request is kept on it."""

    keyword = "Token"
    _request: Any = None

    def authenticate(self, request):
        self._request = request
        try:
            found = super().authenticate(request)
        except exceptions.AuthenticationFailed:
            wait = auth_failure_record(request)
            if wait is not None:
                raise exceptions.Throttled(wait=wait) from None
            raise
        if found is None and request.META.get("HTTP_AUTHORIZATION", "")[:7].lower() == "bearer ":
            # A common client default: say what to send instead of "no credentials".
            raise exceptions.AuthenticationFailed(
                "Send the token as 'Authorization: Token <key>': Concord does not read "
                "Bearer tokens."
            )
        return found

    def authenticate_credentials(self, key: str):
        if connection.vendor != "postgresql":
            return self._authenticate_orm(key)
        digest = token_digest(key)

        def load() -> _Credentials | None:
            if self._request is not None:
                auth_failure_check(self._request)
            with connection.cursor() as cursor:
                _token_statement().execute(cursor, {"digest": digest})
                row = cursor.fetchone()
            return None if row is None else _credentials_from_row(row)

        found = CREDENTIALS.get(digest, load)
        if found is None or not found.user.is_active:
            raise exceptions.AuthenticationFailed("Invalid or revoked token.")
        user, token = copied(found.user), copied(found.token)
        token._state.fields_cache["user"] = user
        setattr(user, WORKER_ATTR, None if found.worker is None else copied(found.worker))
        touched = self._touch(user, token)
        if touched is not None:
            # Keep this token's cached copy current (only this entry: clearing the whole
            # cache here would re-query every token in the process about once a minute each).
            found.token.last_used_at = touched
        return user, token

    def _authenticate_orm(self, key: str):
        """Any database: the ORM converts values (SQLite has no native datetimes)."""
        if self._request is not None:
            auth_failure_check(self._request)
        token = (
            ApiToken.objects.select_related("user")
            .filter(digest=token_digest(key), revoked_at__isnull=True)
            .first()
        )
        if token is None or not token.user.is_active:
            raise exceptions.AuthenticationFailed("Invalid or revoked token.")
        self._touch(token.user, token)
        return token.user, token

    def _touch(self, user, token: ApiToken) -> datetime | None:
        """Write last_used_at at most once a minute (a write per request would put the token
        row on every annotator's hot path); the time written, or None."""
        now = timezone.now()
        if token.last_used_at is None or (now - token.last_used_at).total_seconds() > 60:
            ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
            token.last_used_at = now
            return now
        return None
