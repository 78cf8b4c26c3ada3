"""Routing model versions with their model cards, per-item calibrated scores, and pre-label exposures."""

from __future__ import annotations

from django.db import models

from apps.assignments.models import Assignment
from apps.jobs.models import Item, Job


class ModelVersion(models.Model):
    """One trained routing model of a job, kept forever with its model card.

    A job has at most one active version: the one routing uses. A retrain that scores worse
    than the active version on the same held-out items is stored but not activated, and
    `decision` says why.
    """

    class Kind(models.TextChoices):
        FEATURES = "features", "Model on item features"
        PREDICTION = "prediction", "Temperature-calibrated client prediction"

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="model_versions")
    number = models.PositiveIntegerField(help_text="1, 2, ... per job, in training order.")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    parent = models.ForeignKey(
        "self",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="children",
        help_text="The version that was active when this one was trained.",
    )
    is_active = models.BooleanField(default=False, help_text="Routing uses this version.")
    weights = models.BinaryField(
        null=True,
        blank=True,
        help_text="model_to_bytes of the routing model; empty for a prediction calibration.",
    )
    temperature = models.FloatField(help_text="Temperature fitted on held-out settled items.")
    threshold = models.FloatField(
        null=True,
        blank=True,
        help_text="Auto-accept calibrated confidence; NULL when no threshold met the target.",
    )
    target_accuracy = models.FloatField(
        help_text="The accuracy target the threshold was chosen for."
    )
    n_train = models.PositiveIntegerField(help_text="Settled items the model was trained on.")
    n_heldout = models.PositiveIntegerField(
        help_text="Items scored out of fold for temperature, threshold and the card."
    )
    data_cutoff = models.DateTimeField(
        null=True,
        blank=True,
        help_text="Latest settled_at among the training items: later items are unseen by it.",
    )
    card = models.JSONField(
        default=dict,
        help_text="Model card: per-class and per-slice accuracy, ECE, threshold, coverage, ...",
    )
    decision = models.JSONField(
        default=dict,
        help_text="Why it was or was not activated: the comparison with the active version.",
    )
    seconds = models.FloatField(default=0.0, help_text="Training wall time.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(fields=["job", "number"], name="modelversion_unique_number"),
            models.UniqueConstraint(
                fields=["job"],
                condition=models.Q(is_active=True),
                name="modelversion_one_active_per_job",
            ),
            models.CheckConstraint(
                condition=models.Q(temperature__gt=0), name="modelversion_temperature_positive"
            ),
            models.CheckConstraint(
                condition=models.Q(kind__in=["features", "prediction"]),
                name="modelversion_kind_valid",
            ),
        ]
        indexes = [models.Index(fields=["job", "-id"], name="modelversion_job_idx")]

    def __str__(self) -> str:
        active = " active" if self.is_active else ""
        return f"job {self.job_id} model v{self.number}{active}"


class ItemScore(models.Model):
    """The active model's calibrated class probabilities for one item (the model's vote)."""

    item = models.OneToOneField(
        Item, on_delete=models.CASCADE, primary_key=True, related_name="routing_score"
    )
    # Denormalized from item: routing reads and rewrites a job's scores in bulk.
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="+")
    model_version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="scores")
    probs = models.JSONField(help_text="Calibrated class probabilities, class order.")
    confidence = models.FloatField(help_text="The top calibrated probability.")
    predicted = models.CharField(max_length=200, help_text="The model's most likely class.")
    audit = models.BooleanField(
        default=False,
        help_text="Confident but drawn for a human audit: the model does not vote on it.",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(confidence__gte=0) & models.Q(confidence__lte=1),
                name="itemscore_confidence_range",
            )
        ]
        indexes = [models.Index(fields=["job", "confidence"], name="itemscore_job_conf_idx")]

    def __str__(self) -> str:
        return f"item {self.item_id}: {self.predicted} ({self.confidence:.3f})"


class PrelabelExposure(models.Model):
    """A pre-label shown with a lease, so its effect on gold accuracy can be measured."""

    assignment = models.OneToOneField(
        Assignment, on_delete=models.CASCADE, primary_key=True, related_name="prelabel_exposure"
    )
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="+")
    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="+")
    prelabel = models.CharField(max_length=200, help_text="The class suggested to the annotator.")
    source = models.CharField(
        max_length=16, help_text="model (active routing model) or client (client prediction)."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["job", "item"], name="prelabelexposure_job_item_idx")]

    def __str__(self) -> str:
        return f"assignment {self.assignment_id}: {self.prelabel}"
