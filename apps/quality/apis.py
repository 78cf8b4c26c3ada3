"""Quality API: a worker's quality record, a job's agreement and gold lifecycle, and
on-demand re-aggregation."""

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.fields import empty
from rest_framework.generics import GenericAPIView
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.accounts.models import Role
from apps.accounts.permissions import IsClientOrOps, IsJobReader, has_role
from apps.common.tasks import enqueue
from apps.jobs.selectors import JOB_WRITER_ROLES, job_get_for_user
from apps.quality.selectors import (
    job_agreement,
    job_gold_items,
    job_gold_summary,
    latest_run,
    worker_quality,
)
from apps.workforce.selectors import worker_get_for_quality


class WorkerQualityApi(APIView):
    permission_classes = [has_role(Role.OPS, Role.QC, Role.ANNOTATOR, Role.EXPERT)]

    @extend_schema(
        responses=OpenApiResponse(
            description="gold accuracy with Wilson interval, per-job confusion matrix and skill, "
            "Cohen's kappa with the consensus, speed, quality decisions"
        )
    )
    def get(self, request: Request, worker_id: int) -> Response:
        # The worker themself, or their vendor's ops or QC staff may read it.
        worker = worker_get_for_quality(user=request.user, worker_id=worker_id)
        return Response(worker_quality(worker=worker))


class JobAgreementApi(APIView):
    permission_classes = [IsJobReader]

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "n_boot", int, description="Bootstrap replicates, 50 to 5000 (default 500)."
            )
        ],
        responses=OpenApiResponse(
            description="Fleiss' kappa and Krippendorff's alpha (nominal) with bootstrap "
            "intervals, overall and per class; mean per-item agreement"
        ),
    )
    def get(self, request: Request, job_id: int) -> Response:
        job = job_get_for_user(user=request.user, job_id=job_id)
        # A malformed count is a 400 naming it, no longer silently the default.
        field = serializers.IntegerField(min_value=50, max_value=5000, default=500)
        try:
            n_boot = field.run_validation(request.query_params.get("n_boot", empty))
        except serializers.ValidationError as exc:
            raise serializers.ValidationError({"n_boot": exc.detail}) from exc
        return Response(job_agreement(job=job, n_boot=n_boot))


class GoldItemOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    external_id = serializers.CharField()
    gold_label = serializers.CharField()
    shown = serializers.IntegerField(help_text="Times the item was handed out (leased).")
    answered = serializers.IntegerField()
    correct = serializers.IntegerField()
    accuracy = serializers.SerializerMethodField()
    retired = serializers.SerializerMethodField()
    retired_at = serializers.DateTimeField(
        allow_null=True, help_text="When it was shown too often and left the gold mix."
    )

    def get_accuracy(self, row: dict) -> float | None:
        return round(row["correct"] / row["answered"], 6) if row["answered"] else None

    def get_retired(self, row: dict) -> bool:
        return row["retired_at"] is not None


class GoldTotalsOutputSerializer(serializers.Serializer):
    items = serializers.IntegerField()
    live = serializers.IntegerField()
    retired = serializers.IntegerField()
    shown = serializers.IntegerField()
    answered = serializers.IntegerField()
    correct = serializers.IntegerField()
    accuracy = serializers.FloatField(allow_null=True)


class GoldClassOutputSerializer(GoldTotalsOutputSerializer):
    gold_label = serializers.CharField()


class JobGoldOutputSerializer(serializers.Serializer):
    job = serializers.IntegerField()
    max_exposures = serializers.IntegerField(help_text="Showings after which gold is retired.")
    classes = GoldClassOutputSerializer(many=True)
    totals = GoldTotalsOutputSerializer()
    count = serializers.IntegerField(help_text="Gold items matching the filters.")
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    results = GoldItemOutputSerializer(many=True)


class JobGoldApi(GenericAPIView):
    permission_classes = [IsJobReader]

    class FilterSerializer(serializers.Serializer):
        gold_label = serializers.CharField(max_length=200, required=False)
        retired = serializers.BooleanField(required=False, allow_null=True, default=None)

    @extend_schema(
        parameters=[
            OpenApiParameter("page", int, description="Page number (1-based)."),
            OpenApiParameter("page_size", int, description="Items per page (at most 500)."),
            OpenApiParameter("gold_label", str, description="Only gold items of this class."),
            OpenApiParameter(
                "retired", bool, description="Only retired (true) or live (false) gold items."
            ),
        ],
        responses=JobGoldOutputSerializer,
        description=(
            "The job's gold lifecycle: per gold item how often it was shown and answered, "
            "its accuracy and whether it was retired for being shown too often (paged, in "
            "upload order); per class and over all, the same totals."
        ),
    )
    def get(self, request: Request, job_id: int) -> Response:
        job = job_get_for_user(user=request.user, job_id=job_id)
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        items = job_gold_items(job=job, **filters.validated_data)
        page = self.paginate_queryset(items)
        paged = self.get_paginated_response(GoldItemOutputSerializer(page, many=True).data)
        return Response({**job_gold_summary(job=job), **paged.data})


class JobAggregateApi(APIView):
    permission_classes = [IsClientOrOps]

    @extend_schema(
        request=None,
        responses={
            202: OpenApiResponse(description="Re-aggregation enqueued; the last run so far.")
        },
    )
    def post(self, request: Request, job_id: int) -> Response:
        job = job_get_for_user(user=request.user, job_id=job_id, roles=JOB_WRITER_ROLES)
        enqueue("quality.aggregate_job", job.pk)
        run = latest_run(job=job)
        body = None
        if run is not None:
            body = {
                "id": run.pk,
                "method": run.method,
                "version": run.version,
                "n_labels": run.n_labels,
                "converged": run.converged,
                "seconds": run.seconds,
                "created_at": run.created_at,
            }
        return Response({"queued": True, "last_run": body}, status=status.HTTP_202_ACCEPTED)
