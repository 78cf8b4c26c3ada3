from django.urls import path

from apps.common.throttling import login_throttled
from apps.reports import views

urlpatterns = [
    path("", views.home, name="home"),
    path("login/", login_throttled(views.token_login), name="login"),
    path("logout/", views.token_logout, name="logout"),
    path("dashboard/", views.dashboard, name="dashboard"),
    path("dashboard/jobs/<id:job_id>/", views.job_dashboard, name="job-dashboard"),
]
