"""A transaction PostgreSQL aborted to break a deadlock runs again; what is left is a 503."""

from __future__ import annotations

import pytest
from django.db import OperationalError

from apps.common import retry
from apps.common.errors import exception_handler


class _PgError(Exception):
    def __init__(self, pgcode: str) -> None:
        super().__init__(pgcode)
        self.pgcode = pgcode


def _db_error(pgcode: str) -> OperationalError:
    error = OperationalError("deadlock detected")
    error.__cause__ = _PgError(pgcode)
    return error


@pytest.fixture(autouse=True)
def _no_pause(monkeypatch):
    monkeypatch.setattr(retry.time, "sleep", lambda _: None)


@pytest.mark.parametrize("pgcode", ["40P01", "40001"], ids=["deadlock", "serialization"])
def test_a_deadlocked_transaction_runs_again(pgcode):
    calls = []

    @retry.retry_on_deadlock
    def service():
        calls.append(1)
        if len(calls) < 3:
            raise _db_error(pgcode)
        return "done"

    assert service() == "done"
    assert len(calls) == 3


def test_other_database_errors_are_not_retried():
    calls = []

    @retry.retry_on_deadlock
    def service():
        calls.append(1)
        raise _db_error("53300")  # too_many_connections

    with pytest.raises(OperationalError):
        service()
    assert len(calls) == 1


def test_it_gives_up_after_the_last_attempt():
    calls = []

    @retry.retry_on_deadlock
    def service():
        calls.append(1)
        raise _db_error("40P01")

    with pytest.raises(OperationalError):
        service()
    assert len(calls) == retry.ATTEMPTS


@pytest.mark.django_db
def test_inside_a_callers_transaction_the_error_goes_up_at_once():
    calls = []

    @retry.retry_on_deadlock
    def service():
        calls.append(1)
        raise _db_error("40P01")

    with pytest.raises(OperationalError):
        service()  # the test's own transaction is the caller's
    assert len(calls) == 1


def test_a_deadlock_left_over_is_a_503_in_the_error_shape():
    response = exception_handler(_db_error("40P01"), {})

    assert response.status_code == 503
    assert response["Retry-After"] == "1"
    assert response.data["error"]["code"] == "retry"
