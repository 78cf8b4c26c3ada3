from django.urls import path

from apps.reports.apis import JobMetricsApi, MetricsOverviewApi, PoolMetricsApi

urlpatterns = [
    path("metrics/", MetricsOverviewApi.as_view(), name="metrics-overview"),
    path("jobs/<id:job_id>/metrics/", JobMetricsApi.as_view(), name="job-metrics"),
    path("pools/<id:pool_id>/metrics/", PoolMetricsApi.as_view(), name="pool-metrics"),
]
