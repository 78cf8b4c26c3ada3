"""The rollups in the admin: read-only (they are derived from the labels; a run or
`rollup_rebuild` rewrites them)."""

from django.contrib import admin
from django.http import HttpRequest

from apps.reports.models import (
    JobCurve,
    JobHour,
    JobItems,
    RollupState,
    WorkerDay,
    WorkerDayValue,
    WorkerHour,
    WorkerHourValue,
)


class _ReadOnly(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(JobHour)
class JobHourAdmin(_ReadOnly):
    list_display = ["job", "hour", "labels", "gold_answers", "gold_correct", "paid_crowd"]
    raw_id_fields = ["job"]


@admin.register(WorkerHour)
class WorkerHourAdmin(_ReadOnly):
    list_display = ["worker", "job", "hour", "labels", "gold_answers", "gold_correct"]
    raw_id_fields = ["worker", "job"]


@admin.register(WorkerHourValue)
class WorkerHourValueAdmin(_ReadOnly):
    list_display = ["worker", "job", "hour", "value", "labels"]
    raw_id_fields = ["worker", "job"]


@admin.register(WorkerDay)
class WorkerDayAdmin(_ReadOnly):
    list_display = ["worker", "job", "day", "labels", "gold_answers", "gold_correct"]
    raw_id_fields = ["worker", "job"]


@admin.register(WorkerDayValue)
class WorkerDayValueAdmin(_ReadOnly):
    list_display = ["worker", "job", "day", "value", "labels"]
    raw_id_fields = ["worker", "job"]


@admin.register(JobItems)
class JobItemsAdmin(_ReadOnly):
    list_display = ["job", "counted_at"]
    raw_id_fields = ["job"]


@admin.register(JobCurve)
class JobCurveAdmin(_ReadOnly):
    list_display = ["job", "computed_at"]
    raw_id_fields = ["job"]


@admin.register(RollupState)
class RollupStateAdmin(_ReadOnly):
    list_display = ["watermark", "covered_until", "ran_at"]
