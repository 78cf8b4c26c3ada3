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
    path("pools/<int:pool_id>/", PoolDetailApi.as_view(), name="pool-detail"),
    path("workers/", WorkerListCreateApi.as_view(), name="worker-list"),
    path("workers/<int:worker_id>/", WorkerDetailApi.as_view(), name="worker-detail"),
    path("workers/<int:worker_id>/ban/", WorkerBanApi.as_view(), name="worker-ban"),
    path("workers/<int:worker_id>/suspend/", WorkerSuspendApi.as_view(), name="worker-suspend"),
    path("workers/<int:worker_id>/unban/", WorkerUnbanApi.as_view(), name="worker-unban"),
    path("workers/<int:worker_id>/earnings/", WorkerEarningsApi.as_view(), name="worker-earnings"),
    path("workers/<int:worker_id>/bonuses/", WorkerBonusApi.as_view(), name="worker-bonuses"),
    path("jobs/<int:job_id>/pools/", JobPoolsApi.as_view(), name="job-pools"),
]
