"""Writes for jobs: create, update, lifecycle transitions and item ingestion."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any

import numpy as np
import orjson
from django.contrib.auth.models import AbstractBaseUser
from django.db import DatabaseError, IntegrityError, connection, models, transaction
from django.utils import timezone
from rest_framework import status

from apps.accounts.models import Organization
from apps.common.errors import ApplicationError, ErrorCode
from apps.jobs.ingest import CleanRow, RawRow, RowSchema, iter_raw_rows, validate_row
from apps.jobs.kinds import SINGLE_CHOICE, answer_value, gold_problem, schema_kind_name
from apps.jobs.models import Item, Job
from apps.jobs.specs import check_kind_consistency, check_policy_consistency
from apps.webhooks import events as webhooks

INGEST_BATCH_SIZE = 2000
MAX_REPORTED_ERRORS = 1000


def _invalid_state(job: Job, action: str) -> ApplicationError:
    return ApplicationError(
        f"Cannot {action} a job that is {job.status}.",
        code=ErrorCode.INVALID_STATE,
        status_code=status.HTTP_409_CONFLICT,
        details={"status": job.status},
    )


@transaction.atomic
def job_create(
    *,
    organization: Organization,
    created_by: AbstractBaseUser | None,
    name: str,
    instructions: str = "",
    label_schema: dict,
    policy: dict | None = None,
    pricing: dict | None = None,
    routing: dict | None = None,
) -> Job:
    """Create a draft job for a client organization; the spec is already field-validated."""
    if organization.kind != Organization.Kind.CLIENT:
        raise ApplicationError("Jobs belong to client organizations.")
    job = Job(
        organization=organization,
        created_by=created_by,
        name=name,
        instructions=instructions,
        label_schema=label_schema,
        policy=policy or {},
        pricing=pricing or {},
        routing=routing or {},
    )
    check_policy_consistency(job.spec.policy)
    check_kind_consistency(label_schema=job.label_schema, routing=job.spec.routing)
    job.save()
    return job


@transaction.atomic
def job_update(*, job: Job, changes: dict[str, Any]) -> Job:
    """Update a job's name, instructions and specification.

    Classes can change only while the job is a draft: labels already given refer to them.
    Policy, pricing and routing are merged key by key into what the job has.
    """
    job = Job.objects.select_for_update().get(pk=job.pk)
    if job.status in (Job.Status.CANCELLED, Job.Status.COMPLETED):
        raise _invalid_state(job, "update")
    fields: list[str] = []
    for name in ("name", "instructions"):
        if name in changes:
            setattr(job, name, changes[name])
            fields.append(name)
    if "label_schema" in changes:
        if job.status != Job.Status.DRAFT and changes["label_schema"] != job.label_schema:
            raise ApplicationError(
                "The label schema can only change while the job is a draft.",
                code=ErrorCode.INVALID_STATE,
                status_code=status.HTTP_409_CONFLICT,
            )
        _gold_still_fits(job=job, label_schema=changes["label_schema"])
        job.label_schema = changes["label_schema"]
        fields.append("label_schema")
    for name in ("policy", "pricing", "routing"):
        if name in changes:
            setattr(job, name, {**getattr(job, name), **changes[name]})
            fields.append(name)
    check_policy_consistency(job.spec.policy)
    check_kind_consistency(label_schema=job.label_schema, routing=job.spec.routing)
    job.save(update_fields=[*fields, "updated_at"])
    return job


def _gold_still_fits(*, job: Job, label_schema: dict) -> None:
    """A draft's schema may change, but not so that a gold answer it holds no longer fits
    (nothing stored is dropped or reread silently): a 400 naming the first gold item that
    would not, and a 400 for a change of kind while the job has gold items."""
    golds = Item.objects.filter(job=job, gold_label__isnull=False).values_list(
        "external_id", "gold_label"
    )
    new_kind = schema_kind_name(label_schema)
    if new_kind != job.kind:
        first = golds.first()
        if first is not None:
            raise ApplicationError(
                f"The job holds gold items (first {first[0]!r}) answered as {job.kind}: "
                f"its kind cannot become {new_kind}.",
                details={"label_schema": {"kind": "cannot change while the job has gold items"}},
            )
        return
    for external_id, gold in golds.iterator():
        if new_kind == SINGLE_CHOICE:
            ok = gold in (label_schema.get("classes") or [])
            problem = None if ok else f"{gold!r} is not one of the classes"
        else:
            _, problem = gold_problem(label_schema=label_schema, value=answer_value(gold))
        if problem is not None:
            raise ApplicationError(
                f"Gold item {external_id!r} does not fit the new label schema: {problem}.",
                details={"label_schema": [problem], "item": external_id},
            )


@transaction.atomic
def job_launch(*, job: Job) -> Job:
    """Start (or resume) a job: draft or paused → running."""
    job = Job.objects.select_for_update().get(pk=job.pk)
    if job.status not in (Job.Status.DRAFT, Job.Status.PAUSED):
        raise _invalid_state(job, "launch")
    if job.kind == SINGLE_CHOICE and len(job.classes) < 2:
        raise ApplicationError(
            "A job needs a label schema with at least two classes before it can launch.",
            details={"label_schema": {"classes": "at least two classes are required"}},
        )
    if not Item.objects.filter(job=job, gold_label__isnull=True).exists():
        raise ApplicationError("A job needs at least one item (not only gold) to launch.")
    if job.status == Job.Status.DRAFT:
        # The policy may have changed since upload: untouched items take the current floor.
        Item.objects.filter(job=job, n_labels=0, n_leases=0, state=Item.State.OPEN).update(
            labels_needed=job.spec.policy.min_labels
        )
        job.launched_at = timezone.now()
    job.status = Job.Status.RUNNING
    job.save(update_fields=["status", "launched_at", "updated_at"])
    webhooks.job_event_emit(job=job, event=webhooks.Event.JOB_LAUNCHED)
    return job


@transaction.atomic
def job_resume(*, job: Job) -> Job:
    """Resume a paused job (paused → running); any other state is a 409 (a draft is
    launched, not resumed)."""
    locked = Job.objects.select_for_update().get(pk=job.pk)
    if locked.status != Job.Status.PAUSED:
        raise _invalid_state(locked, "resume")
    return job_launch(job=locked)


@transaction.atomic
def job_pause(*, job: Job) -> Job:
    job = Job.objects.select_for_update().get(pk=job.pk)
    if job.status != Job.Status.RUNNING:
        raise _invalid_state(job, "pause")
    job.status = Job.Status.PAUSED
    job.save(update_fields=["status", "updated_at"])
    webhooks.job_event_emit(job=job, event=webhooks.Event.JOB_PAUSED)
    return job


@transaction.atomic
def job_cancel(*, job: Job) -> Job:
    """Cancel a job; labels given so far are kept and its results stay readable."""
    job = Job.objects.select_for_update().get(pk=job.pk)
    if job.status in (Job.Status.CANCELLED, Job.Status.COMPLETED):
        raise _invalid_state(job, "cancel")
    job.status = Job.Status.CANCELLED
    job.save(update_fields=["status", "updated_at"])
    webhooks.job_event_emit(job=job, event=webhooks.Event.JOB_CANCELLED)
    return job


@dataclass
class IngestReport:
    created: int = 0
    updated: int = 0
    rejected: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)

    @property
    def errors_truncated(self) -> bool:
        return self.rejected > len(self.errors)

    def reject(self, row: int, external_id: Any, reasons: dict[str, str]) -> None:
        self.rejected += 1
        if len(self.errors) < MAX_REPORTED_ERRORS:
            entry: dict[str, Any] = {"row": row, "errors": reasons}
            if (
                isinstance(external_id, str | int)
                and not isinstance(external_id, bool)
                and external_id != ""
            ):
                entry["external_id"] = str(external_id)
            self.errors.append(entry)

    def as_dict(self) -> dict[str, Any]:
        return {
            "created": self.created,
            "updated": self.updated,
            "rejected": self.rejected,
            "errors": self.errors,
            "errors_truncated": self.errors_truncated,
        }


def item_ingest(
    *,
    job: Job,
    stream: IO[bytes],
    fmt: str,
    progress: Any = None,
) -> IngestReport:
    """Upsert items from a JSON list, JSONL or CSV byte stream, idempotent on external_id.

    Rows are parsed and validated one at a time and written in batches, so memory stays flat
    in the number of items. Good rows are stored and every bad row is reported by its
    number; a body that cannot be parsed at all (broken JSON list, bad CSV) raises
    UploadFormatError and the whole request stores nothing. `progress`, when given, is
    called with the number of rows handled so far.

    Items of a job are only ever created here, under the job's row lock: the PostgreSQL
    path relies on it to COPY a new job's items straight into the table.
    """
    with transaction.atomic():
        job = Job.objects.select_for_update().get(pk=job.pk)
        if job.status == Job.Status.CANCELLED:
            raise _invalid_state(job, "upload items to")
        return _ingest_rows(job, iter_raw_rows(stream, fmt), progress)


def _ingest_rows(job: Job, rows: Iterable[RawRow], progress: Any) -> IngestReport:
    report = IngestReport()
    schema = RowSchema(
        classes=job.classes, feature_dim=job.feature_dim, label_schema=job.label_schema
    )
    min_labels = job.spec.policy.min_labels
    batches = _clean_batches(rows, schema, report, progress)
    if connection.vendor == "postgresql":
        _copy_items(job, batches, report, min_labels=min_labels)
    else:
        for batch in batches:
            _write_batch(job, batch, report, min_labels=min_labels)

    fields = []
    if schema.feature_dim is not None and job.feature_dim != schema.feature_dim:
        job.feature_dim = schema.feature_dim
        fields.append("feature_dim")
    if report.created and job.status == Job.Status.COMPLETED:
        # New work reopens a finished job.
        job.status = Job.Status.RUNNING
        job.completed_at = None
        fields += ["status", "completed_at"]
    if fields:
        job.save(update_fields=[*fields, "updated_at"])
    return report


def _duplicate(first_row: int) -> dict[str, str]:
    return {"external_id": f"duplicate in this request (first at row {first_row})"}


class _SeenIds:
    """The external ids already accepted in this upload, with the row that brought each.

    Kept as a sorted array of 64-bit string hashes beside their row numbers: 12 bytes an id
    instead of ~100 for a dict of strings, so a million-row upload stays small. Python's str
    hash is SipHash under a per-process random key: two different ids share a hash with
    probability about n**2 / 2**65 (3e-10 for 100,000 ids) and nobody can craft such a
    pair. Should it ever happen, the second row is reported as a duplicate, never merged.
    """

    def __init__(self) -> None:
        self._hashes = np.empty(0, dtype=np.int64)
        self._rows = np.empty(0, dtype=np.int32)

    def first_rows(self, ids: list[str]) -> dict[str, int]:
        """Which of `ids` were seen before, with their first row."""
        if not len(self._hashes):
            return {}
        hashes = np.fromiter(map(hash, ids), dtype=np.int64, count=len(ids))
        at = np.minimum(np.searchsorted(self._hashes, hashes), len(self._hashes) - 1)
        hits = np.flatnonzero(self._hashes[at] == hashes)
        return {ids[i]: int(self._rows[at[i]]) for i in hits}

    def add(self, ids: list[str], rows: list[int]) -> None:
        hashes = np.fromiter(map(hash, ids), dtype=np.int64, count=len(ids))
        order = np.argsort(hashes, kind="stable")
        hashes = hashes[order]
        at = np.searchsorted(self._hashes, hashes)
        self._hashes = np.insert(self._hashes, at, hashes)
        self._rows = np.insert(self._rows, at, np.asarray(rows, dtype=np.int32)[order])


def _clean_batches(
    rows: Iterable[RawRow], schema: RowSchema, report: IngestReport, progress: Any
) -> Iterator[list[CleanRow]]:
    """Validate rows and drop repeats of an external_id; yield the good ones in batches.

    Bad rows go to the report in row order, batch by batch, as each batch is yielded.
    """
    seen = _SeenIds()
    pending: dict[str, tuple[int, CleanRow]] = {}
    errors: list[tuple[int, Any, dict[str, str]]] = []
    # Repeats inside the pending batch: (row, external_id, first row in the batch).
    repeats: list[tuple[int, str, int]] = []
    handled = 0

    def settle() -> list[CleanRow]:
        earlier = seen.first_rows(list(pending))
        for external_id, first_row in earlier.items():
            errors.append((pending.pop(external_id)[0], external_id, _duplicate(first_row)))
        for number, external_id, first_row in repeats:
            errors.append((number, external_id, _duplicate(earlier.get(external_id, first_row))))
        errors.sort(key=lambda error: error[0])
        for number, external_id, reasons in errors:
            report.reject(number, external_id, reasons)
        seen.add(list(pending), [number for number, _ in pending.values()])
        batch = [clean for _, clean in pending.values()]
        pending.clear()
        errors.clear()
        repeats.clear()
        return batch

    for raw in rows:
        handled += 1
        if raw.error is not None:
            errors.append((raw.number, None, {"row": raw.error}))
            continue
        clean, reasons = validate_row(raw.data, schema)
        if clean is None:
            external_id = raw.data.get("external_id") if isinstance(raw.data, dict) else None
            errors.append((raw.number, external_id, reasons))
            continue
        first = pending.get(clean.external_id)
        if first is not None:
            repeats.append((raw.number, clean.external_id, first[0]))
            continue
        pending[clean.external_id] = (raw.number, clean)
        if len(pending) >= INGEST_BATCH_SIZE:
            batch = settle()
            if batch:
                yield batch
            if progress:
                progress(handled)
    batch = settle()
    if batch:
        yield batch
    if progress:
        progress(handled)


def _write_batch(job: Job, batch: list[CleanRow], report: IngestReport, *, min_labels: int) -> None:
    """Upsert one batch through the ORM: the portable path (SQLite)."""
    now = timezone.now()
    items = [
        Item(
            job=job,
            external_id=clean.external_id,
            payload=clean.payload,
            features=clean.features,
            prediction=clean.prediction,
            gold_label=clean.gold_label,
            labels_needed=min_labels,
            created_at=now,
            updated_at=now,
        )
        for clean in batch
    ]
    ids = [item.external_id for item in items]
    existing = Item.objects.filter(job=job, external_id__in=ids).count()
    Item.objects.bulk_create(
        items,
        update_conflicts=True,
        unique_fields=["job", "external_id"],
        update_fields=["payload", "features", "prediction", "gold_label", "updated_at"],
    )
    report.updated += existing
    report.created += len(items) - existing


# --------------------------------------------------------------------------- PostgreSQL COPY

# Columns an upload row supplies; every other column of jobs_item gets the model's default.
_ROW_COLUMNS = ("external_id", "payload", "features", "prediction", "gold_label")
_UPDATED_ON_CONFLICT = ("payload", "features", "prediction", "gold_label", "updated_at")
_COPY_SPECIAL = re.compile(r"[\\\t\n\r]")
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_text(value: str) -> str:
    """A string as a field of COPY's text format."""
    return value.translate(_COPY_ESCAPES) if _COPY_SPECIAL.search(value) else value


def _copy_literal(field: models.Field, value: Any) -> str:
    if value is None:
        return "\\N"
    if isinstance(field, models.JSONField):
        return _copy_text(json.dumps(value, cls=field.encoder, separators=(",", ":")))
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, datetime):
        return value.isoformat()
    return _copy_text(str(value))


def _item_copy_layout(job: Job, *, min_labels: int, now: datetime) -> tuple[list[str], str]:
    """Column names for COPY and the text that ends every line: the per-upload constants.

    The constants come from the model (its defaults, the job, the upload time), so a column
    added to Item later is filled here as the ORM would fill it.
    """
    given: dict[str, Any] = {"job": job.pk, "labels_needed": min_labels}
    columns = list(_ROW_COLUMNS)
    tail = []
    for item_field in Item._meta.concrete_fields:
        if item_field.primary_key or item_field.name in _ROW_COLUMNS:
            continue
        if item_field.name in given:
            value = given[item_field.name]
        elif getattr(item_field, "auto_now", False) or getattr(item_field, "auto_now_add", False):
            value = now
        elif item_field.has_db_default() and not item_field.has_default():
            continue  # the database fills it
        else:
            value = item_field.get_default()
        columns.append(item_field.column)
        tail.append(_copy_literal(item_field, value))
    return columns, "\t" + "\t".join(tail) + "\n"


def _copy_chunks(
    batches: Iterator[list[CleanRow]], tail: str, counter: list[int]
) -> Iterator[bytes]:
    """COPY text, one chunk a batch; `counter[0]` counts the lines made."""
    copy_text, dumps = _copy_text, orjson.dumps
    for batch in batches:
        lines = []
        for row in batch:
            payload = row.payload_json
            if "\\" in payload:
                payload = payload.replace("\\", "\\\\")
            features = "\\N" if row.features is None else "\\\\x" + row.features.hex()
            prediction = "\\N" if row.prediction is None else dumps(row.prediction).decode()
            gold = "\\N" if row.gold_label is None else copy_text(row.gold_label)
            lines.append(
                f"{copy_text(row.external_id)}\t{payload}\t{features}\t{prediction}\t{gold}{tail}"
            )
        counter[0] += len(lines)
        yield "".join(lines).encode()


class _CopySource:
    """What psycopg2's copy_expert reads: COPY text made on demand, batch by batch.

    While PostgreSQL stores one chunk, this process parses the next, so the two work side
    by side. An error raised while reading (a broken body) is kept so that it, and not the
    COPY's cancellation, reaches the caller.
    """

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self.error: BaseException | None = None

    def read(self, size: int = -1) -> bytes:
        try:
            return next(self._chunks, b"")
        except BaseException as exc:
            self.error = exc
            raise


def _copy_items(
    job: Job, batches: Iterator[list[CleanRow]], report: IngestReport, *, min_labels: int
) -> None:
    """Write every batch with one COPY: straight into the table for a job with no items yet,
    else into a temporary table that one INSERT ... ON CONFLICT then upserts from.

    Precondition: the job's row lock is held (no other upload writes its items meanwhile).
    """
    now = timezone.now()
    columns, tail = _item_copy_layout(job, min_labels=min_labels, now=now)
    column_list = ", ".join(connection.ops.quote_name(name) for name in columns)
    table = connection.ops.quote_name(Item._meta.db_table)
    counter = [0]
    source = _CopySource(_copy_chunks(batches, tail, counter))
    fresh = not Item.objects.filter(job=job).exists()
    with connection.cursor() as cursor:
        try:
            # copy_expert is psycopg2's own: this gives its errors Django's exception types.
            with connection.wrap_database_errors:
                if fresh:
                    cursor.copy_expert(f"COPY {table} ({column_list}) FROM STDIN", source)
                else:
                    cursor.execute(f"DROP TABLE IF EXISTS {_STAGE}")
                    cursor.execute(
                        f"CREATE TEMPORARY TABLE {_STAGE} ON COMMIT DROP AS "
                        f"SELECT {column_list} FROM {table} WITH NO DATA"
                    )
                    cursor.copy_expert(f"COPY {_STAGE} ({column_list}) FROM STDIN", source)
        except DatabaseError as exc:
            if source.error is not None:
                raise source.error from None
            if isinstance(exc, IntegrityError):
                raise ApplicationError(
                    "Items of this job were written by someone else during the upload; retry.",
                    code=ErrorCode.INVALID_STATE,
                    status_code=status.HTTP_409_CONFLICT,
                ) from exc
            raise
        if fresh:
            report.created += counter[0]
            return
        updates = ", ".join(
            f"{connection.ops.quote_name(name)} = EXCLUDED.{connection.ops.quote_name(name)}"
            for name in _UPDATED_ON_CONFLICT
        )
        # A fresh temporary table is read back in the order it was written (no synchronized
        # scans on local buffers), so new items get ids in upload order.
        cursor.execute(
            f"WITH written AS (INSERT INTO {table} ({column_list}) "
            f"SELECT {column_list} FROM {_STAGE} "
            f"ON CONFLICT (job_id, external_id) DO UPDATE SET {updates} "
            "RETURNING (xmax = 0) AS inserted) "
            "SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) "
            "FROM written"
        )
        created, updated = cursor.fetchone()
        cursor.execute(f"DROP TABLE {_STAGE}")
    report.created += created
    report.updated += updated


_STAGE = "pg_temp.concord_item_upload"
