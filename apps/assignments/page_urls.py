"""Routes of the annotator page (server-rendered, session login); experts use it too."""

from django.urls import path

from apps.assignments import views

urlpatterns = [
    path("annotate/", views.start, name="annotate"),
    path("annotate/next/", views.next_task, name="annotate-next"),
    path("annotate/tasks/<id:assignment_id>/", views.task, name="annotate-task"),
    path("annotate/tasks/<id:assignment_id>/submit/", views.submit, name="annotate-submit"),
    path("annotate/tasks/<id:assignment_id>/skip/", views.skip, name="annotate-skip"),
    path("annotate/tasks/<id:assignment_id>/release/", views.release, name="annotate-release"),
]
