"""Retry a transaction that PostgreSQL aborted to break a deadlock (or a serialization
failure), instead of answering the client with a 500.

Concord's lock order, on every path that takes more than one row lock: an assignment before
its item; several items in id order; a gold item after the candidate item it stands in for,
then its gold exposure row; job re-aggregation takes no lock it would wait for (its item
write-back skips locked rows, apps.common.bulk.bulk_compare_and_set). A cycle should then not
form; if one does (a path added later, a lock taken by a trigger or by an administrator's
session), PostgreSQL aborts one transaction and `retry_on_deadlock` runs it again.
"""

from __future__ import annotations

import functools
import logging
import random
import time
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from django.db import OperationalError, connection

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

# SQLSTATE codes of a transaction PostgreSQL rolled back and that may simply run again.
RETRYABLE_SQLSTATES = frozenset({"40P01", "40001"})  # deadlock_detected, serialization_failure
ATTEMPTS = 3


def is_retryable(exc: BaseException) -> bool:
    """Whether `exc` is a deadlock or serialization failure (the transaction was rolled back)."""
    cause = exc.__cause__ if isinstance(exc, OperationalError) else None
    return getattr(cause, "pgcode", None) in RETRYABLE_SQLSTATES


def retry_on_deadlock(fn: Callable[P, R]) -> Callable[P, R]:
    """Run `fn` again (up to ATTEMPTS in all, after a short random pause) when PostgreSQL
    aborted its transaction to break a deadlock. Only for a function that owns its
    transaction: inside a caller's transaction the whole transaction is lost, so the error
    goes up to the caller (whose own outermost function may retry)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                return fn(*args, **kwargs)
            except OperationalError as exc:
                if not is_retryable(exc) or connection.in_atomic_block or attempt == ATTEMPTS:
                    raise
                logger.warning("%s: %s, attempt %d; retrying", fn.__qualname__, exc, attempt)
                time.sleep(random.uniform(0.005, 0.05) * attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    return wrapper
