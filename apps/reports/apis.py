"""Metrics API: per job (clients, ops, qc) and per pool (ops)."""

from django.http import Http404
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.accounts.permissions import IsJobReader, IsOps
from apps.jobs.selectors import job_get_for_user, job_list_for_user, job_vendor_ids_for_user
from apps.reports.selectors import job_metrics, overview_metrics, pool_metrics
from apps.workforce.selectors import pool_list_for_ops


class JobMetricsApi(APIView):
    permission_classes = [IsJobReader]

    @extend_schema(
        responses=OpenApiResponse(
            description="throughput (labels total / last hour / hourly, with the time zone), "
            "series (per hour: labels, gold answers and errors, reviews opened, QC decisions "
            "and overrides), backlog (labels left, pace, hours left, cost left), cost (labels, "
            "bonuses, per settled item, forecast total; money summed exactly), error_rates "
            "(gold accuracy, review share), worker_count, cost_of_quality (base labels, extra "
            "redundancy, gold overhead, expert labels, bonuses, rework, per accepted item, and "
            "marginal_accuracy_point: from k-1 to k crowd labels per item on the redundancy "
            "curve of gold items, the accuracy gained and its cost per item and per job, null "
            "until gold items have two answers); for "
            "vendor staff also `workers`, a summary of their own vendor's workers (clients "
            "never see worker identities or pay)"
        )
    )
    def get(self, request: Request, job_id: int) -> Response:
        job = job_get_for_user(user=request.user, job_id=job_id)
        vendor_ids = job_vendor_ids_for_user(user=request.user, job=job)
        return Response(job_metrics(job=job, worker_vendor_ids=vendor_ids))


class PoolMetricsApi(APIView):
    permission_classes = [IsOps]

    @extend_schema(
        responses=OpenApiResponse(description="labels, cost and gold error rate of a pool")
    )
    def get(self, request: Request, pool_id: int) -> Response:
        pool = pool_list_for_ops(user=request.user).filter(pk=pool_id).first()
        if pool is None:
            raise Http404("No such pool.")
        return Response(pool_metrics(pool=pool))


class MetricsOverviewApi(APIView):
    """Every job the caller may read, one row each, for clients' own monitoring."""

    permission_classes = [IsJobReader]

    @extend_schema(
        operation_id="metrics_overview",
        responses=OpenApiResponse(
            description="results: one row per job (the newest 200): id, name, status, items, "
            "settled, review, progress, labels, gold_error_rate, cost (exact money)"
        ),
    )
    def get(self, request: Request) -> Response:
        rows = overview_metrics(jobs=job_list_for_user(user=request.user).order_by("-id"))
        results = [
            {
                "id": row["job"].pk,
                "name": row["job"].name,
                "status": row["job"].status,
                **{k: v for k, v in row.items() if k != "job"},
            }
            for row in rows
        ]
        return Response({"results": results})
