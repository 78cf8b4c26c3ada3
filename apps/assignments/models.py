"""Assignments (a worker's lease on an item) and Labels (one submitted answer)."""

from __future__ import annotations

from django.db import models

from apps.jobs.models import Item, Job
from apps.workforce.models import Worker


class Assignment(models.Model):
    class State(models.TextChoices):
        LEASED = "leased", "Leased"
        SUBMITTED = "submitted", "Submitted"
        EXPIRED = "expired", "Expired"
        RELEASED = "released", "Released"
        SKIPPED = "skipped", "Skipped"

    # No single-column indexes where a composite one starts with the column (item: the
    # (item, worker) constraint; worker: assignment_worker_job_idx): every lease writes them.
    item = models.ForeignKey(
        Item, on_delete=models.CASCADE, related_name="assignments", db_index=False
    )
    # Denormalized from item: the sweep, caps and invariant checks filter by job without a join.
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="assignments")
    worker = models.ForeignKey(
        Worker, on_delete=models.PROTECT, related_name="assignments", db_index=False
    )
    state = models.CharField(max_length=16, choices=State.choices, default=State.LEASED)
    is_gold = models.BooleanField(default=False, help_text="The item is a control (gold) item.")
    leased_at = models.DateTimeField(help_text="When the lease started.")
    expires_at = models.DateTimeField(help_text="When the lease lapses and its slot returns.")
    finished_at = models.DateTimeField(
        null=True, blank=True, help_text="When it was submitted, released, skipped or expired."
    )

    class Meta:
        ordering = ["id"]
        constraints = [
            # A worker never gets the same item twice, whatever became of the first lease.
            models.UniqueConstraint(
                fields=["item", "worker"], name="assignment_unique_item_worker"
            ),
            models.CheckConstraint(
                condition=models.Q(
                    state__in=["leased", "submitted", "expired", "released", "skipped"]
                ),
                name="assignment_state_valid",
            ),
            models.CheckConstraint(
                condition=models.Q(expires_at__gt=models.F("leased_at")),
                name="assignment_expiry_after_start",
            ),
        ]
        indexes = [
            # The sweep reads only live leases, oldest expiry first.
            models.Index(
                fields=["expires_at"],
                condition=models.Q(state="leased"),
                name="assignment_live_expiry_idx",
            ),
            models.Index(
                fields=["job", "expires_at"],
                condition=models.Q(state="leased"),
                name="assignment_job_live_idx",
            ),
            # Per-worker caps and worker statistics within a job.
            models.Index(fields=["worker", "job", "state"], name="assignment_worker_job_idx"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} item {self.item_id} -> worker {self.worker_id} ({self.state})"


class Label(models.Model):
    """One answer from one worker for one item; written once, never edited."""

    assignment = models.OneToOneField(Assignment, on_delete=models.CASCADE, related_name="label")
    # item and job are covered by label_unique_item_worker and the (job, ...) indexes.
    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="labels", db_index=False)
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="labels", db_index=False)
    worker = models.ForeignKey(Worker, on_delete=models.PROTECT, related_name="labels")
    value = models.TextField(
        help_text="The chosen class, or the answer as canonical JSON for other kinds."
    )
    tier = models.CharField(
        max_length=16,
        choices=Worker.Tier.choices,
        help_text="The worker's tier when labeling; it fixes the price and the label's weight.",
    )
    duration_ms = models.PositiveIntegerField(
        null=True, blank=True, help_text="Time spent, as reported by the client or the lease."
    )
    is_gold = models.BooleanField(default=False, help_text="The item is a control (gold) item.")
    is_correct = models.BooleanField(
        null=True, blank=True, help_text="For gold items: whether the value equals the gold label."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["item", "worker"], name="label_unique_item_worker"),
            models.CheckConstraint(
                condition=models.Q(tier__in=["crowd", "expert"]), name="label_tier_valid"
            ),
        ]
        indexes = [
            models.Index(fields=["job", "worker"], name="label_job_worker_idx"),
            models.Index(fields=["job", "created_at"], name="label_job_created_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.value!r} on item {self.item_id} by worker {self.worker_id}"
