"""Reads for jobs: tenant-scoped job lookups and the streamed results of a job.

The tenancy rule lives here (`job_list_for_user`); every API, page and service that takes
a job id from a caller goes through it, so that another tenant's job answers 404.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator
from typing import Any

import orjson
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Count, JSONField, Q, QuerySet, TextField
from django.db.models.functions import Cast
from django.http import Http404

from apps.accounts.models import Organization, Role
from apps.accounts.selectors import (
    STAFF_ROLES,
    contract_client_ids,
    contract_vendor_ids,
    user_client_org_ids,
    user_roles,
    user_vendor_org_ids,
)
from apps.jobs.kinds import SINGLE_CHOICE, answer_value, schema_kind
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


def _vendor_jobs(vendor_ids: QuerySet | list[int]) -> Q:
    """Jobs vendor staff may see: those of clients with an active contract with the vendor,
    and those open to one of the vendor's pools."""
    open_to_pools = Job.pools.through.objects.filter(pool__organization_id__in=vendor_ids).values(
        "job_id"
    )
    return Q(organization_id__in=contract_client_ids(vendor_ids=vendor_ids)) | Q(
        pk__in=open_to_pools
    )


def job_list_for_vendors(*, vendor_ids: QuerySet | list[int]) -> QuerySet[Job]:
    """Jobs the staff of these vendors may see and act on (the vendor half of
    `job_list_for_user`), for operations only one staff role may do (ops opening pools and
    paying bonuses, QC deciding reviews), scoped through that role's memberships alone."""
    return Job.objects.filter(_vendor_jobs(vendor_ids))


# The roles that change jobs (edit, upload, launch / pause / cancel, re-aggregate, retrain,
# dispute): QC read jobs but never change them.
JOB_WRITER_ROLES = frozenset({Role.CLIENT.value, Role.OPS.value})


def job_list_for_user(
    *, user: AbstractBaseUser, roles: frozenset[str] | None = None
) -> QuerySet[Job]:
    """Jobs the user may see and act on (what they may do with them is their role's call).

    - A client sees the jobs of the client organizations they belong to.
    - Vendor staff (ops, QC) see the jobs of every client their vendor has an active
      `VendorContract` with, and the jobs open to one of their vendor's pools (so that a
      vendor keeps sight of work its workers still do; opening a job to a pool needs the
      contract in the first place).
    - Annotators and experts see no jobs here: only the tasks handed to them.

    `roles` limits the memberships that count to those roles (JOB_WRITER_ROLES for a
    change), so that someone who is QC at one vendor and ops at another cannot change the
    first vendor's clients' jobs.
    """
    roles = user_roles(user=user) if roles is None else user_roles(user=user) & roles
    scope = Q()
    allowed = False
    if roles & STAFF_ROLES:
        scope |= _vendor_jobs(user_vendor_org_ids(user=user, roles=roles & STAFF_ROLES))
        allowed = True
    if Role.CLIENT in roles:
        scope |= Q(organization_id__in=user_client_org_ids(user=user))
        allowed = True
    if not allowed:
        return Job.objects.none()
    return Job.objects.filter(scope)


def client_organization_for_ops(*, user: AbstractBaseUser, name: str) -> Organization | None:
    """The client organization of this name if one of the user's vendors, as ops, has an
    active contract with it (ops create jobs only for the clients they serve); else None."""
    vendor_ids = user_vendor_org_ids(user=user, roles=frozenset({Role.OPS.value}))
    return Organization.objects.filter(
        name=name,
        kind=Organization.Kind.CLIENT,
        pk__in=contract_client_ids(vendor_ids=vendor_ids),
    ).first()


def job_vendor_ids_for_user(*, user: AbstractBaseUser, job: Job) -> list[int]:
    """The vendor organizations through which the user sees the job as staff (ops or QC).

    Empty when the user sees it only as its client: then no worker identity or pay may be
    shown (see `job_results(..., workers_visible=False)` and the metrics selectors).
    """
    if not user_roles(user=user) & STAFF_ROLES:
        return []
    vendor_ids = list(user_vendor_org_ids(user=user).values_list("organization_id", flat=True))
    if not vendor_ids:
        return []
    contracted = contract_vendor_ids(client_id=job.organization_id, vendor_ids=vendor_ids)
    pooled = Job.pools.through.objects.filter(
        job_id=job.pk, pool__organization_id__in=vendor_ids
    ).values_list("pool__organization_id", flat=True)
    return sorted(set(contracted) | set(pooled))


def worker_pseudonym(*, job_id: int, worker_id: int) -> str:
    """An opaque name for a worker, stable within one job and unlinkable across jobs: what
    a client sees instead of a worker id (an HMAC keyed by the deployment's secret)."""
    digest = hmac.new(
        settings.SECRET_KEY.encode(), f"worker:{job_id}:{worker_id}".encode(), hashlib.sha256
    ).hexdigest()
    return f"w-{digest[:12]}"


# result_meta keys that name vendor people (QC staff) rather than describe the result.
_RESULT_META_STAFF_KEYS = ("qc_user",)


def job_get_for_user(
    *, user: AbstractBaseUser, job_id: int, roles: frozenset[str] | None = None
) -> Job:
    """The job if the user may see it (through memberships of `roles`, when given); 404
    otherwise, so other tenants' ids stay hidden."""
    job = (
        job_list_for_user(user=user, roles=roles)
        .select_related("organization")
        .filter(pk=job_id)
        .first()
    )
    if job is None:
        raise Http404("No such job.")
    return job


def job_item_counts(*, job: Job) -> dict[str, int]:
    counts = dict(
        Item.objects.filter(job=job).values_list("state").annotate(n=Count("id")).order_by()
    )
    return {state: counts.get(state, 0) for state in Item.State.values}


def job_results(
    *,
    job: Job,
    state: str | None = None,
    chunk_size: int = 10_000,
    workers_visible: bool = True,
) -> Iterator[dict[str, Any]]:
    """Every item's result as a dict, streamed from the database in chunks.

    On PostgreSQL the rows come through a server-side cursor, `chunk_size` at a time, so
    memory stays flat however many items the job has. JSON columns are read as text and
    decoded with orjson: Django's own JSONField decoding costs more than the rest of a row.

    With `workers_visible` false (a client reading), `result_meta.workers` names each
    contributing worker by `worker_pseudonym` (label and weight stay: the provenance of the
    result) and the QC person's id is left out.
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
    pseudonyms: dict[Any, str] = {}
    # Another kind's result is canonical JSON text: delivered as the JSON value it is.
    decoded = job.kind != SINGLE_CHOICE
    for row in rows:
        record = dict(zip(RESULT_FIELDS, row, strict=True))
        for name in _JSON_RESULT_FIELDS:
            text = record[name]
            record[name] = None if text is None else loads(text)
        if decoded and record["label"] is not None:
            record["label"] = loads(record["label"])
        record["status"] = record.pop("state")
        record["is_gold"] = record.pop("gold_label") is not None
        if not workers_visible and record["result_meta"]:
            record["result_meta"] = _meta_for_client(record["result_meta"], job.pk, pseudonyms)
        yield record


def _meta_for_client(meta: dict, job_id: int, pseudonyms: dict[Any, str]) -> dict:
    """A copy of `meta` with workers pseudonymous and staff ids left out (memoised names)."""
    meta = {key: value for key, value in meta.items() if key not in _RESULT_META_STAFF_KEYS}
    workers = meta.get("workers")
    if isinstance(workers, list):
        shown = []
        for entry in workers:
            if not isinstance(entry, dict):
                continue
            worker_id = entry.get("worker")
            name = pseudonyms.get(worker_id)
            if name is None:
                name = pseudonyms[worker_id] = worker_pseudonym(job_id=job_id, worker_id=worker_id)
            shown.append({**entry, "worker": name})
        meta["workers"] = shown
    return meta


_JSON_RESULT_FIELDS = tuple(
    name for name in RESULT_FIELDS if isinstance(Item._meta.get_field(name), JSONField)
)


def job_results_coco(*, job: Job) -> dict[str, Any]:
    """A bbox job's results as a COCO detection file: one image per item (its payload's
    `url`, `image` or `file_name`, else its external_id, at the schema's size), one
    annotation per resulting box with the item's confidence as `score`, one category per
    class (ids from 1, in the schema's order). Gold items are left out."""
    kind = schema_kind(job.label_schema)
    classes = list(getattr(kind, "classes", ()))
    width, height = getattr(kind, "width", 0), getattr(kind, "height", 0)
    category = {name: i + 1 for i, name in enumerate(classes)}
    images, annotations = [], []
    rows = (
        Item.objects.filter(job=job, gold_label__isnull=True)
        .order_by("id")
        .values_list("id", "external_id", "payload", "label", "confidence", "state")
    )
    for item_id, external_id, payload, label, confidence, state in rows.iterator(2000):
        payload = payload if isinstance(payload, dict) else {}
        name = next(
            (payload[k] for k in ("url", "image", "file_name") if isinstance(payload.get(k), str)),
            external_id,
        )
        images.append(
            {
                "id": item_id,
                "file_name": name,
                "width": width,
                "height": height,
                "external_id": external_id,
                "status": state,
            }
        )
        for box in answer_value(label) or []:
            x, y, w, h = box["box"]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": item_id,
                    "category_id": category[box["class"]],
                    "bbox": [x, y, w, h],
                    "area": round(w * h, 4),
                    "iscrowd": 0,
                    "score": confidence,
                }
            )
    return {
        "info": {"description": f"Concord job {job.pk}: {job.name}", "version": "1.0"},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i, "name": n, "supercategory": ""} for n, i in category.items()],
    }
