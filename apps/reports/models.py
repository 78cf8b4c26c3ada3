"""Hourly rollups of the labels, kept by a Celery beat task (apps.reports.rollups), so that
the dashboards sum a few hundred rows per job instead of a million labels.

A rollup row is derived data: deleting every row and running the rollup again rebuilds the
same rows from the labels and their ledger credits (`rollup_rebuild`).
"""

from __future__ import annotations

from django.db import models

from apps.jobs.models import Job
from apps.workforce.models import Worker


class _LabelFigures(models.Model):
    """The figures both rollups keep: counts, paid money (label credits, exact) and time."""

    hour = models.DateTimeField(help_text="The start of the hour (UTC) the labels were made in.")
    labels = models.PositiveIntegerField(default=0)
    expert_labels = models.PositiveIntegerField(default=0, help_text="Labels by experts.")
    crowd_labels = models.PositiveIntegerField(
        default=0, help_text="Crowd labels on regular (non-gold) items."
    )
    gold_answers = models.PositiveIntegerField(default=0, help_text="Labels on gold items.")
    gold_correct = models.PositiveIntegerField(default=0)
    duration_ms_sum = models.BigIntegerField(default=0, help_text="Sum of the labels' durations.")
    duration_n = models.PositiveIntegerField(default=0, help_text="Labels with a duration.")
    paid_crowd = models.DecimalField(
        max_digits=14, decimal_places=4, default=0, help_text="Credits for crowd_labels."
    )
    paid_gold = models.DecimalField(
        max_digits=14, decimal_places=4, default=0, help_text="Credits for gold answers."
    )
    paid_expert = models.DecimalField(
        max_digits=14,
        decimal_places=4,
        default=0,
        help_text="Credits for expert labels on regular items.",
    )

    class Meta:
        abstract = True


class JobHour(_LabelFigures):
    """One job's labels of one hour, with how deep into its item each crowd label went."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="+", db_index=False)
    by_rank = models.JSONField(
        default=dict,
        help_text='Crowd labels on regular items by their rank within the item ({"1": n, '
        '"2": n, ...}, ranked by label id): extra redundancy is the labels ranked beyond '
        "min_labels, and rank 1 counts the items labeled.",
    )

    class Meta:
        constraints = [models.UniqueConstraint(fields=["job", "hour"], name="jobhour_unique")]

    def __str__(self) -> str:
        return f"job {self.job_id} at {self.hour:%Y-%m-%d %H}:00"


class WorkerHour(_LabelFigures):
    """One worker's labels in one job in one hour."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="+", db_index=False)
    worker = models.ForeignKey(Worker, on_delete=models.CASCADE, related_name="+", db_index=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["job", "worker", "hour"], name="workerhour_unique")
        ]
        # The worker's own pages read their rows across jobs.
        indexes = [models.Index(fields=["worker", "hour"], name="workerhour_worker_idx")]

    def __str__(self) -> str:
        return f"worker {self.worker_id} in job {self.job_id} at {self.hour:%Y-%m-%d %H}:00"


class WorkerHourValue(models.Model):
    """How often one worker answered one value in one job in one hour (rows, not JSON, so
    that the database sums them: a worker's most frequent answer flags a one-class
    spammer)."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="+", db_index=False)
    worker = models.ForeignKey(Worker, on_delete=models.CASCADE, related_name="+", db_index=False)
    hour = models.DateTimeField()
    value = models.CharField(max_length=200)
    labels = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["job", "worker", "hour", "value"], name="workerhourvalue_unique"
            )
        ]
        indexes = [models.Index(fields=["worker", "hour"], name="workerhourvalue_worker_idx")]

    def __str__(self) -> str:
        return f"worker {self.worker_id}: {self.value} x{self.labels} at {self.hour:%Y-%m-%d %H}:00"


class JobCurve(models.Model):
    """A job's redundancy curve: the accuracy of the majority of the first k crowd labels of
    its gold items, per k (recomputed by the rollup when the job's gold answers change)."""

    job = models.OneToOneField(Job, on_delete=models.CASCADE, primary_key=True, related_name="+")
    points = models.JSONField(
        default=list, help_text='[{"k": 1, "items": n, "accuracy": a}, ...], k ascending.'
    )
    computed_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"redundancy curve of job {self.job_id}"


class JobItems(models.Model):
    """A job's item figures as the rollup last counted them (apps.reports.items): states,
    sources, gold, accepted, settled in the last hour, labels still needed."""

    job = models.OneToOneField(Job, on_delete=models.CASCADE, primary_key=True, related_name="+")
    figures = models.JSONField(default=dict, help_text="apps.reports.items.ItemFigures")
    counted_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"items of job {self.job_id} at {self.counted_at:%H:%M}"


class RollupState(models.Model):
    """Where the rollup stands (one row, id 1)."""

    watermark = models.BigIntegerField(
        default=0,
        help_text="Every label with an id up to this one is in the rollups; later ones are "
        "read (and their hours re-rolled) by the next run.",
    )
    covered_until = models.DateTimeField(
        null=True,
        blank=True,
        help_text="Hours before this one are complete in the rollups; dashboards count the "
        "labels from it on directly (an indexed range).",
    )
    ran_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"rollups up to label {self.watermark}"
