"""Routes of the annotator API."""

from django.urls import path

from apps.assignments.apis import (
    AssignmentNextApi,
    AssignmentReleaseApi,
    AssignmentSkipApi,
    AssignmentSubmitApi,
)

urlpatterns = [
    path("assignments/next/", AssignmentNextApi.as_view(), name="assignment-next"),
    path(
        "assignments/<id:assignment_id>/submit/",
        AssignmentSubmitApi.as_view(),
        name="assignment-submit",
    ),
    path(
        "assignments/<id:assignment_id>/release/",
        AssignmentReleaseApi.as_view(),
        name="assignment-release",
    ),
    path(
        "assignments/<id:assignment_id>/skip/", AssignmentSkipApi.as_view(), name="assignment-skip"
    ),
]
