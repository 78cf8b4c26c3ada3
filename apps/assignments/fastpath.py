"""PostgreSQL statements of the annotator hot path: one round trip per step.

`next` and `submit` run all day for every annotator, so on PostgreSQL their steps are single
SQL statements (data-modifying CTEs) instead of ORM queries: the lease is one statement that
picks the item with `FOR UPDATE SKIP LOCKED`, takes its slot and records the assignment; the
submit locks assignment and item with one statement and writes assignment, label and ledger
credit with another. The rules are the same as the ORM path (which SQLite uses) and are still
enforced by the database's constraints. Table names come from the models' metadata.
"""

from __future__ import annotations

import contextvars
import enum
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from functools import cache
from typing import Any

import orjson
from django.conf import settings
from django.db import connection

from apps.assignments.models import Assignment, Label
from apps.common import caches
from apps.common.instances import loaded
from apps.common.prepared import Prepared
from apps.jobs.models import Item, Job
from apps.quality.models import WorkerJobQuality
from apps.workforce.models import LedgerEntry, Pool, Worker


def enabled() -> bool:
    """Whether the hot path runs as these statements: on PostgreSQL, unless the
    CONCORD_FASTPATH setting turns it off (then PostgreSQL runs the ORM path, as SQLite)."""
    return connection.vendor == "postgresql" and settings.CONCORD_FASTPATH


class Path(enum.StrEnum):
    """Which write path served a lease or a submit (the `Concord-Path` response header)."""

    SQL = "sql"  # the statements below, outside any transaction of the caller
    SQL_LOCKED = "sql-locked"  # the statements below, under the item's row lock
    ORM = "orm"  # the ORM (SQLite, gold leases, CONCORD_FASTPATH off)


# Per request (a context variable, so threads and requests do not mix) and per process.
_SERVED: contextvars.ContextVar[Path | None] = contextvars.ContextVar("served", default=None)
SERVED_COUNTS: Counter[Path] = Counter()


def served(path: Path) -> None:
    """Record which path served the current lease or submit."""
    _SERVED.set(path)
    SERVED_COUNTS[path] += 1


def served_by() -> Path | None:
    """The path that served the current request's lease or submit, if any."""
    return _SERVED.get()


def served_reset() -> None:
    _SERVED.set(None)


def _json(value: str | None) -> Any:
    return None if value is None else orjson.loads(value)


@cache
def _tables() -> dict[str, str]:
    return {
        "item": Item._meta.db_table,
        "job": Job._meta.db_table,
        "assignment": Assignment._meta.db_table,
        "label": Label._meta.db_table,
        "ledger": LedgerEntry._meta.db_table,
        "pool_jobs": Pool.jobs.through._meta.db_table,
        "pool_members": Pool.members.through._meta.db_table,
    }


# --------------------------------------------------------------------------- next


@cache
def _open_jobs_sql(one_job: bool) -> str:
    t = _tables()
    return (
        f"SELECT j.id, j.status, j.label_schema::text, j.instructions, j.policy::text, "
        f"j.pricing::text, j.routing::text FROM {t['job']} j "
        f"WHERE j.status = 'running' AND j.id IN ("
        f"  SELECT pj.job_id FROM {t['pool_jobs']} pj "
        f"  JOIN {t['pool_members']} pm ON pm.pool_id = pj.pool_id WHERE pm.worker_id = %s)"
        + (" AND j.id = %s" if one_job else "")
        + " ORDER BY j.id"
    )


@cache
def _open_jobs_statement(one_job: bool) -> Prepared:
    sql = _open_jobs_sql(one_job).replace("%s", "%(worker)s", 1).replace("%s", "%(job)s", 1)
    return Prepared(
        f"concord_open_jobs{'_one' if one_job else ''}", sql, {"worker": "bigint", "job": "bigint"}
    )


def _job_from_row(row: tuple) -> Job:
    return loaded(
        Job,
        {
            "id": row[0],
            "status": row[1],
            "label_schema": _json(row[2]),
            "instructions": row[3],
            "policy": _json(row[4]),
            "pricing": _json(row[5]),
            "routing": _json(row[6]),
        },
    )


# The jobs open to each worker, kept per process for a moment: a worker asks for work all
# day and this rarely changes. The cache is registered in apps.common.caches: a change of
# pool members, pool jobs or a job (signals in apps.assignments.apps, and the pool services
# that write the through table directly) invalidates it in every process on commit. A
# paused or stopped job is never leased from a stale list: the lease checks the job's
# status itself.
OPEN_JOBS = caches.register(
    name="open_jobs",
    ttl_s=2.0,
    max_entries=5_000,
    invalidated_by="Job / Pool saves and deletes, pool members and jobs changed (signals); "
    "pool_job_open, pool_job_close",
)


def forget_open_jobs(**_: Any) -> None:
    """Invalidate every process's open-jobs lists (after the current commit)."""
    OPEN_JOBS.invalidate()


def open_jobs(*, worker_id: int, job_id: int | None) -> list[Job]:
    """Running jobs open to one of the worker's pools (one query, then cached briefly)."""
    return OPEN_JOBS.get(
        (worker_id, job_id), lambda: _open_jobs_query(worker_id=worker_id, job_id=job_id)
    )


def _open_jobs_query(*, worker_id: int, job_id: int | None) -> list[Job]:
    with connection.cursor() as cursor:
        _open_jobs_statement(job_id is not None).execute(
            cursor, {"worker": worker_id, "job": job_id}
        )
        return [_job_from_row(row) for row in cursor.fetchall()]


@cache
def _eligible_sql() -> str:
    """The lease's rule for an item `i` the worker may take: the SQL form of
    apps.assignments.leasing.eligible_items (a test holds the two equal on the same data).
    Parameters: %(job)s, %(state)s, %(spread)s, %(worker)s."""
    t = _tables()
    return f"""i.job_id = %(job)s AND i.state = %(state)s AND i.gold_label IS NULL
      AND i.n_labels < i.labels_needed - i.n_leases
      AND (i.n_leases = 0 OR NOT %(spread)s)
      AND NOT EXISTS (
          SELECT 1 FROM {t["assignment"]} a WHERE a.item_id = i.id AND a.worker_id = %(worker)s
      )"""


_ELIGIBLE_ORDER = "ORDER BY i.priority DESC, i.id"


def eligible_ids(*, job_id: int, worker_id: int, state: str, spread: bool) -> list[int]:
    """Every item the lease statement could pick, best first (for the parity tests)."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT i.id FROM {_tables()['item']} i WHERE {_eligible_sql()} {_ELIGIBLE_ORDER}",
            {"job": job_id, "worker": worker_id, "state": state, "spread": spread},
        )
        return [row[0] for row in cursor.fetchall()]


@cache
def _lease_sql() -> str:
    t = _tables()
    worker = Worker._meta.db_table
    return f"""
WITH c AS MATERIALIZED (
    SELECT i.id, i.external_id, i.payload, i.prediction FROM {t["item"]} i
    WHERE {_eligible_sql()}
      AND EXISTS (SELECT 1 FROM {t["job"]} jj WHERE jj.id = %(job)s AND jj.status = 'running')
      -- The worker's status is read here, not trusted from the request's credentials.
      AND EXISTS (
          SELECT 1 FROM {worker} ww WHERE ww.id = %(worker)s AND ww.status = 'active'
      )
    {_ELIGIBLE_ORDER}
    LIMIT 1
    FOR UPDATE OF i SKIP LOCKED
), taken AS (
    UPDATE {t["item"]} SET n_leases = n_leases + 1 FROM c WHERE {t["item"]}.id = c.id
    RETURNING {t["item"]}.id
), lease AS (
    INSERT INTO {t["assignment"]}
        (item_id, job_id, worker_id, state, is_gold, leased_at, expires_at, finished_at)
    SELECT c.id, %(job)s, %(worker)s, 'leased', false, %(now)s, %(expires)s, NULL FROM c
    RETURNING id, item_id, expires_at
)
SELECT lease.id, c.id, c.external_id, c.payload::text, c.prediction::text, lease.expires_at
FROM lease JOIN c ON c.id = lease.item_id
"""


@cache
def _lease_statement() -> Prepared:
    types = {
        "job": "bigint",
        "state": "text",
        "worker": "bigint",
        "spread": "boolean",
        "now": "timestamptz",
        "expires": "timestamptz",
    }
    return Prepared("concord_lease", _lease_sql(), types)


@dataclass(frozen=True)
class Leased:
    assignment_id: int
    item: Item
    expires_at: datetime


def lease(
    *, job_id: int, worker_id: int, state: str, now: datetime, expires: datetime, spread: bool
) -> Leased | None:
    """Pick, slot and lease the best free item of the state in one statement, or None.

    With `spread`, only items nobody else holds a lease on: concurrent annotators then work
    on different items, so their submits do not queue on one item's row lock, and each
    label is decided (dynamic redundancy) before the item's next lease.

    Raises IntegrityError only when a concurrent request of the same worker leased the same
    item (the (item, worker) constraint).
    """
    with connection.cursor() as cursor:
        _lease_statement().execute(
            cursor,
            {
                "job": job_id,
                "worker": worker_id,
                "state": state,
                "now": now,
                "expires": expires,
                "spread": spread,
            },
            # A lease lost in a crash of PostgreSQL is lost whole (the item's slot with
            # it): its submit then answers 404 and the annotator asks again. A label is
            # never stored on a lost lease: its synchronous commit flushes the WAL up to
            # itself, the lease's included. The lease commit is half of a label's commits.
            asynchronous_commit=True,
        )
        row = cursor.fetchone()
    if row is None:
        return None
    item = loaded(
        Item,
        {
            "id": row[1],
            "external_id": row[2],
            "payload": _json(row[3]),
            "prediction": _json(row[4]),
        },
    )
    return Leased(assignment_id=row[0], item=item, expires_at=row[5])


# --------------------------------------------------------------------------- submit


@cache
def _best_matrix_sql() -> str:
    """A worker's stored matrix: this job's own estimate, else the latest from an earlier job
    with the same classes (history as a prior). `{worker}`, `{job}` and `{key}` are SQL."""

    quality = WorkerJobQuality._meta.db_table
    return f"""
        SELECT q.confusion FROM {quality} q
        WHERE q.worker_id = {{worker}}
          AND (q.job_id = {{job}} OR (q.classes_key = {{key}} AND q.source = 'aggregation'))
        ORDER BY (q.job_id = {{job}}) DESC, q.updated_at DESC
        LIMIT 1"""


def stored_matrix(*, worker_id: int, job_id: int, key: str) -> list | None:
    """The matrix the submit statements read for a worker (for the parity tests)."""
    sql = _best_matrix_sql().format(worker="%(worker)s", job="%(job)s", key="%(key)s")
    with connection.cursor() as cursor:
        cursor.execute(sql, {"worker": worker_id, "job": job_id, "key": key})
        row = cursor.fetchone()
    return None if row is None else _json(row[0]) if isinstance(row[0], str) else row[0]


def _answers_columns_sql(*, item: str, job: str, key: str) -> str:
    """Two result columns (SQL): the item's answers as a JSON list of [worker, value, tier,
    worker status, stored matrix], oldest first, and the submitting worker's (%(worker)s)
    own stored matrix. `item`, `job` and `key` are SQL expressions."""
    t = _tables()
    worker = Worker._meta.db_table
    best = _best_matrix_sql()
    return f"""
       (SELECT json_agg(json_build_array(l.worker_id, l.value, l.tier, w.status, m.confusion)
                        ORDER BY l.id)
        FROM {t["label"]} l JOIN {worker} w ON w.id = l.worker_id
        LEFT JOIN LATERAL ({best.format(worker="l.worker_id", job=job, key=key)}) m ON true
        WHERE l.item_id = {item})::text,
       ({best.format(worker="%(worker)s", job=job, key=key)})::text"""


@cache
def _submit_read_sql(lock: bool = True) -> str:
    """The submit's read: assignment, item, job and answers; with `lock`, the assignment and
    item rows locked (FOR UPDATE), otherwise a plain read of one snapshot."""
    t = _tables()
    # The classes key as apps.quality.matrices.classes_key computes it (a test holds the two
    # equal): sha256 of the class names joined by U+001F, first 32 hex digits.
    key = (
        "(SELECT left(encode(sha256(convert_to(coalesce(string_agg(c.v, chr(31) "
        "ORDER BY c.n), ''), 'UTF8')), 'hex'), 32) "
        "FROM jsonb_array_elements_text(x.label_schema -> 'classes') WITH ORDINALITY c(v, n))"
    )
    # The item's answers come from this statement's snapshot: if the item's row lock had to
    # wait for another submit, that label may be missing, which the caller sees by comparing
    # their number with the (locked, current) n_labels and then reads them again.
    answers = _answers_columns_sql(item="x.item_id", job="x.job_id", key="(SELECT key FROM k)")
    return f"""
WITH x AS (
    SELECT a.id, a.state, a.worker_id, a.item_id, a.is_gold, a.leased_at, a.expires_at,
           i.gold_label, i.state AS item_state, i.n_labels, i.labels_needed,
           i.vote_counts::text AS vote_counts, i.result_meta::text AS result_meta,
           j.id AS job_id, j.status, j.label_schema, j.instructions, j.policy::text AS policy,
           j.pricing::text AS pricing, j.routing::text AS routing
    FROM {t["assignment"]} a JOIN {t["item"]} i ON i.id = a.item_id
    JOIN {t["job"]} j ON j.id = a.job_id
    WHERE a.id = %(assignment)s {"FOR UPDATE OF a, i" if lock else ""}
), k AS (
    SELECT {key} AS key FROM x
)
SELECT x.id, x.state, x.worker_id, x.item_id, x.is_gold, x.leased_at, x.expires_at,
       x.gold_label, x.item_state, x.n_labels, x.labels_needed, x.vote_counts, x.result_meta,
       x.job_id, x.status, x.label_schema::text, x.instructions, x.policy, x.pricing,
       x.routing,{answers},
       -- The submitting worker's status from the database, never from cached credentials.
       (SELECT ws.status FROM {Worker._meta.db_table} ws WHERE ws.id = %(worker)s)
FROM x
"""


@cache
def _submit_read_statement(lock: bool = True) -> Prepared:
    return Prepared(
        "concord_lock_for_submit" if lock else "concord_read_for_submit",
        _submit_read_sql(lock),
        {"assignment": "bigint", "worker": "bigint"},
    )


@cache
def _answers_sql() -> str:
    return "SELECT" + _answers_columns_sql(item="%(item)s", job="%(job)s", key="%(key)s")


@cache
def _answers_statement() -> Prepared:
    types = {"item": "bigint", "job": "bigint", "worker": "bigint", "key": "text"}
    return Prepared("concord_item_answers", _answers_sql(), types)


@dataclass(frozen=True)
class Answers:
    """An item's stored answers (worker, value, tier) with those workers' current statuses
    and stored matrices, plus the submitting worker's own matrix (None if there is none)."""

    answers: list[tuple[int, str, str]]
    statuses: dict[int, str]
    matrices: dict[int, list]
    mine: list | None

    def with_answer(
        self, *, worker_id: int, value: str, tier: str, status: str
    ) -> tuple[list, dict, dict]:
        """(answers, statuses, matrices) including one more answer, as the decision reads them."""
        matrices = dict(self.matrices)
        if self.mine is not None:
            matrices[worker_id] = self.mine
        return (
            [*self.answers, (worker_id, value, tier)],
            {**self.statuses, worker_id: status},
            matrices,
        )


def _answers(earlier: str | None, mine: str | None) -> Answers:
    rows = orjson.loads(earlier) if earlier else []
    return Answers(
        answers=[(w, v, t) for w, v, t, _, _ in rows],
        statuses={w: st for w, _, _, st, _ in rows},
        matrices={w: m for w, _, _, _, m in rows if m is not None},
        mine=_json(mine),
    )


@dataclass(frozen=True)
class SubmitRead:
    """A submit's read: the assignment (with its job), the item, the answers and the
    submitting worker's current status; the rows are locked when it comes from
    lock_for_submit(), not from read_for_submit()."""

    assignment: Assignment
    item: Item
    answers: Answers
    worker_status: str | None


def read_for_submit(*, assignment_id: int, worker_id: int) -> SubmitRead | None:
    """What lock_for_submit() reads, from one snapshot and without locking anything: for a
    submit whose write re-checks that the item did not change (record_label's `expect`)."""
    return _submit_read(
        assignment_id=assignment_id, worker_id=worker_id, classes_key=None, lock=False
    )


def lock_for_submit(*, assignment_id: int, worker_id: int, classes_key: Any) -> SubmitRead | None:
    """Lock the assignment and its item (in that order, as everywhere) and read the job's
    columns, the item's answers so far with the workers' stored matrices, and `worker_id`'s
    own matrix: one statement, a second only when the lock waited for another label.

    `classes_key`: the function computing a job's classes key (for the re-read).
    Precondition: inside a transaction.
    """
    return _submit_read(
        assignment_id=assignment_id, worker_id=worker_id, classes_key=classes_key, lock=True
    )


def _submit_read(
    *, assignment_id: int, worker_id: int, classes_key: Any, lock: bool
) -> SubmitRead | None:
    with connection.cursor() as cursor:
        _submit_read_statement(lock).execute(
            cursor, {"assignment": assignment_id, "worker": worker_id}
        )
        row = cursor.fetchone()
        if row is None:
            return None
        job = _job_from_row(row[13:20])
        answers = _answers(row[20], row[21])
        worker_status = row[22]
        if lock and len(answers.answers) != row[9]:
            # The snapshot predates a label committed while this statement waited for the
            # item's lock: read the answers again, now that the lock is held.
            _answers_statement().execute(
                cursor,
                {
                    "item": row[3],
                    "job": job.pk,
                    "worker": worker_id,
                    "key": classes_key(job.classes),
                },
            )
            answers = _answers(*cursor.fetchone())
    assignment = loaded(
        Assignment,
        {
            "id": row[0],
            "state": row[1],
            "worker_id": row[2],
            "item_id": row[3],
            "job_id": job.pk,
            "is_gold": row[4],
            "leased_at": row[5],
            "expires_at": row[6],
        },
    )
    assignment._state.fields_cache["job"] = job
    item = loaded(
        Item,
        {
            "id": row[3],
            "job_id": job.pk,
            "gold_label": row[7],
            "state": row[8],
            "n_labels": row[9],
            "labels_needed": row[10],
            "vote_counts": _json(row[11]),
            "result_meta": _json(row[12]),
        },
    )
    return SubmitRead(
        assignment=assignment, item=item, answers=answers, worker_status=worker_status
    )


# Item columns a label's decision may set, with their PostgreSQL types; NULL parameters
# leave a column unchanged, except where a `set_*` flag says the value is meant.
_ITEM_UPDATE = {
    "vote_counts": "jsonb",
    "updated_at": "timestamptz",
    "state": "text",
    "labels_needed": "integer",
    "expert_slot": "boolean",
    "set_agreement": "boolean",
    "agreement": "double precision",
    "posterior": "jsonb",
    "set_result": "boolean",
    "label": "text",
    "confidence": "double precision",
    "source": "text",
    "result_meta": "jsonb",
    "settled_at": "timestamptz",
}


@cache
def _record_sql() -> str:
    t = _tables()
    worker = Worker._meta.db_table
    return f"""
WITH live AS (
    -- The lease is still this worker's and live, and the item is as the decision saw it
    -- (rows already locked by this transaction, or locked here: a submit that read without
    -- locking writes nothing if another label or a state change came in between).
    SELECT a.id FROM {t["assignment"]} a JOIN {t["item"]} i ON i.id = a.item_id
    WHERE a.id = %(assignment)s AND a.worker_id = %(worker)s AND a.state = 'leased'
      AND a.expires_at > %(now)s AND i.id = %(item)s AND i.state = %(expect_state)s
      AND i.n_labels = %(expect_labels)s AND i.labels_needed = %(expect_needed)s
      -- A worker banned or suspended since the read earns nothing more.
      AND EXISTS (SELECT 1 FROM {worker} w WHERE w.id = %(worker)s AND w.status = 'active')
    FOR UPDATE OF a, i
), done AS (
    UPDATE {t["assignment"]} SET state = 'submitted', finished_at = %(now)s
    WHERE id = (SELECT id FROM live) RETURNING id
), label AS (
    INSERT INTO {t["label"]}
        (assignment_id, item_id, job_id, worker_id, value, tier, duration_ms, is_gold,
         is_correct, created_at)
    SELECT done.id, %(item)s, %(job)s, %(worker)s, %(value)s, %(tier)s, %(duration)s,
           %(is_gold)s, %(is_correct)s, %(now)s FROM done
    RETURNING id
), credit AS (
    INSERT INTO {t["ledger"]}
        (worker_id, job_id, label_id, kind, amount, idempotency_key, note, created_at)
    SELECT %(worker)s, %(job)s, label.id, %(kind)s, %(amount)s, 'label:' || label.id, '',
           %(now)s FROM label
    RETURNING id
), item AS (
    -- The lease slot becomes a label, plus the decision's values.
    UPDATE {t["item"]} SET
        n_leases = n_leases - 1,
        n_labels = n_labels + 1,
        vote_counts = %(vote_counts)s,
        updated_at = %(updated_at)s,
        state = coalesce(%(state)s, state),
        labels_needed = CASE WHEN %(expert_slot)s THEN n_labels + n_leases + 1
                             ELSE coalesce(%(labels_needed)s, labels_needed) END,
        agreement = CASE WHEN %(set_agreement)s THEN %(agreement)s ELSE agreement END,
        posterior = CASE WHEN %(set_agreement)s THEN %(posterior)s ELSE posterior END,
        label = CASE WHEN %(set_result)s THEN %(label)s ELSE label END,
        confidence = CASE WHEN %(set_result)s THEN %(confidence)s ELSE confidence END,
        source = CASE WHEN %(set_result)s THEN %(source)s ELSE source END,
        result_meta = CASE WHEN %(set_result)s THEN %(result_meta)s ELSE result_meta END,
        settled_at = coalesce(%(settled_at)s, settled_at)
    WHERE id = %(item)s AND EXISTS (SELECT 1 FROM label)
    RETURNING id
)
SELECT label.id, (SELECT count(*) FROM credit), (SELECT count(*) FROM item) FROM label
"""


@cache
def _record_statement() -> Prepared:
    types = {
        "now": "timestamptz",
        "assignment": "bigint",
        "item": "bigint",
        "job": "bigint",
        "worker": "bigint",
        "value": "text",
        "tier": "text",
        "duration": "integer",
        "is_gold": "boolean",
        "is_correct": "boolean",
        "kind": "text",
        "amount": "numeric",
        "expect_state": "text",
        "expect_labels": "integer",
        "expect_needed": "integer",
        **_ITEM_UPDATE,
    }
    return Prepared("concord_record_label", _record_sql(), types)


def _jsonb(value: Any) -> str | None:
    if value is None:
        return None
    return orjson.dumps(value, default=float, option=orjson.OPT_SERIALIZE_NUMPY).decode()


def _item_params(values: dict[str, Any], expert_slot: bool) -> dict[str, Any]:
    unknown = set(values) - set(_ITEM_UPDATE)
    if unknown:  # pragma: no cover - a new decision field needs its column here
        raise ValueError(f"item columns not handled by the submit statement: {sorted(unknown)}")
    return {
        "vote_counts": _jsonb(values["vote_counts"]),
        "updated_at": values["updated_at"],
        "state": values.get("state"),
        "labels_needed": values.get("labels_needed"),
        "expert_slot": expert_slot,
        "set_agreement": "agreement" in values,
        "agreement": values.get("agreement"),
        "posterior": _jsonb(values.get("posterior")),
        "set_result": "label" in values,
        "label": values.get("label"),
        "confidence": values.get("confidence"),
        "source": values.get("source"),
        "result_meta": _jsonb(values.get("result_meta")),
        "settled_at": values.get("settled_at"),
    }


def record_label(
    *,
    assignment_id: int,
    item_id: int,
    job_id: int,
    worker_id: int,
    value: str,
    tier: str,
    duration_ms: int | None,
    gold_label: str | None,
    amount: Decimal,
    item_values: dict[str, Any],
    expert_slot: bool,
    expect: tuple[str, int, int],
    now: datetime,
    is_correct: bool | None = None,
) -> Label | None:
    """In one statement: mark the assignment submitted, store the label, credit it, and
    update the item (the slot becomes a label, plus `item_values`, the label's decision;
    `expert_slot` sets labels_needed to one more than the item's labels and leases).

    Only if the lease is still `worker_id`'s and live and the item still has the (state,
    n_labels, labels_needed) of `expect`, what the decision was made from; otherwise it
    writes nothing and returns None. The statement locks the assignment and item rows (a
    no-op if the caller's transaction holds them): in autocommit it is its own transaction.
    """
    is_gold = gold_label is not None
    # A gold answer of another kind is scored by the decision (`is_correct`), not by equality.
    correct = (is_correct if is_correct is not None else value == gold_label) if is_gold else None
    with connection.cursor() as cursor:
        _record_statement().execute(
            cursor,
            {
                "now": now,
                "assignment": assignment_id,
                "item": item_id,
                "job": job_id,
                "worker": worker_id,
                "value": value,
                "tier": tier,
                "duration": duration_ms,
                "is_gold": is_gold,
                "is_correct": correct,
                "kind": LedgerEntry.Kind.LABEL.value,
                "amount": amount,
                "expect_state": expect[0],
                "expect_labels": expect[1],
                "expect_needed": expect[2],
                **_item_params(item_values, expert_slot),
            },
        )
        row = cursor.fetchone()
    if row is None:
        return None
    label_id, credited, updated = row
    if credited != 1 or updated != 1:  # pragma: no cover - the statement is all or nothing
        raise RuntimeError(f"label {label_id} was not credited or its item not updated")
    return loaded(
        Label,
        {
            "id": label_id,
            "assignment_id": assignment_id,
            "item_id": item_id,
            "job_id": job_id,
            "worker_id": worker_id,
            "value": value,
            "tier": tier,
            "duration_ms": duration_ms,
            "is_gold": is_gold,
            "is_correct": correct,
            "created_at": now,
        },
    )


# --------------------------------------------------------------------------- job completion


@cache
def _unsettled_statement() -> Prepared:
    t = _tables()
    return Prepared(
        "concord_job_unsettled",
        f"SELECT EXISTS (SELECT 1 FROM {t['item']} WHERE job_id = %(job)s "
        "AND gold_label IS NULL AND state IN ('open', 'expert', 'review'))",
        {"job": "bigint"},
    )


def job_has_unsettled(*, job_id: int) -> bool:
    """Whether any non-gold item of the job is still open, with an expert or in review."""
    with connection.cursor() as cursor:
        _unsettled_statement().execute(cursor, {"job": job_id})
        return bool(cursor.fetchone()[0])
