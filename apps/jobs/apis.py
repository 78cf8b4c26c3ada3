"""Client API for jobs and items: CRUD, upload, lifecycle, results."""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import Iterator
from typing import Any

import orjson
from django.db.models import QuerySet
from django.http import HttpResponse, JsonResponse, StreamingHttpResponse
from django_filters import rest_framework as filters
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
    inline_serializer,
)
from rest_framework import generics, serializers, status
from rest_framework.permissions import SAFE_METHODS
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.accounts.models import Organization, Role
from apps.accounts.permissions import IsClientOrOps, IsJobReader
from apps.accounts.selectors import user_client_org_ids, user_roles
from apps.common.errors import ApplicationError, ErrorCode
from apps.common.fields import FiniteFloatField
from apps.common.filters import StrictBooleanFilter
from apps.common.serializers import StrictInputSerializer
from apps.jobs import selectors, services
from apps.jobs.ingest import MAX_PAYLOAD_BYTES, UploadFormatError, format_from_content_type
from apps.jobs.models import Item, Job
from apps.jobs.specs import (
    LabelSchemaSerializer,
    PolicySerializer,
    PricingSerializer,
    RoutingSerializer,
)
from apps.reports.items import job_items_forget


class JobOutputSerializer(serializers.ModelSerializer):
    organization = serializers.CharField(source="organization.name")
    classes = serializers.ListField(child=serializers.CharField())
    # The effective spec: every knob, the job's own values over the defaults.
    policy = serializers.SerializerMethodField()
    pricing = serializers.SerializerMethodField()
    routing = serializers.SerializerMethodField()

    class Meta:
        model = Job
        fields = [
            "id",
            "name",
            "instructions",
            "organization",
            "status",
            "label_schema",
            "classes",
            "policy",
            "pricing",
            "routing",
            "feature_dim",
            "created_at",
            "updated_at",
            "launched_at",
            "completed_at",
        ]

    @extend_schema_field(PolicySerializer)
    def get_policy(self, job: Job) -> dict[str, Any]:
        return dataclasses.asdict(job.spec.policy)

    @extend_schema_field(PricingSerializer)
    def get_pricing(self, job: Job) -> dict[str, Any]:
        return dataclasses.asdict(job.spec.pricing)

    @extend_schema_field(RoutingSerializer)
    def get_routing(self, job: Job) -> dict[str, Any]:
        return dataclasses.asdict(job.spec.routing)


class JobDetailOutputSerializer(JobOutputSerializer):
    item_counts = serializers.SerializerMethodField()

    class Meta(JobOutputSerializer.Meta):
        fields = [*JobOutputSerializer.Meta.fields, "item_counts"]

    def get_item_counts(self, job: Job) -> dict[str, int]:
        return selectors.job_item_counts(job=job)


# Instructions are shown to annotators with every task: long enough for a guideline page.
MAX_INSTRUCTIONS = 20_000
_JOB_READ_ONLY = (
    "id",
    "status",
    "classes",
    "feature_dim",
    "created_at",
    "updated_at",
    "launched_at",
    "completed_at",
    "item_counts",
)


class JobInputSerializer(StrictInputSerializer):
    name = serializers.CharField(max_length=200)
    instructions = serializers.CharField(
        required=False, allow_blank=True, default="", max_length=MAX_INSTRUCTIONS
    )
    label_schema = LabelSchemaSerializer()
    policy = PolicySerializer(required=False)
    pricing = PricingSerializer(required=False)
    routing = RoutingSerializer(required=False)
    organization = serializers.CharField(
        required=False,
        max_length=200,
        help_text="Client organization name; needed when ops create a job.",
    )

    class Meta:
        read_only_names = _JOB_READ_ONLY


class JobUpdateSerializer(StrictInputSerializer):
    name = serializers.CharField(max_length=200, required=False)
    instructions = serializers.CharField(
        required=False, allow_blank=True, max_length=MAX_INSTRUCTIONS
    )
    label_schema = LabelSchemaSerializer(required=False)
    policy = PolicySerializer(required=False)
    pricing = PricingSerializer(required=False)
    routing = RoutingSerializer(required=False)

    class Meta:
        # A job's organization and status change only through their own operations.
        read_only_names = (*_JOB_READ_ONLY, "organization")


class JobFilter(filters.FilterSet):
    status = filters.MultipleChoiceFilter(choices=Job.Status.choices)
    name = filters.CharFilter(lookup_expr="icontains")

    class Meta:
        model = Job
        fields = ["status", "name"]


def _job_for_request(request: Request, job_id: int) -> Job:
    # A change goes through the user's client and ops memberships only (never QC ones).
    roles = None if request.method in SAFE_METHODS else selectors.JOB_WRITER_ROLES
    return selectors.job_get_for_user(user=request.user, job_id=job_id, roles=roles)


def _organization_for_new_job(request: Request, name: str | None) -> Organization:
    roles = user_roles(user=request.user)
    if Role.OPS in roles:
        if not name:
            raise ApplicationError(
                "Ops must name the client organization the job is for.",
                details={"organization": "required"},
            )
        org = selectors.client_organization_for_ops(user=request.user, name=name)
        if org is None:
            raise ApplicationError(
                f"No client organization named {name!r} that your vendor serves.",
                details={"organization": "unknown"},
            )
        return org
    org_ids = user_client_org_ids(user=request.user)
    orgs = Organization.objects.filter(pk__in=org_ids)
    if name:
        orgs = orgs.filter(name=name)
    found = list(orgs[:2])
    if len(found) != 1:
        raise ApplicationError(
            "Name the organization the job is for."
            if found
            else "You are in no such organization.",
            details={"organization": "ambiguous" if found else "unknown"},
        )
    return found[0]


class JobListCreateApi(generics.ListAPIView):
    serializer_class = JobOutputSerializer
    filterset_class = JobFilter

    def get_permissions(self):
        if self.request.method == "POST":
            return [IsClientOrOps()]
        return [IsJobReader()]

    def get_queryset(self) -> QuerySet[Job]:
        return selectors.job_list_for_user(user=self.request.user).select_related("organization")

    @extend_schema(request=JobInputSerializer, responses={201: JobDetailOutputSerializer})
    def post(self, request: Request) -> Response:
        data = JobInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = dict(data.validated_data)
        organization = _organization_for_new_job(request, values.pop("organization", None))
        job = services.job_create(organization=organization, created_by=request.user, **values)
        return Response(JobDetailOutputSerializer(job).data, status=status.HTTP_201_CREATED)


class JobDetailApi(APIView):
    def get_permissions(self):
        if self.request.method == "PATCH":
            return [IsClientOrOps()]
        return [IsJobReader()]

    @extend_schema(responses=JobDetailOutputSerializer)
    def get(self, request: Request, job_id: int) -> Response:
        return Response(JobDetailOutputSerializer(_job_for_request(request, job_id)).data)

    @extend_schema(request=JobUpdateSerializer, responses=JobDetailOutputSerializer)
    def patch(self, request: Request, job_id: int) -> Response:
        job = _job_for_request(request, job_id)
        data = JobUpdateSerializer(data=request.data, partial=True, context={"job": job})
        data.is_valid(raise_exception=True)
        job = services.job_update(job=job, changes=dict(data.validated_data))
        return Response(JobDetailOutputSerializer(job).data)


def _lifecycle_api(name: str, action) -> type[APIView]:
    class LifecycleApi(APIView):
        permission_classes = [IsClientOrOps]

        @extend_schema(
            request=None, responses=JobDetailOutputSerializer, operation_id=f"jobs_{name}"
        )
        def post(self, request: Request, job_id: int) -> Response:
            job = action(job=_job_for_request(request, job_id))
            return Response(JobDetailOutputSerializer(job).data)

    LifecycleApi.__name__ = f"Job{name.capitalize()}Api"
    LifecycleApi.__qualname__ = LifecycleApi.__name__
    return LifecycleApi


JobLaunchApi = _lifecycle_api("launch", services.job_launch)
JobPauseApi = _lifecycle_api("pause", services.job_pause)
JobResumeApi = _lifecycle_api("resume", services.job_resume)
JobCancelApi = _lifecycle_api("cancel", services.job_cancel)


class _RequestStream(io.RawIOBase):
    """A raw binary stream over a Django request body, read as it arrives.

    A body that breaks off (the client went away: a reset, or an end before its
    Content-Length) raises UploadFormatError, so the upload's transaction stores nothing.
    """

    def __init__(self, source: Any) -> None:
        self._source = source
        self._read = 0
        length = source.META.get("CONTENT_LENGTH") if hasattr(source, "META") else None
        self._length = int(length) if length and str(length).isdigit() else None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            chunk = self._source.read(len(buffer))
        except OSError as exc:
            raise UploadFormatError(f"The upload was interrupted: {exc}") from exc
        if not chunk and self._length is not None and self._read < self._length:
            raise UploadFormatError(
                f"The upload ended after {self._read} of its {self._length} bytes."
            )
        self._read += len(chunk)
        buffer[: len(chunk)] = chunk
        return len(chunk)


IngestReportSerializer = inline_serializer(
    "IngestReport",
    {
        "created": serializers.IntegerField(),
        "updated": serializers.IntegerField(),
        "rejected": serializers.IntegerField(),
        "errors": serializers.ListField(
            child=inline_serializer(
                "RowError",
                {
                    "row": serializers.IntegerField(),
                    "external_id": serializers.CharField(required=False),
                    "errors": serializers.DictField(child=serializers.CharField()),
                },
            )
        ),
        "errors_truncated": serializers.BooleanField(),
    },
)


class ItemRowSerializer(serializers.Serializer):
    """One uploaded row, for the schema: rows are validated one by one in apps.jobs.ingest
    (a bad row is reported, not a 400), so this serializer never validates anything."""

    external_id = serializers.CharField(max_length=255)
    payload = serializers.DictField(
        help_text=f"Any JSON object, at most {MAX_PAYLOAD_BYTES} characters as compact JSON."
    )
    features = serializers.ListField(child=FiniteFloatField(), required=False)
    prediction = serializers.ListField(
        child=FiniteFloatField(min_value=0, max_value=1),
        required=False,
        help_text="Class probabilities in the order of the job's classes (or an object).",
    )
    gold_label = serializers.CharField(required=False)


class ItemOutputSerializer(serializers.ModelSerializer):
    is_gold = serializers.BooleanField()
    status = serializers.CharField(source="state")

    class Meta:
        model = Item
        fields = [
            "id",
            "external_id",
            "payload",
            "prediction",
            "is_gold",
            "gold_label",
            "status",
            "priority",
            "n_labels",
            "label",
            "confidence",
            "agreement",
            "source",
            "created_at",
            "settled_at",
        ]


class ItemFilter(filters.FilterSet):
    status = filters.MultipleChoiceFilter(field_name="state", choices=Item.State.choices)
    external_id = filters.CharFilter()
    is_gold = StrictBooleanFilter(field_name="gold_label", lookup_expr="isnull", exclude=True)

    class Meta:
        model = Item
        fields = ["status", "external_id", "is_gold"]


class JobItemsApi(generics.ListAPIView):
    """GET lists a job's items (paged); POST uploads items as JSON list, JSONL or CSV."""

    serializer_class = ItemOutputSerializer
    filterset_class = ItemFilter
    # The upload body is read as a stream by the view itself, never by a DRF parser.

    def get_permissions(self):
        if self.request.method == "POST":
            return [IsClientOrOps()]
        return [IsJobReader()]

    def get_queryset(self) -> QuerySet[Item]:
        if getattr(self, "swagger_fake_view", False):  # schema generation: no job in the URL
            return Item.objects.none()
        job = _job_for_request(self.request, self.kwargs["job_id"])
        return Item.objects.filter(job=job).defer("features").order_by("id")

    @extend_schema(
        request={
            "application/json": ItemRowSerializer(many=True),
            "application/x-ndjson": OpenApiTypes.STR,
            "text/csv": OpenApiTypes.STR,
            "multipart/form-data": inline_serializer("ItemFile", {"file": serializers.FileField()}),
        },
        parameters=[
            OpenApiParameter(
                "format",
                str,
                enum=["json", "jsonl", "csv"],
                description="Overrides the format implied by the content type.",
            )
        ],
        responses={201: IngestReportSerializer, 200: IngestReportSerializer},
        description=(
            "Rows: {external_id, payload, features?, prediction?, gold_label?}. Idempotent on "
            "external_id: a known id updates the item. Bad rows are reported by row number "
            "(1-based) with reasons; good rows are stored."
        ),
    )
    def post(self, request: Request, job_id: int) -> Response:
        job = _job_for_request(request, job_id)
        django_request = request._request
        explicit = request.query_params.get("format")
        content_type = django_request.content_type or ""
        try:
            if content_type.startswith("multipart/form-data"):
                upload = django_request.FILES.get("file")
                if upload is None:
                    raise UploadFormatError("A multipart upload needs a 'file' field.")
                suffix = upload.name.rsplit(".", 1)[-1].lower() if "." in upload.name else ""
                fmt = explicit or {"ndjson": "jsonl", "jsonl": "jsonl", "csv": "csv"}.get(
                    suffix, "json"
                )
                format_from_content_type(None, fmt)
                stream: Any = upload
            else:
                fmt = format_from_content_type(content_type, explicit)
                stream = io.BufferedReader(_RequestStream(django_request), 1 << 16)
            report = services.item_ingest(job=job, stream=stream, fmt=fmt)
        except UploadFormatError as exc:
            raise ApplicationError(str(exc), code=ErrorCode.PARSE_ERROR) from exc
        # The dashboards' kept item counts are out of date: they count again until the rollup.
        job_items_forget(job_id=job.pk)
        code = status.HTTP_201_CREATED if report.created else status.HTTP_200_OK
        return Response(report.as_dict(), status=code)


RESULT_CSV_COLUMNS = [
    "external_id",
    "label",
    "confidence",
    "agreement",
    "n_labels",
    "source",
    "status",
    "is_gold",
    "posterior",
    # result_meta as JSON: the method, its version, every contributing worker (an opaque
    # per-job name for clients) with their label and weight.
    "provenance",
]


def _stream_json(rows: Iterator[dict]) -> Iterator[bytes]:
    yield b"["
    dumps = orjson.dumps
    first = True
    for row in rows:
        yield dumps(row) if first else b"," + dumps(row)
        first = False
    yield b"]\n"


def _stream_jsonl(rows: Iterator[dict]) -> Iterator[bytes]:
    dumps, newline = orjson.dumps, orjson.OPT_APPEND_NEWLINE
    for row in rows:
        yield dumps(row, option=newline)


def _stream_csv(rows: Iterator[dict], block: int = 1000) -> Iterator[bytes]:
    """CSV text in blocks of rows: one csv.writer call and one encode per block, not per row."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(RESULT_CSV_COLUMNS)
    dumps = orjson.dumps
    pending = []
    for row in rows:
        posterior = row["posterior"]
        row["posterior"] = dumps(posterior).decode() if posterior is not None else ""
        label = row["label"]
        if label is not None and not isinstance(label, str):
            # Another kind's result (tags, a number, boxes) as JSON text in its cell.
            row["label"] = dumps(label).decode()
        meta = row.get("result_meta")
        row["provenance"] = dumps(meta).decode() if meta else ""
        pending.append([row[name] for name in RESULT_CSV_COLUMNS])
        if len(pending) >= block:
            writer.writerows(pending)
            pending.clear()
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    writer.writerows(pending)
    yield buffer.getvalue().encode()


def _batched(chunks: Iterator[bytes], size: int = 1 << 16) -> Iterator[bytes]:
    """Join small pieces into ~64 KiB writes: one write per row would dominate the cost."""
    buffer: list[bytes] = []
    length = 0
    for chunk in chunks:
        buffer.append(chunk)
        length += len(chunk)
        if length >= size:
            yield b"".join(buffer)
            buffer, length = [], 0
    if buffer:
        yield b"".join(buffer)


_RESULT_FORMATS = {
    "json": ("application/json", _stream_json),
    "jsonl": ("application/x-ndjson", _stream_jsonl),
    "csv": ("text/csv", _stream_csv),
}


class JobResultsApi(APIView):
    permission_classes = [IsJobReader]

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "format",
                str,
                enum=[*_RESULT_FORMATS, "coco"],
                description="Default json. coco: a bbox job's boxes as a COCO detection file.",
            ),
            OpenApiParameter("status", str, enum=Item.State.values, description="Only this state."),
        ],
        responses={
            200: OpenApiResponse(
                description=(
                    "Per item: external_id, label, confidence, agreement, n_labels, source "
                    "(crowd|model|expert|qc), status, is_gold, posterior, result_meta. Streamed. "
                    "Another kind than single_choice delivers its JSON result as `label` (a "
                    "JSON cell in CSV) with the kind's confidence, and its details (tag "
                    "confidences, the numeric interval, the boxes' agreement) in result_meta. "
                    "For a client, result_meta.workers names each worker by an opaque name "
                    "that is stable within the job only."
                )
            )
        },
    )
    def get(self, request: Request, job_id: int) -> HttpResponse | StreamingHttpResponse:
        job = _job_for_request(request, job_id)
        fmt = request.query_params.get("format", "json")
        if fmt == "coco" and job.kind == "bbox":
            response = JsonResponse(selectors.job_results_coco(job=job))
            response["Content-Disposition"] = f'attachment; filename="job-{job.pk}-coco.json"'
            return response
        if fmt not in _RESULT_FORMATS:
            raise ApplicationError(
                f"Unknown format {fmt!r}; one of json, jsonl, csv (coco for bbox jobs).",
                details={"format": "invalid"},
            )
        state = request.query_params.get("status")
        if state and state not in Item.State.values:
            raise ApplicationError(f"Unknown status {state!r}.", details={"status": "invalid"})
        content_type, render = _RESULT_FORMATS[fmt]
        staff = bool(selectors.job_vendor_ids_for_user(user=request.user, job=job))
        rows = selectors.job_results(job=job, state=state, workers_visible=staff)
        response = StreamingHttpResponse(_batched(render(rows)), content_type=content_type)
        response["Content-Disposition"] = f'attachment; filename="job-{job.pk}-results.{fmt}"'
        return response


__all__ = [
    "JobListCreateApi",
    "JobDetailApi",
    "JobLaunchApi",
    "JobPauseApi",
    "JobCancelApi",
    "JobItemsApi",
    "JobResultsApi",
]
