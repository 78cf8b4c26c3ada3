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
    """The figures the label rollups keep: counts, paid money (label credits, exact), time."""

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


HOUR_HELP = "The start of the hour (UTC) the labels were made in."
DAY_HELP = "The start of the day (UTC) the labels were made in."


class JobHour(_LabelFigures):
    """One job's labels of one hour, with how deep into its item each crowd label went."""

    hour = models.DateTimeField(help_text=HOUR_HELP)
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="+", db_index=False)
    by_rank = models.JSONField(
        default=dict,
        help_text='Crowd labels on regular items by their rank within the item ({"1": n, '
        '"2": n, ...}, ranked by label id): extra redundancy is the labels ranked beyond '
        "min_labels, and rank 1 counts the items labeled.",
    )

    class Meta:
        constraints = [models.UniqueConstraint(fields=["job", "hour"], name="jobhour_unique")]
        # The pages ask which jobs had labels in the last hours (Window.live_jobs).
        indexes = [models.Index(fields=["hour"], name="jobhour_hour_idx")]

    def __str__(self) -> str:
        return f"job {self.job_id} at {self.hour:%Y-%m-%d %H}:00"


class WorkerHour(_LabelFigures):
    """One worker's labels in one job in one hour."""

    hour = models.DateTimeField(help_text=HOUR_HELP)
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="+", db_index=False)
    worker = models.ForeignKey(Worker, on_delete=models.CASCADE, related_name="+", db_index=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["job", "worker", "hour"], name="workerhour_unique")
        ]
        indexes = [
            # The worker's own pages read their rows across jobs.
            models.Index(fields=["worker", "hour"], name="workerhour_worker_idx"),
            # All-time figures read today's hours (the days before come from WorkerDay).
            models.Index(fields=["hour"], name="workerhour_hour_idx"),
        ]

    def __str__(self) -> str:
        return f"worker {self.worker_id} in job {self.job_id} at {self.hour:%Y-%m-%d %H}:00"


class WorkerDay(_LabelFigures):
    """One worker's labels in one job in one day: the sum of the day's WorkerHour rows
    (rewritten with them), so that a worker's all-time figures sum a few rows a day."""

    day = models.DateTimeField(help_text=DAY_HELP)
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="+", db_index=False)
    worker = models.ForeignKey(Worker, on_delete=models.CASCADE, related_name="+", db_index=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["job", "worker", "day"], name="workerday_unique")
        ]
        indexes = [models.Index(fields=["worker", "day"], name="workerday_worker_idx")]

    def __str__(self) -> str:
        return f"worker {self.worker_id} in job {self.job_id} on {self.day:%Y-%m-%d}"


class _AnswerCount(models.Model):
    """How often one worker gave one answer in one job (in an hour or a day): rows, not
    JSON, so that the database sums them (a worker's most frequent answer flags a one-class
    spammer)."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="+", db_index=False)
    worker = models.ForeignKey(Worker, on_delete=models.CASCADE, related_name="+", db_index=False)
    value = models.CharField(max_length=200)
    labels = models.PositiveIntegerField(default=0)

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return f"worker {self.worker_id} in job {self.job_id}: {self.value} x{self.labels}"


class WorkerDayValue(_AnswerCount):
    """A worker's answers per value in one job in one day (the day's WorkerHourValue rows
    summed)."""

    day = models.DateTimeField(help_text=DAY_HELP)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["job", "worker", "day", "value"], name="workerdayvalue_unique"
            )
        ]
        indexes = [models.Index(fields=["worker", "day"], name="workerdayvalue_worker_idx")]


class WorkerHourValue(_AnswerCount):
    """A worker's answers per value in one job in one hour."""

    hour = models.DateTimeField(help_text=HOUR_HELP)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["job", "worker", "hour", "value"], name="workerhourvalue_unique"
            )
        ]
        indexes = [
            models.Index(fields=["worker", "hour"], name="workerhourvalue_worker_idx"),
            models.Index(fields=["hour"], name="workerhourvalue_hour_idx"),
        ]


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
        help_text="When the last run started: the rollups hold the labels made before it, "
        "dashboards count those from it on directly (an indexed range).",
    )
    ran_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"rollups up to label {self.watermark}"
