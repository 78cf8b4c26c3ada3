from django.urls import path

from apps.reports.apis import JobMetricsApi, PoolMetricsApi

urlpatterns = [
    path("jobs/<id:job_id>/metrics/", JobMetricsApi.as_view(), name="job-metrics"),
    path("pools/<id:pool_id>/metrics/", PoolMetricsApi.as_view(), name="pool-metrics"),
]
