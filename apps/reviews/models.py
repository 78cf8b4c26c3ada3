"""QC reviews (an item waiting for a person's decision), the decisions taken on them, and the
per-label outcomes that feed back into worker quality."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from apps.jobs.models import Item, Job
from apps.workforce.models import Worker


class Reason(models.TextChoices):
    """Why an item needs a QC decision."""

    DISAGREEMENT = "disagreement", "Still disputed at max_labels (or after an expert)"
    LOW_POSTERIOR = "low_posterior", "Posterior below target"
    GOLD_DISPUTE = "gold_dispute", "A worker disputes a gold answer"
    WORKER_DISPUTE = "worker_dispute", "A worker disputes an item (not gold)"
    AUDIT = "audit", "Random audit of a settled item"
    CLIENT_DISPUTE = "client_dispute", "The client disputes a delivered result"


class Tag(models.TextChoices):
    """What a decision found beyond the label: read by clients to fix their instructions."""

    GUIDELINE_GAP = "guideline_gap", "The instructions do not cover this case"
    AMBIGUOUS_ITEM = "ambiguous_item", "The item is genuinely ambiguous"
    INVALID_ITEM = "invalid_item", "The item cannot be labeled (broken, off-topic)"
    WORKER_ERROR = "worker_error", "Workers made a plain mistake"
    GOLD_ERROR = "gold_error", "The gold answer was wrong"


class Review(models.Model):
    class Status(models.TextChoices):
        OPEN = "open", "Open"
        RESOLVED = "resolved", "Resolved by a decision on this review"
        CLOSED = "closed", "Closed by a decision on another review of the item"

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="reviews")
    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="reviews")
    reason = models.CharField(max_length=32, choices=Reason.choices)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN)
    base_priority = models.FloatField(
        default=0.0, help_text="Reason weight plus the item's value, fixed when opened."
    )
    priority = models.FloatField(
        default=0.0,
        help_text="Queue order, higher first: base_priority plus an aging bonus (refreshed).",
    )
    note = models.TextField(
        blank=True, default="", help_text="Why it was opened, in the opener's words."
    )
    context = models.JSONField(
        default=dict,
        blank=True,
        help_text="What triggered it: disputes with notes, the expert's label, the decision.",
    )
    opened_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text="The client, worker or staff member who opened it; empty when the engine did.",
    )
    claimed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="review_claims",
        help_text="The QC person working on it; the claim lapses at claim_expires_at.",
    )
    claimed_at = models.DateTimeField(null=True, blank=True)
    claim_expires_at = models.DateTimeField(null=True, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-priority", "created_at", "id"]
        constraints = [
            # Every trigger may fire more than once (retries, two workers disputing the same
            # gold item); the database keeps one open review per item and reason.
            models.UniqueConstraint(
                fields=["item", "reason"],
                condition=models.Q(status="open"),
                name="review_one_open_per_item_reason",
            ),
            models.CheckConstraint(
                condition=models.Q(status__in=["open", "resolved", "closed"]),
                name="review_status_valid",
            ),
            models.CheckConstraint(
                condition=models.Q(
                    reason__in=[
                        "disagreement",
                        "low_posterior",
                        "gold_dispute",
                        "worker_dispute",
                        "audit",
                        "client_dispute",
                    ]
                ),
                name="review_reason_valid",
            ),
            models.CheckConstraint(
                condition=models.Q(claimed_by__isnull=True, claim_expires_at__isnull=True)
                | models.Q(claimed_by__isnull=False, claim_expires_at__isnull=False),
                name="review_claim_complete",
            ),
            models.CheckConstraint(
                condition=models.Q(status="open") | models.Q(resolved_at__isnull=False),
                name="review_finished_has_time",
            ),
        ]
        indexes = [
            # The queue: open reviews, best first.
            models.Index(
                fields=["-priority", "created_at"],
                condition=models.Q(status="open"),
                name="review_queue_idx",
            ),
            models.Index(fields=["job", "status", "reason"], name="review_job_status_idx"),
            models.Index(fields=["item", "status"], name="review_item_status_idx"),
        ]

    def __str__(self) -> str:
        return f"review #{self.pk} {self.reason} item {self.item_id} ({self.status})"


class ReviewDecision(models.Model):
    """One QC decision on an item. Never edited: a later decision supersedes it."""

    review = models.ForeignKey(Review, on_delete=models.CASCADE, related_name="decisions")
    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="review_decisions")
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="review_decisions")
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="review_decisions"
    )
    # Text: an answer of another kind than single_choice is canonical JSON (apps.jobs.kinds).
    label = models.TextField(help_text="The final label QC chose.")
    # NULL, not "": the item had no result (a tie), which the override rate must tell apart.
    previous_label = models.TextField(  # noqa: DJ001
        null=True, blank=True, help_text="The item's label just before."
    )
    previous_source = models.CharField(  # noqa: DJ001
        max_length=16, null=True, blank=True, help_text="The item's source just before."
    )
    original_label = models.TextField(  # noqa: DJ001
        null=True,
        blank=True,
        help_text="The label before any QC decision (crowd, model or expert); for override rates.",
    )
    original_source = models.CharField(  # noqa: DJ001
        max_length=16, null=True, blank=True, help_text="The source before any QC decision."
    )
    note = models.TextField(blank=True, default="")
    tags = models.JSONField(default=list, blank=True, help_text="Tag values, e.g. guideline_gap.")
    make_gold = models.BooleanField(
        default=False, help_text="The decision made the item a gold item for future workers."
    )
    is_current = models.BooleanField(
        default=True, help_text="False once a later decision on the item superseded this one."
    )
    supersedes = models.OneToOneField(
        "self",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="superseded_by",
        help_text="The decision this one replaced.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["item"],
                condition=models.Q(is_current=True),
                name="review_decision_one_current_per_item",
            )
        ]
        indexes = [
            models.Index(fields=["job", "is_current"], name="review_decision_job_idx"),
            models.Index(fields=["item", "created_at"], name="review_decision_item_idx"),
        ]

    def __str__(self) -> str:
        return f"decision #{self.pk} {self.label!r} on item {self.item_id}"


class ReviewOutcome(models.Model):
    """How one worker's label fared against a QC decision: the feedback the worker sees."""

    decision = models.ForeignKey(ReviewDecision, on_delete=models.CASCADE, related_name="outcomes")
    label = models.ForeignKey(
        "assignments.Label", on_delete=models.CASCADE, related_name="review_outcomes"
    )
    worker = models.ForeignKey(Worker, on_delete=models.CASCADE, related_name="review_outcomes")
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="review_outcomes")
    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="review_outcomes")
    value = models.TextField(help_text="The worker's label.")
    final_label = models.TextField(help_text="The label QC decided.")
    correct = models.BooleanField(help_text="The worker's label equals QC's decision.")
    note = models.TextField(blank=True, default="", help_text="QC's note, shown to the worker.")
    is_current = models.BooleanField(
        default=True, help_text="False once the decision was superseded; metrics skip it."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(fields=["decision", "label"], name="review_outcome_unique")
        ]
        indexes = [
            models.Index(fields=["worker", "is_current", "-id"], name="review_outcome_worker_idx"),
            models.Index(fields=["job", "is_current"], name="review_outcome_job_idx"),
        ]

    def __str__(self) -> str:
        verdict = "correct" if self.correct else "overturned"
        return f"{self.worker_id}: {self.value!r} {verdict} on item {self.item_id}"
