"""QC review API: the queue, claims, decisions; disputes by workers and clients; worker
feedback; a job's guideline gaps and review metrics."""

from __future__ import annotations

from django.db.models import QuerySet
from django.utils import timezone
from django_filters import rest_framework as filters
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import generics, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.accounts.permissions import IsClientOrOps, IsJobReader, IsQC, IsQCOrOps
from apps.assignments.apis import ErrorSerializer, IsWorker
from apps.common.fields import ID_MAX, AnswerField
from apps.common.filters import StrictBooleanFilter
from apps.jobs.payloads import payload_for_worker
from apps.jobs.selectors import JOB_WRITER_ROLES, job_get_for_user, job_vendor_ids_for_user
from apps.reviews import selectors, services
from apps.reviews.models import Reason, Review, ReviewOutcome, Tag


class ReviewFilter(filters.FilterSet):
    job = filters.NumberFilter(field_name="job_id", help_text="Only this job.")
    status = filters.MultipleChoiceFilter(choices=Review.Status.choices)
    reason = filters.MultipleChoiceFilter(choices=Reason.choices)
    claimed = StrictBooleanFilter(
        method="filter_claimed", help_text="true: held by a live claim; false: free to claim."
    )

    class Meta:
        model = Review
        fields = ["job", "status", "reason", "claimed"]

    def filter_claimed(self, queryset: QuerySet[Review], name: str, value: bool) -> QuerySet:
        live = {"claimed_by__isnull": False, "claim_expires_at__gt": timezone.now()}
        return queryset.filter(**live) if value else queryset.exclude(**live)


class ReviewOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    job = serializers.IntegerField(source="job_id")
    item = serializers.IntegerField(source="item_id")
    external_id = serializers.CharField(source="item.external_id")
    item_state = serializers.CharField(source="item.state")
    item_label = serializers.CharField(source="item.label", allow_null=True)
    item_source = serializers.CharField(source="item.source", allow_null=True)
    reason = serializers.ChoiceField(choices=Reason.choices)
    status = serializers.ChoiceField(choices=Review.Status.choices)
    priority = serializers.FloatField()
    note = serializers.CharField()
    claimed_by = serializers.SerializerMethodField(
        help_text="Username holding a live claim, or null."
    )
    claim_expires_at = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()
    resolved_at = serializers.DateTimeField(allow_null=True)

    def get_claimed_by(self, review: Review) -> str | None:
        return selectors.review_claim_holder(review=review)

    def get_claim_expires_at(self, review: Review) -> str | None:
        if selectors.review_claim_holder(review=review) is None:
            return None
        return serializers.DateTimeField().to_representation(review.claim_expires_at)


class _LabelRowSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    worker = serializers.IntegerField()
    username = serializers.CharField()
    tier = serializers.CharField()
    value = serializers.CharField()
    duration_ms = serializers.IntegerField(allow_null=True)
    created_at = serializers.DateTimeField()
    gold_answers = serializers.IntegerField()
    gold_accuracy = serializers.FloatField(allow_null=True)
    reviewed_labels = serializers.IntegerField()
    overturned = serializers.IntegerField()
    overturned_rate = serializers.FloatField(allow_null=True)


class _ClassProbabilitySerializer(serializers.Serializer):
    label = serializers.CharField()
    p = serializers.FloatField()


class _DecisionRowSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    review = serializers.IntegerField()
    label = serializers.CharField()
    previous_label = serializers.CharField(allow_null=True)
    previous_source = serializers.CharField(allow_null=True)
    note = serializers.CharField()
    tags = serializers.ListField(child=serializers.CharField())
    make_gold = serializers.BooleanField()
    is_current = serializers.BooleanField()
    decided_by = serializers.CharField()
    created_at = serializers.DateTimeField()


class _ReviewRowSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    reason = serializers.CharField()
    status = serializers.CharField()
    note = serializers.CharField()
    created_at = serializers.DateTimeField()
    resolved_at = serializers.DateTimeField(allow_null=True)


class ReviewDetailOutputSerializer(serializers.Serializer):
    review = ReviewOutputSerializer()
    payload = serializers.JSONField(source="item.payload")
    classes = serializers.ListField(child=serializers.CharField())
    label_schema = serializers.JSONField(
        help_text="The job's answer kind and its parameters. For a kind other than "
        "single_choice, labels, decisions and the gold label are its answers as canonical JSON "
        "text."
    )
    context = serializers.JSONField(source="review.context")
    labels = _LabelRowSerializer(many=True)
    posterior = _ClassProbabilitySerializer(many=True, allow_null=True)
    prediction = _ClassProbabilitySerializer(many=True, allow_null=True)
    predicted_label = serializers.CharField(allow_null=True)
    gold_label = serializers.CharField(allow_null=True)
    decisions = _DecisionRowSerializer(many=True, help_text="Every decision, newest first.")
    reviews = _ReviewRowSerializer(many=True, help_text="Every review of the item.")


class DecisionOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    review = serializers.IntegerField(source="review_id")
    item = serializers.IntegerField(source="item_id")
    label = serializers.CharField()
    previous_label = serializers.CharField(allow_null=True)
    previous_source = serializers.CharField(allow_null=True)
    note = serializers.CharField()
    tags = serializers.ListField(child=serializers.CharField())
    make_gold = serializers.BooleanField()
    supersedes = serializers.IntegerField(source="supersedes_id", allow_null=True)
    created_at = serializers.DateTimeField()


_REVIEW_ERRORS = {
    403: ErrorSerializer,
    404: ErrorSerializer,
    409: OpenApiResponse(ErrorSerializer, description="Held by another QC person, or not open."),
}


class ReviewListApi(generics.ListAPIView):
    """The review queue, best first (qc and ops)."""

    permission_classes = [IsQCOrOps]
    serializer_class = ReviewOutputSerializer
    filterset_class = ReviewFilter

    def get_queryset(self) -> QuerySet[Review]:
        if getattr(self, "swagger_fake_view", False):  # the schema generator has no user
            return Review.objects.none()
        return selectors.review_list_for_user(user=self.request.user)


class ReviewDetailApi(APIView):
    permission_classes = [IsQCOrOps]

    @extend_schema(responses={200: ReviewDetailOutputSerializer, 404: ErrorSerializer})
    def get(self, request: Request, review_id: int) -> Response:
        review = selectors.review_get_for_user(user=request.user, review_id=review_id)
        vendor_ids = selectors.viewer_vendor_ids(user=request.user)
        detail = selectors.review_detail(review=review, viewer_vendor_ids=vendor_ids)
        return Response(ReviewDetailOutputSerializer(detail).data)


class ReviewNextInputSerializer(serializers.Serializer):
    job = serializers.IntegerField(
        required=False, min_value=1, max_value=ID_MAX, help_text="Only this job."
    )
    reason = serializers.ChoiceField(choices=Reason.choices, required=False)


class ReviewClaimNextApi(APIView):
    permission_classes = [IsQC]
    InputSerializer = ReviewNextInputSerializer

    @extend_schema(
        operation_id="reviews_next",
        request=InputSerializer,
        responses={
            200: ReviewOutputSerializer,
            204: OpenApiResponse(description="The queue is empty."),
            403: ErrorSerializer,
        },
        description="Claim the best open review nobody holds (resuming your own claim first).",
    )
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        review = services.review_claim_next(
            user=request.user,
            job_id=data.validated_data.get("job"),
            reason=data.validated_data.get("reason"),
        )
        if review is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response(ReviewOutputSerializer(review).data)


class ReviewClaimApi(APIView):
    permission_classes = [IsQC]

    @extend_schema(
        operation_id="reviews_claim",
        request=None,
        responses={200: ReviewOutputSerializer, **_REVIEW_ERRORS},
        description="Claim (or renew your claim on) an open review; the claim lapses like a lease.",
    )
    def post(self, request: Request, review_id: int) -> Response:
        review = services.review_claim(user=request.user, review_id=review_id)
        return Response(ReviewOutputSerializer(review).data)


class ReviewReleaseApi(APIView):
    permission_classes = [IsQC]

    @extend_schema(
        operation_id="reviews_release",
        request=None,
        responses={200: ReviewOutputSerializer, **_REVIEW_ERRORS},
    )
    def post(self, request: Request, review_id: int) -> Response:
        review = services.review_release(user=request.user, review_id=review_id)
        return Response(ReviewOutputSerializer(review).data)


class ReviewResolveInputSerializer(serializers.Serializer):
    label = AnswerField(
        help_text="One of the job's classes, or the answer of the job's kind (a tag list, a "
        "level, a number, a list of boxes), checked as a submit is."
    )
    note = serializers.CharField(required=False, allow_blank=True, default="", max_length=5000)
    make_gold = serializers.BooleanField(
        required=False, default=False, help_text="Make the item a gold item."
    )
    tags = serializers.ListField(
        child=serializers.ChoiceField(choices=Tag.choices), required=False, default=list
    )


class ReviewResolveApi(APIView):
    permission_classes = [IsQC]
    InputSerializer = ReviewResolveInputSerializer

    @extend_schema(
        operation_id="reviews_resolve",
        request=InputSerializer,
        responses={200: DecisionOutputSerializer, 400: ErrorSerializer, **_REVIEW_ERRORS},
        description=(
            "QC's final label: the item settles (source qc, confidence 1), the review and the "
            "item's other open reviews close, every label on the item is judged. Decisions are "
            "final: a review that is not open is a 409 invalid_state; reopen it to decide "
            "again (the new decision supersedes the earlier one, kept as history)."
        ),
    )
    def post(self, request: Request, review_id: int) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        decision = services.review_resolve(
            user=request.user, review_id=review_id, **data.validated_data
        )
        return Response(DecisionOutputSerializer(decision).data)


class ReviewReopenInputSerializer(serializers.Serializer):
    note = serializers.CharField(required=False, allow_blank=True, default="", max_length=5000)


class ReviewReopenApi(APIView):
    permission_classes = [IsQC]
    InputSerializer = ReviewReopenInputSerializer

    @extend_schema(
        operation_id="reviews_reopen",
        request=InputSerializer,
        responses={200: ReviewOutputSerializer, **_REVIEW_ERRORS},
        description="Reopen a finished review (claimed for you) to decide again.",
    )
    def post(self, request: Request, review_id: int) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        review = services.review_reopen(
            user=request.user, review_id=review_id, note=data.validated_data["note"]
        )
        return Response(ReviewOutputSerializer(review).data)


class DisputeInputSerializer(serializers.Serializer):
    note = serializers.CharField(max_length=5000, help_text="What is wrong, for QC.")


class DisputeOutputSerializer(serializers.Serializer):
    review = serializers.IntegerField(source="pk")
    reason = serializers.CharField()
    status = serializers.CharField()
    created = serializers.BooleanField(help_text="False when the item already had this review.")


def _dispute_response(review: Review, created: bool) -> Response:
    body = DisputeOutputSerializer(
        {"pk": review.pk, "reason": review.reason, "status": review.status, "created": created}
    ).data
    return Response(body, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


_DISPUTE_RESPONSES = {
    201: DisputeOutputSerializer,
    200: DisputeOutputSerializer,
    400: ErrorSerializer,
    404: ErrorSerializer,
    409: ErrorSerializer,
}


class WorkerDisputeOutputSerializer(serializers.Serializer):
    received = serializers.BooleanField(help_text="Always true: QC will look at the item.")
    message = serializers.CharField()


WORKER_DISPUTE_MESSAGE = (
    "Thank you: QC will look at this item; their decision shows in your feedback."
)


class GoldDisputeApi(APIView):
    permission_classes = [IsWorker]

    @extend_schema(
        operation_id="assignments_dispute_gold",
        request=DisputeInputSerializer,
        responses={
            202: WorkerDisputeOutputSerializer,
            400: ErrorSerializer,
            404: ErrorSerializer,
            409: OpenApiResponse(ErrorSerializer, description="The label is not submitted yet."),
        },
        description=(
            "After submitting a label, dispute the item's expected answer; QC decides. Every "
            "item answers the same way (202), gold or not, so the answer tells nothing about "
            "which items are gold; QC's decision shows in /feedback/."
        ),
    )
    def post(self, request: Request, assignment_id: int) -> Response:
        data = DisputeInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        services.review_gold_dispute(
            worker=request.worker, assignment_id=assignment_id, note=data.validated_data["note"]
        )
        body = {"received": True, "message": WORKER_DISPUTE_MESSAGE}
        return Response(WorkerDisputeOutputSerializer(body).data, status=status.HTTP_202_ACCEPTED)


class ItemDisputeApi(APIView):
    permission_classes = [IsClientOrOps]

    @extend_schema(
        operation_id="jobs_items_dispute",
        request=DisputeInputSerializer,
        responses=_DISPUTE_RESPONSES,
        description="The job's client (or ops) disputes a delivered result; QC decides.",
    )
    def post(self, request: Request, job_id: int, external_id: str) -> Response:
        job = job_get_for_user(user=request.user, job_id=job_id, roles=JOB_WRITER_ROLES)
        data = DisputeInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        review, created = services.review_client_dispute(
            user=request.user, job=job, external_id=external_id, note=data.validated_data["note"]
        )
        return _dispute_response(review, created)


class FeedbackOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    job = serializers.IntegerField(source="job_id")
    # No external_id and no private payload field, as in assignments/next: a client's ids
    # would tell a worker which items were gold.
    payload = serializers.SerializerMethodField()
    your_label = serializers.CharField(source="value")
    final_label = serializers.CharField()
    correct = serializers.BooleanField()
    note = serializers.CharField()
    tags = serializers.ListField(child=serializers.CharField(), source="decision.tags")
    created_at = serializers.DateTimeField()

    @extend_schema_field(OpenApiTypes.ANY)
    def get_payload(self, outcome: ReviewOutcome) -> object:
        return payload_for_worker(outcome.item.payload)


class FeedbackListApi(generics.ListAPIView):
    """Your labels that QC judged, newest first (annotators and experts)."""

    permission_classes = [IsWorker]
    serializer_class = FeedbackOutputSerializer
    filter_backends: list = []

    def get_queryset(self) -> QuerySet[ReviewOutcome]:
        return selectors.feedback_list_for_worker(worker=self.request.worker)


class _GapRowSerializer(serializers.Serializer):
    external_id = serializers.CharField()
    payload = serializers.JSONField()
    label = serializers.CharField()
    tags = serializers.ListField(child=serializers.CharField())
    note = serializers.CharField()
    decided_at = serializers.DateTimeField()


class GuidelineGapsOutputSerializer(serializers.Serializer):
    tags = serializers.DictField(child=serializers.IntegerField(), help_text="Uses per tag.")
    results = _GapRowSerializer(many=True, help_text="Newest 500 tagged decisions.")


class GuidelineGapsApi(APIView):
    permission_classes = [IsJobReader]

    @extend_schema(
        operation_id="jobs_guideline_gaps",
        responses={200: GuidelineGapsOutputSerializer, 404: ErrorSerializer},
        description="QC decisions tagged guideline_gap (and other tags) with their notes.",
    )
    def get(self, request: Request, job_id: int) -> Response:
        job = job_get_for_user(user=request.user, job_id=job_id)
        return Response(GuidelineGapsOutputSerializer(selectors.guideline_gaps(job=job)).data)


class _AuditSerializer(serializers.Serializer):
    audited = serializers.IntegerField()
    correct = serializers.IntegerField()
    accuracy = serializers.FloatField()


class _WorkerOutcomeSerializer(serializers.Serializer):
    worker = serializers.IntegerField()
    username = serializers.CharField()
    reviewed_labels = serializers.IntegerField()
    overturned = serializers.IntegerField()
    overturned_rate = serializers.FloatField()


class ReviewMetricsOutputSerializer(serializers.Serializer):
    open_reviews = serializers.DictField(child=serializers.IntegerField())
    decisions = serializers.IntegerField()
    qc_override_rate = serializers.FloatField(
        allow_null=True, help_text="Share of decided items with a result where QC changed it."
    )
    qc_overrides = serializers.IntegerField()
    audit_accuracy = serializers.DictField(
        child=_AuditSerializer(), help_text="Per source of the audited result."
    )
    audit_accuracy_model = serializers.FloatField(
        allow_null=True, help_text="Accuracy of audited auto-accepted (model) items."
    )
    workers = _WorkerOutcomeSerializer(
        many=True,
        required=False,
        help_text="Your vendor's workers judged by QC; absent for clients.",
    )


class ReviewMetricsApi(APIView):
    permission_classes = [IsJobReader]

    @extend_schema(
        operation_id="jobs_review_metrics",
        responses={200: ReviewMetricsOutputSerializer, 404: ErrorSerializer},
    )
    def get(self, request: Request, job_id: int) -> Response:
        job = job_get_for_user(user=request.user, job_id=job_id)
        vendor_ids = job_vendor_ids_for_user(user=request.user, job=job)
        metrics = selectors.review_metrics(job=job, worker_vendor_ids=vendor_ids)
        return Response(ReviewMetricsOutputSerializer(metrics).data)
