"""Jobs (a client's labeling project with its policy) and Items (one thing to label)."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from apps.accounts.models import Organization
from apps.jobs.kinds import SINGLE_CHOICE, schema_kind_name
from apps.jobs.policy import JobSpec, spec_from_stored


class Job(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        RUNNING = "running", "Running"
        PAUSED = "paused", "Paused"
        COMPLETED = "completed", "Completed"
        CANCELLED = "cancelled", "Cancelled"

    organization = models.ForeignKey(
        Organization,
        on_delete=models.PROTECT,
        related_name="jobs",
        help_text="The client organization that owns the job.",
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    name = models.CharField(max_length=200)
    instructions = models.TextField(blank=True, default="")
    label_schema = models.JSONField(
        default=dict,
        help_text='{"kind": "single_choice", "classes": ["cat", "dog"]}, or another kind with '
        "its parameters (apps.jobs.kinds).",
    )
    policy = models.JSONField(
        default=dict, help_text="Redundancy, confidence, gold and lease policy."
    )
    pricing = models.JSONField(default=dict, help_text="Price per crowd and per expert label.")
    routing = models.JSONField(
        default=dict, help_text="Model routing: mode, target_accuracy, strategy."
    )
    feature_dim = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Length of item feature vectors, fixed by the first upload.",
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.DRAFT)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    launched_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["organization", "status"]), models.Index(fields=["status"])]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(
                    status__in=["draft", "running", "paused", "completed", "cancelled"]
                ),
                name="job_status_valid",
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} (#{self.pk}, {self.status})"

    @property
    def kind(self) -> str:
        """The answer kind: "single_choice" or one of apps.jobs.kinds.KIND_NAMES."""
        return schema_kind_name(self.label_schema)

    @property
    def classes(self) -> list[str]:
        """The classes of a single_choice job; empty for the other kinds, whose answers are
        JSON (apps.jobs.kinds) and never go through the class-based paths."""
        if self.kind != SINGLE_CHOICE:
            return []
        return list(self.label_schema.get("classes", []))

    @property
    def spec(self) -> JobSpec:
        """The job's policy, pricing and routing, typed, defaults filled in
        (apps.jobs.policy). Kept on the instance while the stored JSON is unchanged."""
        source = (self.policy, self.pricing, self.routing)
        cached = self.__dict__.get("_spec")
        if cached is not None and cached[0] == source:
            return cached[1]
        spec = spec_from_stored(policy=source[0], pricing=source[1], routing=source[2])
        self.__dict__["_spec"] = (source, spec)
        return spec


class Item(models.Model):
    class State(models.TextChoices):
        OPEN = "open", "Open: needs labels"
        EXPERT = "expert", "Waiting for an expert"
        REVIEW = "review", "Waiting for QC review"
        SETTLED = "settled", "Settled"

    class Source(models.TextChoices):
        CROWD = "crowd", "Crowd"
        MODEL = "model", "Model"
        EXPERT = "expert", "Expert"
        QC = "qc", "QC"

    # Covered by item_queue_idx and item_unique_external_id, which start with job.
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="items", db_index=False)
    external_id = models.CharField(max_length=255, help_text="The client's id, unique per job.")
    payload = models.JSONField(
        default=dict, help_text="What annotators see (text, image URL, ...)."
    )
    features = models.BinaryField(
        null=True, blank=True, help_text="Feature vector as little-endian float32 bytes."
    )
    prediction = models.JSONField(
        null=True, blank=True, help_text="Client-supplied class probabilities, in class order."
    )
    # NULL, not "", means "no gold answer": the partial gold index and budget check rely on it.
    # Text, not a short string: a gold answer of another kind (boxes) is canonical JSON.
    gold_label = models.TextField(  # noqa: DJ001
        null=True,
        blank=True,
        help_text="Known answer (a class, or canonical JSON for other kinds): makes this a "
        "control item.",
    )
    state = models.CharField(max_length=16, choices=State.choices, default=State.OPEN)
    priority = models.FloatField(default=0.0, help_text="Higher is asked first; FIFO within equal.")
    labels_needed = models.PositiveIntegerField(
        default=3, help_text="How many labels the item currently needs in all."
    )
    n_labels = models.PositiveIntegerField(default=0, help_text="Labels counted for this item.")
    n_leases = models.PositiveIntegerField(default=0, help_text="Live leases on this item.")
    vote_counts = models.JSONField(default=dict, blank=True, help_text="Votes per class.")
    # label and source are NULL until the item has a result.
    label = models.TextField(  # noqa: DJ001
        null=True,
        blank=True,
        help_text="Current result label (a class, or canonical JSON for other kinds).",
    )
    confidence = models.FloatField(null=True, blank=True)
    agreement = models.FloatField(null=True, blank=True)
    posterior = models.JSONField(
        null=True, blank=True, help_text="Class probabilities, class order."
    )
    source = models.CharField(  # noqa: DJ001
        max_length=16, choices=Source.choices, null=True, blank=True
    )
    result_meta = models.JSONField(
        default=dict, blank=True, help_text="Method, version and contributing workers with weights."
    )
    settled_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["job", "external_id"], name="item_unique_external_id"),
            # The label budget, enforced by the database: live leases plus labels never exceed
            # what the item needs. Gold items are exempt: every worker may see them once.
            models.CheckConstraint(
                condition=models.Q(gold_label__isnull=False)
                | models.Q(n_labels__lte=models.F("labels_needed") - models.F("n_leases")),
                name="item_label_budget",
            ),
            models.CheckConstraint(
                condition=models.Q(state__in=["open", "expert", "review", "settled"]),
                name="item_state_valid",
            ),
        ]
        indexes = [
            models.Index(fields=["job", "state", "-priority", "id"], name="item_queue_idx"),
            models.Index(
                fields=["job"], condition=models.Q(gold_label__isnull=False), name="item_gold_idx"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.external_id} (job {self.job_id})"

    @property
    def is_gold(self) -> bool:
        return self.gold_label is not None
