from django.urls import path

from apps.jobs import apis

urlpatterns = [
    path("jobs/", apis.JobListCreateApi.as_view(), name="job-list"),
    path("jobs/<id:job_id>/", apis.JobDetailApi.as_view(), name="job-detail"),
    path("jobs/<id:job_id>/items/", apis.JobItemsApi.as_view(), name="job-items"),
    path("jobs/<id:job_id>/launch/", apis.JobLaunchApi.as_view(), name="job-launch"),
    path("jobs/<id:job_id>/pause/", apis.JobPauseApi.as_view(), name="job-pause"),
    path("jobs/<id:job_id>/resume/", apis.JobResumeApi.as_view(), name="job-resume"),
    path("jobs/<id:job_id>/cancel/", apis.JobCancelApi.as_view(), name="job-cancel"),
    path("jobs/<id:job_id>/results/", apis.JobResultsApi.as_view(), name="job-results"),
]
