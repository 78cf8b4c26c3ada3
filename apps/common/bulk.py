"""Fast bulk updates of many rows with per-row values.

Django's `bulk_update` writes one `CASE WHEN id = ... THEN ...` expression per row and
field, which it compiles in Python: about 1 ms per row here (3 s for 3,000 items), and it
ran on every re-aggregation. On PostgreSQL `bulk_update_rows` sends each batch as one
`UPDATE ... FROM unnest(arrays)` statement instead (the values travel as typed arrays);
other databases use Django's `bulk_update`. Same effect: each object's `fields` are written.

`copy_compare_and_set` is `bulk_compare_and_set` for hundreds of thousands of rows: the
values travel by `COPY` into a temporary table (JSON encoded once with orjson, no per-value
adaptation in Python), and one `UPDATE ... FROM` per batch applies them. Same plan, same
rows left (`tests/common/test_bulk.py` checks the two against each other); a job
re-aggregation of 1M labels writes its moved results this way (`bench/reaggregate.py`).
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Sequence
from datetime import date, datetime

import orjson
from django.db import connection, models, transaction

BATCH = 5000
# Rows per COPY and UPDATE (one transaction each) of copy_compare_and_set: the rows of a batch
# stay locked until it commits, so a submit on one of them waits at most one batch's UPDATE.
COPY_BATCH = 20_000


def bulk_update_rows(
    model: type[models.Model],
    objs: Sequence[models.Model],
    fields: Sequence[str],
    *,
    batch_size: int = BATCH,
) -> int:
    """Write `fields` of every object in `objs` (by primary key), `batch_size` rows per
    statement (outside a transaction each statement commits on its own); returns rows
    written."""
    if not objs:
        return 0
    if connection.vendor != "postgresql":
        return model.objects.bulk_update(objs, list(fields), batch_size=min(batch_size, 1000))
    meta = model._meta
    pk = meta.pk
    columns = [meta.get_field(name) for name in fields]
    names = ["id", *(f"v{i}" for i in range(len(columns)))]
    casts = [f"%s::{pk.db_type(connection)}[]"] + [
        f"%s::{field.db_type(connection)}[]" for field in columns
    ]
    sets = ", ".join(
        f"{connection.ops.quote_name(field.column)} = v.v{i}" for i, field in enumerate(columns)
    )
    table = connection.ops.quote_name(meta.db_table)
    sql = (
        f"UPDATE {table} SET {sets} FROM unnest({', '.join(casts)}) AS v({', '.join(names)}) "
        f"WHERE {table}.{connection.ops.quote_name(pk.column)} = v.id"
    )
    written = 0
    with connection.cursor() as cursor:
        for start in range(0, len(objs), batch_size):
            batch = objs[start : start + batch_size]
            params = [[obj.pk for obj in batch]]
            for field in columns:
                params.append(
                    [
                        field.get_db_prep_save(getattr(obj, field.attname), connection)
                        for obj in batch
                    ]
                )
            cursor.execute(sql, params)
            written += cursor.rowcount
    return written


def _fields(
    model: type[models.Model], fields: Sequence[str], expect: Sequence[str]
) -> tuple[models.Field, list[models.Field], list[models.Field]]:
    meta = model._meta
    return meta.pk, [meta.get_field(n) for n in fields], [meta.get_field(n) for n in expect]


def _value_names(columns: Sequence[models.Field], checks: Sequence[models.Field]) -> list[str]:
    """Column names of the values relation: v0.. the values to write, e0.. the expected."""
    return [*(f"v{i}" for i in range(len(columns))), *(f"e{i}" for i in range(len(checks)))]


def _compare_and_set_sql(
    model: type[models.Model],
    columns: Sequence[models.Field],
    checks: Sequence[models.Field],
    values: str,
    cte: str = "",
) -> str:
    """The compare-and-set statement of both writers: the relation `values` (id, v0.., e0..;
    a table, or a name `cte` defines) joined to the rows that still hold e0.., locked in key
    order with SKIP LOCKED, written."""
    quote = connection.ops.quote_name
    table = quote(model._meta.db_table)
    key = quote(model._meta.pk.column)
    matches = " AND ".join(
        f"t.{quote(field.column)} IS NOT DISTINCT FROM v.e{i}" for i, field in enumerate(checks)
    )
    sets = ", ".join(f"{quote(field.column)} = v.v{i}" for i, field in enumerate(columns))
    return (
        f"WITH {cte}locked AS (SELECT t.{key} AS id FROM {table} t JOIN {values} v "
        f"ON v.id = t.{key} WHERE {matches or 'true'} ORDER BY t.{key} FOR UPDATE OF t "
        f"SKIP LOCKED) UPDATE {table} SET {sets} FROM {values} v JOIN locked ON locked.id = v.id "
        f"WHERE {table}.{key} = v.id RETURNING {table}.{key}"
    )


def bulk_compare_and_set(
    model: type[models.Model],
    objs: Sequence[models.Model],
    fields: Sequence[str],
    *,
    expect: Sequence[str],
    batch_size: int = BATCH,
) -> list:
    """Write `fields` of each object whose row still holds the object's values of the
    `expect` fields (compare-and-set), and return the primary keys written.

    A row that changed since the object was read is left alone: the writer that changed it
    holds the newer truth. On PostgreSQL each batch locks its rows in primary-key order with
    SKIP LOCKED, so this writer never waits for a row lock and cannot be part of a deadlock:
    a row another transaction holds is skipped (not written; the caller sees it missing from
    the result and may try again). Outside a transaction each batch commits on its own.
    """
    if not objs:
        return []
    if connection.vendor != "postgresql":
        written = []
        for obj in objs:
            match = {name: getattr(obj, name) for name in expect}
            values = {name: getattr(obj, name) for name in fields}
            if model.objects.filter(pk=obj.pk, **match).update(**values):
                written.append(obj.pk)
        return written
    pk, columns, checks = _fields(model, fields, expect)
    names = ["id", *_value_names(columns, checks)]
    casts = [f"%s::{pk.db_type(connection)}[]"] + [
        f"%s::{field.db_type(connection)}[]" for field in (*columns, *checks)
    ]
    cte = f"v AS (SELECT * FROM unnest({', '.join(casts)}) AS v({', '.join(names)})), "
    sql = _compare_and_set_sql(model, columns, checks, "v", cte)
    written = []
    with connection.cursor() as cursor:
        for start in range(0, len(objs), batch_size):
            batch = objs[start : start + batch_size]
            params = [[obj.pk for obj in batch]]
            for field in (*columns, *checks):
                params.append(
                    [
                        field.get_db_prep_save(getattr(obj, field.attname), connection)
                        for obj in batch
                    ]
                )
            cursor.execute(sql, params)
            written.extend(row[0] for row in cursor.fetchall())
    return written


_COPY_SPECIAL = re.compile(r"[\\\t\n\r]")
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_NULL = "\\N"


def _escaped(text: str) -> str:
    """`text` escaped for COPY's text format (most values have nothing to escape)."""
    return text.translate(_COPY_ESCAPES) if _COPY_SPECIAL.search(text) else text


def _copy_column(field: models.Field, values: list) -> list[str]:
    """`values` of `field` as fields of COPY's text format: the values Django would save.
    JSON goes through orjson (unless the field has its own encoder), floats, integers,
    booleans and text as Django's own fields convert them, anything else (timestamps)
    through the field's `get_db_prep_save`, a run of the same object (one timestamp for
    every row) encoded once."""
    if isinstance(field, models.JSONField) and field.encoder is None:
        option = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY
        return [
            _NULL if v is None else _escaped(orjson.dumps(v, option=option).decode())
            for v in values
        ]
    if isinstance(field, models.FloatField):
        return [_NULL if v is None else repr(float(v)) for v in values]
    if isinstance(field, models.BooleanField):
        return [_NULL if v is None else ("t" if v else "f") for v in values]
    if isinstance(field, models.IntegerField | models.AutoField):
        return [_NULL if v is None else str(int(v)) for v in values]
    if isinstance(field, models.CharField | models.TextField):
        return [_NULL if v is None else _escaped(str(v)) for v in values]
    out: list[str] = []
    last: object = object()
    text = _NULL
    for value in values:
        if value is not last:
            last = value
            prepared = field.get_db_prep_save(value, connection)
            if prepared is None:
                text = _NULL
            elif isinstance(prepared, datetime | date):
                text = prepared.isoformat()
            elif isinstance(field, models.JSONField):  # a field with its own encoder
                text = _escaped(json.dumps(value, cls=field.encoder))
            else:
                text = _escaped(str(prepared))
        out.append(text)
    return out


def copy_compare_and_set(
    model: type[models.Model],
    objs: Sequence[models.Model],
    fields: Sequence[str],
    *,
    expect: Sequence[str],
    batch_size: int = COPY_BATCH,
) -> list:
    """`bulk_compare_and_set` by COPY (PostgreSQL; other databases take that function): the
    same rows written, the same primary keys returned.

    Each batch is one transaction: a temporary table created, filled by COPY, joined by one
    `UPDATE ... FROM` whose rows are locked in primary-key order with SKIP LOCKED (a row
    another transaction holds is skipped, as there), and dropped. Nothing outlives the
    batch's transaction, so a pooler in transaction mode serves it like any statement.
    Values are encoded as Django saves them (`_copy_column`); `fields` of other types than
    JSON, text, numbers, booleans and dates go through the field's own `get_db_prep_save`.
    """
    if not objs:
        return []
    if connection.vendor != "postgresql":
        return bulk_compare_and_set(model, objs, fields, expect=expect, batch_size=batch_size)
    pk, columns, checks = _fields(model, fields, expect)
    names = _value_names(columns, checks)
    temp = "_copy_compare_and_set"
    create = (
        f"CREATE TEMPORARY TABLE {temp} (id {pk.db_type(connection)} PRIMARY KEY, "
        + ", ".join(
            f"{n} {field.db_type(connection)}"
            for n, field in zip(names, (*columns, *checks), strict=True)
        )
        + ")"
    )
    sql = _compare_and_set_sql(model, columns, checks, temp)
    every = (*columns, *checks)
    written: list = []
    for start in range(0, len(objs), batch_size):
        batch = objs[start : start + batch_size]
        cols = [_copy_column(pk, [obj.pk for obj in batch])]
        cols += [
            _copy_column(field, [getattr(obj, field.attname) for obj in batch]) for field in every
        ]
        buf = io.StringIO()
        buf.writelines("\t".join(row) + "\n" for row in zip(*cols, strict=True))
        buf.seek(0)
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(create)
            cursor.copy_expert(f"COPY {temp} (id, {', '.join(names)}) FROM STDIN", buf)
            cursor.execute(sql)
            written.extend(row[0] for row in cursor.fetchall())
            cursor.execute(f"DROP TABLE {temp}")
    return written
