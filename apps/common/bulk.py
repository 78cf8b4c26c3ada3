"""Fast bulk updates of many rows with per-row values.

Django's `bulk_update` writes one `CASE WHEN id = ... THEN ...` expression per row and
field, which it compiles in Python: about 1 ms per row here (3 s for 3,000 items), and it
ran on every re-aggregation. On PostgreSQL `bulk_update_rows` sends each batch as one
`UPDATE ... FROM unnest(arrays)` statement instead (the values travel as typed arrays);
other databases use Django's `bulk_update`. Same effect: each object's `fields` are written.
"""

from __future__ import annotations

from collections.abc import Sequence

from django.db import connection, models

BATCH = 5000


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
