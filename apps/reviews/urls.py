"""Routes of the QC review API (mounted under /api/v1/)."""

from django.urls import path

from apps.reviews import apis

urlpatterns = [
    path("reviews/", apis.ReviewListApi.as_view(), name="review-list"),
    path("reviews/next/", apis.ReviewClaimNextApi.as_view(), name="review-next"),
    path("reviews/<id:review_id>/", apis.ReviewDetailApi.as_view(), name="review-detail"),
    path("reviews/<id:review_id>/claim/", apis.ReviewClaimApi.as_view(), name="review-claim"),
    path("reviews/<id:review_id>/release/", apis.ReviewReleaseApi.as_view(), name="review-release"),
    path("reviews/<id:review_id>/resolve/", apis.ReviewResolveApi.as_view(), name="review-resolve"),
    path("reviews/<id:review_id>/reopen/", apis.ReviewReopenApi.as_view(), name="review-reopen"),
    path(
        "assignments/<id:assignment_id>/dispute-gold/",
        apis.GoldDisputeApi.as_view(),
        name="assignment-dispute-gold",
    ),
    path(
        "jobs/<id:job_id>/items/<str:external_id>/dispute/",
        apis.ItemDisputeApi.as_view(),
        name="job-item-dispute",
    ),
    path(
        "jobs/<id:job_id>/guideline-gaps/",
        apis.GuidelineGapsApi.as_view(),
        name="job-guideline-gaps",
    ),
    path(
        "jobs/<id:job_id>/review-metrics/",
        apis.ReviewMetricsApi.as_view(),
        name="job-review-metrics",
    ),
    path("feedback/", apis.FeedbackListApi.as_view(), name="feedback-list"),
]
