"""Concord's URL map: admin, the v1 REST API, its schema and docs, pages and health."""

from django.contrib import admin
from django.urls import include, path, register_converter
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from apps.common.converters import IdConverter
from apps.common.throttling import login_throttled
from apps.common.views import healthz

# Registered before the apps' URL modules are included: their ids use <id:...>.
register_converter(IdConverter, "id")

# The annotators' endpoints come first: they are most of the traffic, and Django tries the
# patterns in order (none of these overlap, so the order changes nothing else).
api_v1 = [
    path("", include("apps.assignments.urls")),
    path("", include("apps.accounts.urls")),
    path("", include("apps.jobs.urls")),
    path("", include("apps.workforce.urls")),
    path("", include("apps.quality.urls")),
    path("", include("apps.routing.urls")),
    path("", include("apps.reports.urls")),
    path("", include("apps.reviews.urls")),
    path("", include("apps.webhooks.urls")),
]

urlpatterns = [
    path("api/v1/", include(api_v1)),
    # Failed admin sign-ins are limited per client address like the token login page's.
    path("admin/login/", login_throttled(admin.site.login), name="admin-login"),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("healthz", healthz, name="healthz"),
    path("", include("apps.assignments.page_urls")),
    path("", include("apps.reviews.page_urls")),
    path("", include("apps.reports.page_urls")),
]
