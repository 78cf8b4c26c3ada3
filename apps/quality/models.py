"""Per-job worker quality, aggregation runs, gold item exposure and recorded quality decisions."""

from __future__ import annotations

from django.db import models

from apps.jobs.models import Item, Job
from apps.workforce.models import Worker


class WorkerJobQuality(models.Model):
    """A worker's estimated confusion matrix and gold record in one job."""

    worker = models.ForeignKey(Worker, on_delete=models.CASCADE, related_name="job_qualities")
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="worker_qualities")
    classes_key = models.CharField(
        max_length=64,
        db_index=True,
        help_text="Digest of the job's class list: matrices transfer between jobs with equal keys.",
    )
    confusion = models.JSONField(
        help_text="K x K row-stochastic matrix: P(answer = column | truth = row), class order."
    )
    skill = models.FloatField(help_text="Expected accuracy under the job's class prior.")
    n_labels = models.PositiveIntegerField(default=0)
    source = models.CharField(
        max_length=16,
        default="aggregation",
        help_text="aggregation (estimated on this job) or history (carried over as a prior).",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["worker", "job"], name="workerjobquality_unique"),
            models.CheckConstraint(
                condition=models.Q(skill__gte=0) & models.Q(skill__lte=1),
                name="workerjobquality_skill_range",
            ),
        ]
        indexes = [models.Index(fields=["worker", "classes_key", "-updated_at"])]
        verbose_name_plural = "worker job qualities"

    def __str__(self) -> str:
        return f"worker {self.worker_id} on job {self.job_id}: {self.skill:.3f}"


class AggregationRun(models.Model):
    """One job-level aggregation: which labels it saw, which method, what it concluded."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="aggregation_runs")
    method = models.CharField(max_length=32)
    version = models.CharField(max_length=32)
    max_label_id = models.BigIntegerField(
        help_text="The snapshot: labels with id up to this one (and not excluded) were used."
    )
    excluded_workers = models.JSONField(
        default=list, help_text="Worker ids whose labels were dropped."
    )
    n_labels = models.PositiveIntegerField()
    n_items = models.PositiveIntegerField()
    n_workers = models.PositiveIntegerField()
    n_iter = models.PositiveIntegerField(default=0)
    converged = models.BooleanField(default=True)
    log_likelihood = models.FloatField(null=True, blank=True)
    class_prior = models.JSONField(help_text="Estimated class frequencies, class order.")
    detail = models.CharField(max_length=200, blank=True, default="")
    seconds = models.FloatField(default=0.0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["job", "-id"])]

    def __str__(self) -> str:
        return f"{self.method} on job {self.job_id} ({self.n_labels} labels)"


class GoldExposure(models.Model):
    """How often a gold item was shown and answered; an over-exposed gold item is retired."""

    item = models.OneToOneField(Item, on_delete=models.CASCADE, related_name="gold_exposure")
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="gold_exposures")
    shown = models.PositiveIntegerField(default=0)
    answered = models.PositiveIntegerField(default=0)
    correct = models.PositiveIntegerField(default=0)
    retired_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["job", "retired_at"])]

    def __str__(self) -> str:
        return f"gold {self.item_id}: shown {self.shown}"


class QualityDecision(models.Model):
    """A recorded quality action on a worker (suspension, reopened items) and its reason."""

    class Action(models.TextChoices):
        SUSPEND = "suspend", "Suspend"
        REOPEN = "reopen", "Reopen items"

    class Reason(models.TextChoices):
        GOLD_ACCURACY = "gold_accuracy", "Gold accuracy confidently below the threshold"
        TOO_FAST = "too_fast", "Answers implausibly fast"
        OPS = "ops", "Banned or suspended by ops"

    worker = models.ForeignKey(Worker, on_delete=models.CASCADE, related_name="quality_decisions")
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="quality_decisions")
    action = models.CharField(max_length=16, choices=Action.choices)
    reason = models.CharField(max_length=32, choices=Reason.choices)
    details = models.JSONField(default=dict, help_text="The figures behind the decision.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["worker", "-id"])]

    def __str__(self) -> str:
        return f"{self.action} worker {self.worker_id}: {self.reason}"
