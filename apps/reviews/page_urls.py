"""Routes of the QC pages (server-rendered, session login)."""

from django.urls import path

from apps.reviews import views

urlpatterns = [
    path("qc/", views.queue, name="qc-queue"),
    path("qc/next/", views.claim_next, name="qc-next"),
    path("qc/reviews/<id:review_id>/", views.review_page, name="qc-review"),
    path("qc/reviews/<id:review_id>/resolve/", views.resolve, name="qc-resolve"),
    path("qc/reviews/<id:review_id>/skip/", views.skip, name="qc-skip"),
    path("qc/reviews/<id:review_id>/reopen/", views.reopen, name="qc-reopen"),
]
