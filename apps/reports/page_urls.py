from django.urls import path

from apps.common.throttling import login_throttled
from apps.reports import views

urlpatterns = [
    path("", views.home, name="home"),
    path("login/", login_throttled(views.token_login), name="login"),
    path("logout/", views.token_logout, name="logout"),
    path("dashboard/", views.dashboard, name="dashboard"),
    path("dashboard/jobs/new/", views.job_new, name="job-new"),
    path("dashboard/jobs/<id:job_id>/", views.job_dashboard, name="job-dashboard"),
    path("dashboard/jobs/<id:job_id>/upload/", views.job_upload, name="job-upload"),
    path("dashboard/jobs/<id:job_id>/lifecycle/", views.job_lifecycle, name="job-lifecycle"),
    path("dashboard/pools/<id:pool_id>/", views.pool_page, name="ops-pool"),
    path("dashboard/workers/<id:worker_id>/", views.worker_page, name="ops-worker"),
    path(
        "dashboard/workers/<id:worker_id>/actions/", views.worker_action, name="ops-worker-action"
    ),
]
