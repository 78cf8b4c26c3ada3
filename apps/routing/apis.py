"""Routing API: model versions and cards, retrain, similar items, strategy replay, pre-label effect."""

from __future__ import annotations

from django.db.models import QuerySet
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    inline_serializer,
)
from rest_framework import generics, serializers, status
from rest_framework.permissions import SAFE_METHODS
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.accounts.permissions import IsClientOrOps, IsJobReader
from apps.common.errors import ApplicationError, ErrorCode
from apps.jobs.models import Job
from apps.jobs.selectors import JOB_WRITER_ROLES, job_get_for_user
from apps.routing import algorithms, selectors, services
from apps.routing.models import ModelVersion

ERROR = inline_serializer(
    "RoutingError",
    {
        "error": inline_serializer(
            "RoutingErrorBody",
            {
                "code": serializers.CharField(),
                "message": serializers.CharField(),
                "details": serializers.DictField(),
            },
        )
    },
)


def _job(request: Request, job_id: int) -> Job:
    # A POST (retrain, evaluate) goes through client and ops memberships only, never QC ones.
    roles = None if request.method in SAFE_METHODS else JOB_WRITER_ROLES
    return job_get_for_user(user=request.user, job_id=job_id, roles=roles)


class ModelVersionOutputSerializer(serializers.ModelSerializer):
    parent = serializers.IntegerField(source="parent.number", allow_null=True, default=None)

    class Meta:
        model = ModelVersion
        fields = [
            "id",
            "number",
            "kind",
            "is_active",
            "parent",
            "temperature",
            "threshold",
            "target_accuracy",
            "n_train",
            "n_heldout",
            "data_cutoff",
            "card",
            "decision",
            "seconds",
            "created_at",
        ]


class JobModelsApi(generics.ListAPIView):
    """The job's model versions with their model cards, newest first (paged)."""

    serializer_class = ModelVersionOutputSerializer
    permission_classes = [IsJobReader]

    def get_queryset(self) -> QuerySet[ModelVersion]:
        if getattr(self, "swagger_fake_view", False):
            # Schema generation has no job id: the model is all it needs.
            return ModelVersion.objects.none()
        job = _job(self.request, self.kwargs["job_id"])
        return selectors.model_version_list(job=job).select_related("parent")

    @extend_schema(responses={200: ModelVersionOutputSerializer(many=True), 404: ERROR})
    def get(self, request: Request, *args, **kwargs) -> Response:
        return super().get(request, *args, **kwargs)


class RetrainQueuedSerializer(serializers.Serializer):
    job = serializers.IntegerField()
    queued = serializers.BooleanField(
        help_text="False when a retrain of this job is already queued or running."
    )


class JobRetrainApi(APIView):
    permission_classes = [IsClientOrOps]

    @extend_schema(
        request=None,
        responses={202: RetrainQueuedSerializer, 404: ERROR, 409: ERROR},
        description="Queue a retrain of the job's routing model (then items are re-routed).",
    )
    def post(self, request: Request, job_id: int) -> Response:
        job = _job(request, job_id)
        if job.spec.routing.mode != "model":
            raise ApplicationError(
                "Routing is off for this job; set routing.mode to 'model' first.",
                code=ErrorCode.INVALID_STATE,
                status_code=status.HTTP_409_CONFLICT,
            )
        queued = services.job_retrain_enqueue(job=job)
        return Response(
            RetrainQueuedSerializer({"job": job.pk, "queued": queued}).data,
            status=status.HTTP_202_ACCEPTED,
        )


class SimilarItemSerializer(serializers.Serializer):
    external_id = serializers.CharField()
    similarity = serializers.FloatField(help_text="Cosine similarity of the feature vectors.")
    state = serializers.CharField()
    label = serializers.CharField(allow_null=True)


class ItemSimilarApi(APIView):
    permission_classes = [IsJobReader]

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "k", int, description=f"How many neighbours (1..{selectors.SIMILAR_MAX_K})."
            )
        ],
        responses={200: SimilarItemSerializer(many=True), 400: ERROR, 404: ERROR},
        description="The items nearest to this one by cosine similarity of their features.",
    )
    def get(self, request: Request, job_id: int, external_id: str) -> Response:
        job = _job(request, job_id)
        try:
            k = int(request.query_params.get("k", 10))
        except ValueError as exc:
            raise ApplicationError("k must be an integer.", details={"k": "invalid"}) from exc
        rows = selectors.item_similar(job=job, external_id=external_id, k=k)
        return Response(SimilarItemSerializer(rows, many=True).data)


class EvaluateStrategyInputSerializer(serializers.Serializer):
    strategy = serializers.ChoiceField(
        choices=algorithms.STRATEGIES,
        required=False,
        help_text="Default: the job's routing strategy (margin when that is fifo).",
    )
    rounds = serializers.IntegerField(
        min_value=1, max_value=selectors.EVALUATE_MAX_ROUNDS, default=5
    )
    batch = serializers.IntegerField(
        min_value=1, max_value=selectors.EVALUATE_MAX_BATCH, default=20
    )


class LearningCurvesSerializer(serializers.Serializer):
    strategy = serializers.CharField()
    baseline = serializers.CharField()
    n_items = serializers.IntegerField()
    n_test = serializers.IntegerField()
    labels = serializers.ListField(child=serializers.IntegerField())
    strategy_accuracy = serializers.ListField(child=serializers.FloatField())
    random_accuracy = serializers.ListField(child=serializers.FloatField())
    area_gain = serializers.FloatField(
        help_text="Mean accuracy gain of the strategy over random along the curve."
    )


class JobEvaluateStrategyApi(APIView):
    permission_classes = [IsClientOrOps]

    @extend_schema(
        request=EvaluateStrategyInputSerializer,
        responses={200: LearningCurvesSerializer, 400: ERROR, 404: ERROR, 409: ERROR},
        description=(
            "Offline replay of the job's settled labels: learning curves (accuracy on a "
            "held-out share vs labels bought) of the strategy and of random picks, from the "
            "same seed set. Synchronous and capped."
        ),
    )
    def post(self, request: Request, job_id: int) -> Response:
        job = _job(request, job_id)
        data = EvaluateStrategyInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        strategy = data.validated_data.get("strategy") or job.spec.routing.strategy
        if strategy in (None, "fifo"):
            strategy = "margin"
        result = selectors.job_evaluate_strategy(
            job=job,
            strategy=strategy,
            rounds=data.validated_data["rounds"],
            batch=data.validated_data["batch"],
        )
        return Response(LearningCurvesSerializer(result).data)


class JobPrelabelEffectApi(APIView):
    permission_classes = [IsJobReader]

    @extend_schema(
        responses={
            200: OpenApiResponse(
                inline_serializer(
                    "PrelabelEffect",
                    {
                        "with_prelabel": serializers.DictField(),
                        "without_prelabel": serializers.DictField(),
                        "difference": serializers.FloatField(allow_null=True),
                    },
                )
            ),
            404: ERROR,
        },
        description="Gold accuracy of labels given with a pre-label shown vs without.",
    )
    def get(self, request: Request, job_id: int) -> Response:
        return Response(selectors.job_prelabel_effect(job=_job(request, job_id)))
