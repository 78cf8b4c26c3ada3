"""Ops API for the workforce: pools, workers, bans, earnings and bonuses, opening jobs to pools."""

from __future__ import annotations

import django_filters
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    extend_schema,
    extend_schema_field,
    extend_schema_serializer,
    inline_serializer,
)
from rest_framework import serializers, status
from rest_framework.generics import GenericAPIView
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.accounts.models import Role
from apps.accounts.permissions import IsOps, has_role
from apps.common.fields import ID_MAX
from apps.common.serializers import StrictInputSerializer
from apps.pipeline.crowd import worker_ban, worker_suspend, worker_unban
from apps.workforce.models import Pool, Worker
from apps.workforce.selectors import (
    job_get_for_bonus,
    job_get_for_pool_ops,
    ops_organization_for,
    pool_get_for_ops,
    pool_list_for_ops,
    worker_earnings,
    worker_get_for_earnings,
    worker_get_for_ops,
    worker_list_for_ops,
)
from apps.workforce.services import (
    ledger_bonus,
    pool_create,
    pool_job_open,
    pool_update,
    worker_create,
    worker_update,
)


class WorkerFilter(django_filters.FilterSet):
    tier = django_filters.ChoiceFilter(choices=Worker.Tier.choices)
    status = django_filters.ChoiceFilter(choices=Worker.Status.choices)
    pool = django_filters.NumberFilter(field_name="pools__id", distinct=True)
    username = django_filters.CharFilter(field_name="user__username", lookup_expr="icontains")

    class Meta:
        model = Worker
        fields = ["tier", "status", "pool", "username"]


class PoolFilter(django_filters.FilterSet):
    name = django_filters.CharFilter(lookup_expr="icontains")
    job = django_filters.NumberFilter(field_name="jobs__id", distinct=True)
    member = django_filters.NumberFilter(field_name="members__id", distinct=True)

    class Meta:
        model = Pool
        fields = ["name", "job", "member"]


class WorkerOutputSerializer(serializers.ModelSerializer):
    username = serializers.CharField(source="user.username", read_only=True)
    pools = serializers.SerializerMethodField()

    class Meta:
        model = Worker
        fields = [
            "id",
            "username",
            "tier",
            "status",
            "status_reason",
            "pay_rate",
            "skills",
            "pools",
            "created_at",
        ]

    def get_pools(self, worker: Worker) -> list[int]:
        # Reads the prefetched pools, so a page of workers costs one query for all pools.
        return [pool.pk for pool in worker.pools.all()]


class PoolOutputSerializer(serializers.ModelSerializer):
    members = serializers.SerializerMethodField()
    jobs = serializers.SerializerMethodField()

    class Meta:
        model = Pool
        fields = ["id", "name", "description", "members", "jobs", "created_at"]

    def get_members(self, pool: Pool) -> list[int]:
        return [worker.pk for worker in pool.members.all()]

    def get_jobs(self, pool: Pool) -> list[int]:
        return [job.pk for job in pool.jobs.all()]


@extend_schema_field(OpenApiTypes.INT)
class _OpsWorkers(serializers.PrimaryKeyRelatedField):
    """Worker ids limited to the requesting ops user's organizations."""

    def get_queryset(self):
        return worker_list_for_ops(user=self.context["request"].user)


@extend_schema_field(OpenApiTypes.INT)
class _OpsPools(serializers.PrimaryKeyRelatedField):
    def get_queryset(self):
        return pool_list_for_ops(user=self.context["request"].user)


# --------------------------------------------------------------------------- workers


class WorkerListCreateApi(GenericAPIView):
    permission_classes = [IsOps]
    filterset_class = WorkerFilter
    serializer_class = WorkerOutputSerializer

    @extend_schema_serializer(component_name="WorkerCreateInput")
    class InputSerializer(serializers.Serializer):
        username = serializers.RegexField(r"^[\w.@+-]+$", max_length=150)
        email = serializers.EmailField(required=False, default="")
        tier = serializers.ChoiceField(choices=Worker.Tier.choices, default=Worker.Tier.CROWD)
        pay_rate = serializers.DecimalField(
            max_digits=8, decimal_places=2, min_value=0, required=False
        )
        skills = serializers.ListField(
            child=serializers.CharField(max_length=50), max_length=100, required=False
        )
        pools = _OpsPools(many=True, required=False)

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation has no ops user
            return Worker.objects.none()
        return worker_list_for_ops(user=self.request.user)

    @extend_schema(operation_id="workers_list", responses=WorkerOutputSerializer(many=True))
    def get(self, request: Request) -> Response:
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        return self.get_paginated_response(WorkerOutputSerializer(page, many=True).data)

    @extend_schema(
        operation_id="workers_create",
        request=InputSerializer,
        responses={
            201: inline_serializer(
                "WorkerCreated",
                {
                    "worker": WorkerOutputSerializer(),
                    "token": serializers.CharField(help_text="Shown once; only a digest is kept."),
                },
            )
        },
    )
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data, context={"request": request})
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        worker, token = worker_create(
            organization=ops_organization_for(user=request.user),
            username=data["username"],
            email=data["email"],
            tier=data["tier"],
            pay_rate=data.get("pay_rate"),
            skills=data.get("skills"),
            pools=data.get("pools", []),
        )
        worker = worker_get_for_ops(user=request.user, worker_id=worker.pk)
        return Response(
            {"worker": WorkerOutputSerializer(worker).data, "token": token},
            status=status.HTTP_201_CREATED,
        )


class WorkerDetailApi(APIView):
    permission_classes = [IsOps]

    @extend_schema_serializer(component_name="WorkerUpdateInput")
    class InputSerializer(StrictInputSerializer):
        tier = serializers.ChoiceField(choices=Worker.Tier.choices, required=False)
        pay_rate = serializers.DecimalField(
            max_digits=8, decimal_places=2, min_value=0, required=False
        )
        skills = serializers.ListField(
            child=serializers.CharField(max_length=50), max_length=100, required=False
        )

        class Meta:
            # Status changes through ban / suspend / unban, which keep their history.
            read_only_names = ("id", "username", "status", "status_reason", "pools", "created_at")

    @extend_schema(operation_id="workers_retrieve", responses=WorkerOutputSerializer)
    def get(self, request: Request, worker_id: int) -> Response:
        worker = worker_get_for_ops(user=request.user, worker_id=worker_id)
        return Response(WorkerOutputSerializer(worker).data)

    @extend_schema(
        operation_id="workers_update", request=InputSerializer, responses=WorkerOutputSerializer
    )
    def patch(self, request: Request, worker_id: int) -> Response:
        worker = worker_get_for_ops(user=request.user, worker_id=worker_id)
        serializer = self.InputSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        worker = worker_update(worker=worker, data=serializer.validated_data)
        return Response(WorkerOutputSerializer(worker).data)


class _ReasonSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=500, required=False, default="", allow_blank=True)


class WorkerBanApi(APIView):
    permission_classes = [IsOps]

    @extend_schema(
        operation_id="workers_ban", request=_ReasonSerializer, responses=WorkerOutputSerializer
    )
    def post(self, request: Request, worker_id: int) -> Response:
        worker = worker_get_for_ops(user=request.user, worker_id=worker_id)
        serializer = _ReasonSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        worker = worker_ban(worker=worker, reason=serializer.validated_data["reason"])
        return Response(
            WorkerOutputSerializer(worker_get_for_ops(user=request.user, worker_id=worker.pk)).data
        )


class WorkerSuspendApi(APIView):
    permission_classes = [IsOps]

    @extend_schema(
        operation_id="workers_suspend", request=_ReasonSerializer, responses=WorkerOutputSerializer
    )
    def post(self, request: Request, worker_id: int) -> Response:
        worker = worker_get_for_ops(user=request.user, worker_id=worker_id)
        serializer = _ReasonSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        worker = worker_suspend(worker=worker, reason=serializer.validated_data["reason"])
        return Response(
            WorkerOutputSerializer(worker_get_for_ops(user=request.user, worker_id=worker.pk)).data
        )


class WorkerUnbanApi(APIView):
    permission_classes = [IsOps]

    @extend_schema(operation_id="workers_unban", request=None, responses=WorkerOutputSerializer)
    def post(self, request: Request, worker_id: int) -> Response:
        worker = worker_get_for_ops(user=request.user, worker_id=worker_id)
        worker = worker_unban(worker=worker)
        return Response(
            WorkerOutputSerializer(worker_get_for_ops(user=request.user, worker_id=worker.pk)).data
        )


# Ops, or a worker (the selector then admits only the worker themself); clients and QC have
# no business with pay (403).
IsOpsOrWorker = has_role(Role.OPS, Role.ANNOTATOR, Role.EXPERT)


class EarningsOutputSerializer(serializers.Serializer):
    class JobEarnings(serializers.Serializer):
        job = serializers.IntegerField()
        labels = serializers.IntegerField()
        label_amount = serializers.DecimalField(max_digits=14, decimal_places=4)
        bonuses = serializers.IntegerField()
        bonus_amount = serializers.DecimalField(max_digits=14, decimal_places=4)

    worker = serializers.IntegerField()
    labels = serializers.IntegerField()
    label_amount = serializers.DecimalField(max_digits=14, decimal_places=4)
    bonus_amount = serializers.DecimalField(max_digits=14, decimal_places=4)
    total = serializers.DecimalField(max_digits=14, decimal_places=4)
    jobs = JobEarnings(many=True)


class WorkerEarningsApi(APIView):
    permission_classes = [IsOpsOrWorker]

    @extend_schema(
        operation_id="workers_earnings",
        parameters=[OpenApiParameter("job", int, OpenApiParameter.QUERY, required=False)],
        responses=EarningsOutputSerializer,
        description="Ops of the worker's vendor, or the worker themself.",
    )
    def get(self, request: Request, worker_id: int) -> Response:
        worker = worker_get_for_earnings(user=request.user, worker_id=worker_id)
        job = serializers.IntegerField(required=False, min_value=1, max_value=ID_MAX)
        job_id = (
            job.run_validation(request.query_params["job"])
            if "job" in request.query_params
            else None
        )
        return Response(
            EarningsOutputSerializer(worker_earnings(worker=worker, job_id=job_id)).data
        )


class WorkerBonusApi(APIView):
    permission_classes = [IsOps]

    @extend_schema_serializer(component_name="WorkerBonusInput")
    class InputSerializer(serializers.Serializer):
        job = serializers.IntegerField(min_value=1, max_value=ID_MAX)
        amount = serializers.DecimalField(max_digits=12, decimal_places=4, min_value=0)
        idempotency_key = serializers.CharField(max_length=150)
        note = serializers.CharField(max_length=500, required=False, default="", allow_blank=True)

    @extend_schema_serializer(component_name="WorkerBonusOutput")
    class OutputSerializer(serializers.Serializer):
        id = serializers.IntegerField()
        worker = serializers.IntegerField(source="worker_id")
        job = serializers.IntegerField(source="job_id")
        kind = serializers.CharField()
        amount = serializers.DecimalField(max_digits=12, decimal_places=4)
        note = serializers.CharField()
        created_at = serializers.DateTimeField()

    @extend_schema(
        operation_id="workers_bonus",
        request=InputSerializer,
        responses={201: OutputSerializer, 200: OutputSerializer},
        description=(
            "Idempotent on idempotency_key: a retry answers 200 with the first entry. The job "
            "must be one the worker labeled and your vendor may act on (400 on `job`)."
        ),
    )
    def post(self, request: Request, worker_id: int) -> Response:
        worker = worker_get_for_ops(user=request.user, worker_id=worker_id)
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        entry, created = ledger_bonus(
            worker=worker,
            job=job_get_for_bonus(user=request.user, worker=worker, job_id=data["job"]),
            amount=data["amount"],
            idempotency_key=data["idempotency_key"],
            note=data["note"],
        )
        return Response(
            self.OutputSerializer(entry).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )


# --------------------------------------------------------------------------- pools


class PoolListCreateApi(GenericAPIView):
    permission_classes = [IsOps]
    filterset_class = PoolFilter
    serializer_class = PoolOutputSerializer

    @extend_schema_serializer(component_name="PoolCreateInput")
    class InputSerializer(serializers.Serializer):
        name = serializers.CharField(max_length=200)
        description = serializers.CharField(
            required=False, default="", allow_blank=True, max_length=2000
        )
        members = _OpsWorkers(many=True, required=False)

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Pool.objects.none()
        return pool_list_for_ops(user=self.request.user)

    @extend_schema(operation_id="pools_list", responses=PoolOutputSerializer(many=True))
    def get(self, request: Request) -> Response:
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        return self.get_paginated_response(PoolOutputSerializer(page, many=True).data)

    @extend_schema(
        operation_id="pools_create", request=InputSerializer, responses={201: PoolOutputSerializer}
    )
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data, context={"request": request})
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        pool = pool_create(
            organization=ops_organization_for(user=request.user),
            name=data["name"],
            description=data["description"],
            members=data.get("members", []),
        )
        pool = pool_get_for_ops(user=request.user, pool_id=pool.pk)
        return Response(PoolOutputSerializer(pool).data, status=status.HTTP_201_CREATED)


class PoolDetailApi(APIView):
    permission_classes = [IsOps]

    @extend_schema_serializer(component_name="PoolUpdateInput")
    class InputSerializer(StrictInputSerializer):
        name = serializers.CharField(max_length=200, required=False)
        description = serializers.CharField(required=False, allow_blank=True, max_length=2000)
        members = _OpsWorkers(many=True, required=False, help_text="Replaces the member list.")

        class Meta:
            read_only_names = ("id", "organization", "created_at")

    @extend_schema(operation_id="pools_retrieve", responses=PoolOutputSerializer)
    def get(self, request: Request, pool_id: int) -> Response:
        return Response(
            PoolOutputSerializer(pool_get_for_ops(user=request.user, pool_id=pool_id)).data
        )

    @extend_schema(
        operation_id="pools_update", request=InputSerializer, responses=PoolOutputSerializer
    )
    def patch(self, request: Request, pool_id: int) -> Response:
        pool = pool_get_for_ops(user=request.user, pool_id=pool_id)
        serializer = self.InputSerializer(
            data=request.data, partial=True, context={"request": request}
        )
        serializer.is_valid(raise_exception=True)
        pool_update(pool=pool, data=serializer.validated_data)
        return Response(
            PoolOutputSerializer(pool_get_for_ops(user=request.user, pool_id=pool_id)).data
        )


class JobPoolsApi(APIView):
    """Which of the ops user's pools work on a job, and opening the job to another pool."""

    permission_classes = [IsOps]

    @extend_schema_serializer(component_name="JobPoolOpenInput")
    class InputSerializer(serializers.Serializer):
        pool = _OpsPools()

    @extend_schema_serializer(component_name="JobPoolsOutput")
    class OutputSerializer(serializers.Serializer):
        job = serializers.IntegerField()
        pools = serializers.ListField(child=serializers.IntegerField())

    def _output(self, request: Request, job_id: int) -> dict:
        pools = pool_list_for_ops(user=request.user).filter(jobs__id=job_id)
        return {"job": job_id, "pools": list(pools.values_list("id", flat=True))}

    @extend_schema(operation_id="jobs_pools_list", responses=OutputSerializer)
    def get(self, request: Request, job_id: int) -> Response:
        job_get_for_pool_ops(user=request.user, job_id=job_id)
        return Response(self._output(request, job_id))

    @extend_schema(
        operation_id="jobs_pools_open",
        request=InputSerializer,
        responses={201: OutputSerializer, 200: OutputSerializer},
        description=(
            "Open the job to a pool; idempotent (200 when it already was). The pool's vendor "
            "needs an active contract with the job's client (400 on `pool`)."
        ),
    )
    def post(self, request: Request, job_id: int) -> Response:
        job = job_get_for_pool_ops(user=request.user, job_id=job_id)
        serializer = self.InputSerializer(data=request.data, context={"request": request})
        serializer.is_valid(raise_exception=True)
        created = pool_job_open(pool=serializer.validated_data["pool"], job=job)
        return Response(
            self._output(request, job_id),
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )
