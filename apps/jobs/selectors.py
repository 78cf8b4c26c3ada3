"""Reads for jobs: tenant-scoped job lookups and the streamed results of a job."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
from django.contrib.auth.models import AbstractBaseUser
from django.db.models import JSONField, QuerySet, TextField
from django.db.models.functions import Cast
from django.http import Http404

from apps.accounts.selectors import user_client_org_ids, user_roles
from apps.jobs.models import Item, Job

RESULT_FIELDS = (
    "external_id",
    "label",
    "confidence",
    "agreement",
    "n_labels",
    "source",
    "state",
    "posterior",
    "gold_label",
    "result_meta",
)


def job_list_for_user(*, user: AbstractBaseUser) -> QuerySet[Job]:
    """Jobs the user may see: vendor staff (ops, qc) see every job; clients their own."""
    roles = user_roles(user=user)
    if roles & {"ops", "qc"}:
        return Job.objects.all()
    if "client" in roles:
        return Job.objects.filter(organization_id__in=user_client_org_ids(user=user))
    return Job.objects.none()


def job_get_for_user(*, user: AbstractBaseUser, job_id: int) -> Job:
    """The job if the user may see it; 404 otherwise, so other tenants' ids stay hidden."""
    job = job_list_for_user(user=user).select_related("organization").filter(pk=job_id).first()
    if job is None:
        raise Http404("No such job.")
    return job


def job_item_counts(*, job: Job) -> dict[str, int]:
    from django.db.models import Count

    counts = dict(
        Item.objects.filter(job=job).values_list("state").annotate(n=Count("id")).order_by()
    )
    return {state: counts.get(state, 0) for state in Item.State.values}


def job_results(
    *, job: Job, state: str | None = None, chunk_size: int = 10_000
) -> Iterator[dict[str, Any]]:
    """Every item's result as a dict, streamed from the database in chunks.

    On PostgreSQL the rows come through a server-side cursor, `chunk_size` at a time, so
    memory stays flat however many items the job has. JSON columns are read as text and
    decoded with orjson: Django's own JSONField decoding costs more than the rest of a row.
    """
    qs = Item.objects.filter(job=job)
    if state:
        qs = qs.filter(state=state)
    columns = [
        Cast(name, output_field=TextField()) if name in _JSON_RESULT_FIELDS else name
        for name in RESULT_FIELDS
    ]
    rows = qs.order_by("id").values_list(*columns).iterator(chunk_size=chunk_size)
    loads = orjson.loads
    for row in rows:
        record = dict(zip(RESULT_FIELDS, row, strict=True))
        for name in _JSON_RESULT_FIELDS:
            text = record[name]
            record[name] = None if text is None else loads(text)
        record["status"] = record.pop("state")
        record["is_gold"] = record.pop("gold_label") is not None
        yield record


_JSON_RESULT_FIELDS = tuple(
    name for name in RESULT_FIELDS if isinstance(Item._meta.get_field(name), JSONField)
)
