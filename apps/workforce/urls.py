"""Routes of the ops workforce API."""

from django.urls import path

from apps.workforce.apis import (
    JobPoolsApi,
    PoolDetailApi,
    PoolListCreateApi,
    WorkerBanApi,
    WorkerBonusApi,
    WorkerDetailApi,
    WorkerEarningsApi,
    WorkerListCreateApi,
    WorkerSuspendApi,
    WorkerUnbanApi,
)

urlpatterns = [
    path("pools/", PoolListCreateApi.as_view(), name="pool-list"),
    path("pools/<id:pool_id>/", PoolDetailApi.as_view(), name="pool-detail"),
    path("workers/", WorkerListCreateApi.as_view(), name="worker-list"),
    path("workers/<id:worker_id>/", WorkerDetailApi.as_view(), name="worker-detail"),
    path("workers/<id:worker_id>/ban/", WorkerBanApi.as_view(), name="worker-ban"),
    path("workers/<id:worker_id>/suspend/", WorkerSuspendApi.as_view(), name="worker-suspend"),
    path("workers/<id:worker_id>/unban/", WorkerUnbanApi.as_view(), name="worker-unban"),
    path("workers/<id:worker_id>/earnings/", WorkerEarningsApi.as_view(), name="worker-earnings"),
    path("workers/<id:worker_id>/bonuses/", WorkerBonusApi.as_view(), name="worker-bonuses"),
    path("jobs/<id:job_id>/pools/", JobPoolsApi.as_view(), name="job-pools"),
]
