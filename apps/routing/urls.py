from django.urls import path

from apps.routing import apis

urlpatterns = [
    path("jobs/<id:job_id>/models/", apis.JobModelsApi.as_view(), name="job-models"),
    path("jobs/<id:job_id>/retrain/", apis.JobRetrainApi.as_view(), name="job-retrain"),
    path(
        "jobs/<id:job_id>/items/<path:external_id>/similar/",
        apis.ItemSimilarApi.as_view(),
        name="item-similar",
    ),
    path(
        "jobs/<id:job_id>/evaluate-strategy/",
        apis.JobEvaluateStrategyApi.as_view(),
        name="job-evaluate-strategy",
    ),
    path(
        "jobs/<id:job_id>/prelabel-effect/",
        apis.JobPrelabelEffectApi.as_view(),
        name="job-prelabel-effect",
    ),
]
