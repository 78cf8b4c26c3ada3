from django.urls import path

from apps.quality import apis

urlpatterns = [
    path("workers/<id:worker_id>/quality/", apis.WorkerQualityApi.as_view(), name="worker-quality"),
    path("jobs/<id:job_id>/agreement/", apis.JobAgreementApi.as_view(), name="job-agreement"),
    path("jobs/<id:job_id>/gold/", apis.JobGoldApi.as_view(), name="job-gold"),
    path("jobs/<id:job_id>/aggregate/", apis.JobAggregateApi.as_view(), name="job-aggregate"),
]
