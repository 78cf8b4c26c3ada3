"""Workers (an annotator's working record), pools of workers, and the earnings ledger."""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.db import models

from apps.accounts.models import Organization


class Worker(models.Model):
    class Tier(models.TextChoices):
        CROWD = "crowd", "Crowd"
        EXPERT = "expert", "Expert"

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        SUSPENDED = "suspended", "Suspended"
        BANNED = "banned", "Banned"

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="worker"
    )
    organization = models.ForeignKey(
        Organization,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="workers",
        help_text="The vendor organization the worker works for (scopes what ops may see).",
    )
    tier = models.CharField(
        max_length=16,
        choices=Tier.choices,
        default=Tier.CROWD,
        help_text="Crowd workers label open items; experts also get items the crowd could not settle.",
    )
    pay_rate = models.DecimalField(
        max_digits=8,
        decimal_places=2,
        default=Decimal("0.00"),
        help_text="Reference hourly rate ops use to size bonuses; per-label credits follow job pricing.",
    )
    status = models.CharField(
        max_length=16,
        choices=Status.choices,
        default=Status.ACTIVE,
        help_text="Only active workers are handed tasks.",
    )
    status_reason = models.CharField(
        max_length=500, blank=True, default="", help_text="Why ops suspended or banned the worker."
    )
    skills = models.JSONField(
        default=list, blank=True, help_text='Free-form skill tags, e.g. ["en", "medical"].'
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["organization", "status"])]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(tier__in=["crowd", "expert"]), name="worker_tier_valid"
            ),
            models.CheckConstraint(
                condition=models.Q(status__in=["active", "suspended", "banned"]),
                name="worker_status_valid",
            ),
            models.CheckConstraint(
                condition=models.Q(pay_rate__gte=0), name="worker_pay_rate_non_negative"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user} ({self.tier}, {self.status})"


class Pool(models.Model):
    """A named group of workers; a worker only gets tasks of running jobs open to its pools."""

    organization = models.ForeignKey(
        Organization,
        on_delete=models.PROTECT,
        related_name="pools",
        help_text="The vendor organization that runs the pool.",
    )
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True, default="")
    members = models.ManyToManyField(
        Worker, related_name="pools", blank=True, help_text="Workers in the pool."
    )
    jobs = models.ManyToManyField(
        "jobs.Job", related_name="pools", blank=True, help_text="Jobs the pool works on."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["organization", "name"], name="pool_unique_name")
        ]

    def __str__(self) -> str:
        return self.name


class LedgerEntry(models.Model):
    """One credit to a worker's earnings; the idempotency key makes every credit happen once."""

    class Kind(models.TextChoices):
        LABEL = "label", "Label"
        BONUS = "bonus", "Bonus"

    # Covered by the (worker, job, kind) index.
    worker = models.ForeignKey(
        Worker, on_delete=models.PROTECT, related_name="ledger", db_index=False
    )
    job = models.ForeignKey("jobs.Job", on_delete=models.PROTECT, related_name="ledger")
    label = models.OneToOneField(
        "assignments.Label",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="ledger_entry",
        help_text="The label paid for (label credits only).",
    )
    kind = models.CharField(max_length=16, choices=Kind.choices)
    amount = models.DecimalField(max_digits=12, decimal_places=4)
    # Unique through Meta.constraints: a plain unique index (unique=True would add a second,
    # LIKE-pattern index on PostgreSQL that nothing uses, written on every credit).
    idempotency_key = models.CharField(
        max_length=200,
        help_text='"label:<id>" for label credits; chosen by the caller for bonuses.',
    )
    note = models.CharField(max_length=500, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
        verbose_name_plural = "ledger entries"
        indexes = [
            models.Index(fields=["worker", "job", "kind"]),
            # A job's bonuses, summed by the dashboards (its label credits are in the rollups).
            models.Index(
                fields=["job"], condition=models.Q(kind="bonus"), name="ledger_bonus_job_idx"
            ),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["idempotency_key"], name="ledger_unique_idempotency_key"
            ),
            models.CheckConstraint(
                condition=models.Q(kind__in=["label", "bonus"]), name="ledger_kind_valid"
            ),
            # A label credit names its label; a bonus never does.
            models.CheckConstraint(
                condition=models.Q(kind="label", label__isnull=False)
                | models.Q(kind="bonus", label__isnull=True),
                name="ledger_label_matches_kind",
            ),
            models.CheckConstraint(
                condition=models.Q(amount__gte=0), name="ledger_amount_non_negative"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.amount} to {self.worker_id} (job {self.job_id})"
