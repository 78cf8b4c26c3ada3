"""Annotator API: next task, submit, release, skip."""

from __future__ import annotations

import logging

from django.conf import settings
from django.http.request import RawPostDataException
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_serializer,
)
from rest_framework import serializers, status
from rest_framework.fields import Field, empty
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.permissions import BasePermission
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.assignments import fastpath
from apps.assignments.leasing import Idle, IdleReason
from apps.assignments.records import assignment_release, assignment_skip
from apps.common.fields import ID_MAX, AnswerField
from apps.common.jsonlimits import body_too_large, json_loads_strict, max_body_bytes
from apps.jobs.payloads import payload_for_worker
from apps.pipeline.next import assignment_next
from apps.pipeline.submit import assignment_submit
from apps.workforce.models import Worker
from apps.workforce.selectors import worker_for_user

IDLE_HEADER = "Concord-Idle-Reason"
# DRF's field, told the time zone up front: by default it looks up the active time zone on
# every call, and nothing in Concord activates one other than settings.TIME_ZONE.
_DATETIME = serializers.DateTimeField(
    default_timezone=timezone.get_default_timezone() if settings.USE_TZ else None
)


logger = logging.getLogger(__name__)
PATH_HEADER = "Concord-Path"


def _with_path(response: Response) -> Response:
    """Say which write path served the lease or submit (sql, sql-locked or orm), when
    settings.CONCORD_PATH_HEADER asks for it: gold leases take the ORM path, so by default
    annotators are not told (the header would give gold items away). Always: a debug log
    record with the field `write_path`, and the per-process counts on /healthz."""
    path = fastpath.served_by()
    if path is None:
        return response
    logger.debug("served by %s", path.value, extra={"write_path": path.value})
    if settings.CONCORD_PATH_HEADER:
        response[PATH_HEADER] = path.value
    return response


def _body(request: Request) -> object:
    """The request's JSON body, parsed directly when it is JSON (DRF's parser negotiation
    costs more than the parse on these small bodies); anything else goes through DRF,
    which answers an unsupported media type with 415."""
    django_request = request._request
    if django_request.content_type != "application/json":
        return request.data
    limit = max_body_bytes()
    length = django_request.META.get("CONTENT_LENGTH") or "0"
    if length.isdigit() and int(length) > limit:
        raise body_too_large(limit)  # refused before reading it
    try:
        body = django_request.body
    except RawPostDataException:  # the stream was read already (DRF has parsed it)
        return request.data
    if not body:
        return {}
    return json_loads_strict(body)


class JsonOnlyNegotiation(DefaultContentNegotiation):
    """The annotator endpoints answer JSON whatever the Accept header asks for: their one
    renderer is JSON, and parsing Accept on every request was a cost with no choice in it."""

    def select_renderer(self, request: Request, renderers: list, format_suffix: str | None = None):
        renderer = renderers[0]
        return renderer, renderer.media_type


class IsWorker(BasePermission):
    """Annotators and experts: users with a worker record, loaded once onto the request.

    One query both authorizes and fetches what the engine needs, which keeps the hot path
    short (annotator and expert memberships always come with a worker record).
    """

    message = "Only annotators and experts have tasks."

    def has_permission(self, request: Request, view: APIView) -> bool:
        if not request.user or not request.user.is_authenticated:
            return False
        worker = worker_for_user(user=request.user)
        request.worker = worker
        return worker is not None


def _worker(request: Request) -> Worker:
    return request.worker  # set by IsWorker


def _validated(data: object, fields: dict[str, Field]) -> dict:
    """Validate a JSON object against a few unbound serializer fields: the same rules and
    error messages as a Serializer with those fields, without building one per request (a
    serializer deep-copies its fields each time; annotators call these endpoints all day)."""
    if not isinstance(data, dict):
        raise serializers.ValidationError(
            {"non_field_errors": ["Invalid data. Expected a dictionary."]}
        )
    values: dict = {}
    errors: dict = {}
    for name, field in fields.items():
        try:
            value = field.run_validation(data.get(name, empty))
        except serializers.SkipField:
            continue
        except serializers.ValidationError as exc:
            errors[name] = exc.detail
            continue
        values[name] = value
    if errors:
        raise serializers.ValidationError(errors)
    return values


class ErrorSerializer(serializers.Serializer):
    error = serializers.DictField(help_text='{"code", "message", "details"}')


class AssignmentNextApi(APIView):
    permission_classes = [IsWorker]
    renderer_classes = [JSONRenderer]
    content_negotiation_class = JsonOnlyNegotiation

    @extend_schema_serializer(component_name="AssignmentNextInput")
    class InputSerializer(serializers.Serializer):
        job = serializers.IntegerField(
            required=False, min_value=1, max_value=ID_MAX, help_text="Only this job."
        )

    INPUT_FIELDS = dict(InputSerializer().fields)  # bound once; validated per request

    @extend_schema_serializer(component_name="AssignmentNextOutput")
    class OutputSerializer(serializers.Serializer):
        id = serializers.IntegerField(help_text="The assignment (lease) id.")
        job = serializers.IntegerField()
        payload = serializers.JSONField(
            help_text="The item's payload without its private (underscore) fields."
        )
        classes = serializers.ListField(
            child=serializers.CharField(), help_text="The classes of a single_choice job."
        )
        label_schema = serializers.JSONField(
            help_text="The job's answer kind and its parameters: what `label` must be."
        )
        instructions = serializers.CharField()
        prelabel = serializers.CharField(allow_null=True)
        expires_at = serializers.DateTimeField()

    @extend_schema(
        operation_id="assignments_next",
        request=InputSerializer,
        parameters=[
            OpenApiParameter("job", int, OpenApiParameter.QUERY, required=False),
            OpenApiParameter(
                IDLE_HEADER,
                OpenApiTypes.STR,
                OpenApiParameter.HEADER,
                response=[204],
                enum=[reason.value for reason in IdleReason],
                description="Why there is no task.",
            ),
            OpenApiParameter(
                "Retry-After",
                OpenApiTypes.INT,
                OpenApiParameter.HEADER,
                response=[204],
                description="Seconds to wait, sent when waiting can help.",
            ),
        ],
        responses={
            200: OutputSerializer,
            204: OpenApiResponse(description="Nothing to do; see the Concord-Idle-Reason header."),
            400: ErrorSerializer,
        },
    )
    def post(self, request: Request) -> Response:
        body = _body(request)
        if not isinstance(body, dict):
            # A list (or any non-object) used to be read as "no job given": a lease from any job.
            raise serializers.ValidationError(
                {"non_field_errors": ["Invalid data. Expected a dictionary."]}
            )
        data = body
        query = request._request.GET
        if "job" not in data and "job" in query:
            data = {"job": query["job"]}
        validated = _validated(data, self.INPUT_FIELDS)
        fastpath.served_reset()
        result = assignment_next(worker=_worker(request), job_id=validated.get("job"))
        if isinstance(result, Idle):
            response = Response(status=status.HTTP_204_NO_CONTENT)
            response[IDLE_HEADER] = result.reason.value
            if result.retry_after is not None:
                response["Retry-After"] = str(result.retry_after)
            return response
        # Built by hand on the hot path (the serializer documents the shape; same output).
        # No item id, no external_id and no private payload field: a client's ids, the
        # order items were uploaded in (gold uploaded apart gets ids of its own) and hidden
        # columns ("gold-012", a truth column) would tell the worker which items are gold.
        # The assignment id is the worker's handle on the item.
        return _with_path(
            Response(
                {
                    "id": result.id,
                    "job": result.job,
                    "payload": payload_for_worker(result.payload),
                    "classes": result.classes,
                    "label_schema": result.label_schema or {},
                    "instructions": result.instructions,
                    "prelabel": result.prelabel,
                    "expires_at": _DATETIME.to_representation(result.expires_at),
                }
            )
        )


class LabelOutputSerializer(serializers.Serializer):
    assignment = serializers.IntegerField(source="assignment_id")
    job = serializers.IntegerField(source="job_id")
    label = AnswerField(help_text="The answer as stored (a class, or the kind's JSON answer).")
    duration_ms = serializers.IntegerField(allow_null=True)
    created_at = serializers.DateTimeField()


class AssignmentSubmitApi(APIView):
    permission_classes = [IsWorker]
    throttle_scope = "submit"  # per token: apps.common.throttling
    renderer_classes = [JSONRenderer]
    content_negotiation_class = JsonOnlyNegotiation

    @extend_schema_serializer(component_name="AssignmentSubmitInput")
    class InputSerializer(serializers.Serializer):
        label = AnswerField(
            help_text="A class name (single_choice); a list of tags (multi_choice); a level "
            'name (ordinal); a number (numeric); a list of {"box": [x, y, w, h], "class": c} '
            "(bbox). Checked against the job's label_schema: a 400 names what does not fit."
        )
        duration_ms = serializers.IntegerField(required=False, min_value=0, max_value=2**31 - 1)

    INPUT_FIELDS = dict(InputSerializer().fields)  # bound once; validated per request

    @extend_schema(
        operation_id="assignments_submit",
        request=InputSerializer,
        responses={
            200: LabelOutputSerializer,
            400: ErrorSerializer,
            404: ErrorSerializer,
            409: OpenApiResponse(
                ErrorSerializer, description="lease_expired, lease_not_yours or invalid_state."
            ),
        },
        description="Idempotent: a repeated submit returns the first answer.",
    )
    def post(self, request: Request, assignment_id: int) -> Response:
        validated = _validated(_body(request), self.INPUT_FIELDS)
        fastpath.served_reset()
        result = assignment_submit(
            worker=_worker(request),
            assignment_id=assignment_id,
            label=validated["label"],
            duration_ms=validated.get("duration_ms"),
        )
        label = result.label
        return _with_path(
            Response(
                {
                    "assignment": label.assignment_id,
                    "job": label.job_id,
                    "label": result.answer,
                    "duration_ms": label.duration_ms,
                    "created_at": _DATETIME.to_representation(label.created_at),
                }
            )
        )


class AssignmentStateOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    state = serializers.CharField()
    finished_at = serializers.DateTimeField(allow_null=True)


_END_RESPONSES = {
    200: AssignmentStateOutputSerializer,
    404: ErrorSerializer,
    409: OpenApiResponse(
        ErrorSerializer, description="lease_expired, lease_not_yours or invalid_state."
    ),
}


class AssignmentReleaseApi(APIView):
    permission_classes = [IsWorker]

    @extend_schema(operation_id="assignments_release", request=None, responses=_END_RESPONSES)
    def post(self, request: Request, assignment_id: int) -> Response:
        assignment = assignment_release(worker=_worker(request), assignment_id=assignment_id)
        return Response(AssignmentStateOutputSerializer(assignment).data)


class AssignmentSkipApi(APIView):
    permission_classes = [IsWorker]

    @extend_schema(operation_id="assignments_skip", request=None, responses=_END_RESPONSES)
    def post(self, request: Request, assignment_id: int) -> Response:
        assignment = assignment_skip(worker=_worker(request), assignment_id=assignment_id)
        return Response(AssignmentStateOutputSerializer(assignment).data)
