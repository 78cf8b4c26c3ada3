from django.contrib import admin

from apps.quality.models import AggregationRun, GoldExposure, QualityDecision, WorkerJobQuality


@admin.register(WorkerJobQuality)
class WorkerJobQualityAdmin(admin.ModelAdmin):
    list_display = ["worker", "job", "skill", "n_labels", "source", "updated_at"]
    list_filter = ["source"]
    search_fields = ["worker__user__username", "job__name"]
    raw_id_fields = ["worker", "job"]


@admin.register(AggregationRun)
class AggregationRunAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "job",
        "method",
        "version",
        "n_labels",
        "n_items",
        "n_workers",
        "converged",
        "seconds",
        "created_at",
    ]
    list_filter = ["method", "converged"]
    raw_id_fields = ["job"]


@admin.register(GoldExposure)
class GoldExposureAdmin(admin.ModelAdmin):
    list_display = ["item", "job", "shown", "answered", "correct", "retired_at"]
    list_filter = ["retired_at"]
    raw_id_fields = ["item", "job"]


@admin.register(QualityDecision)
class QualityDecisionAdmin(admin.ModelAdmin):
    list_display = ["worker", "job", "action", "reason", "created_at"]
    list_filter = ["action", "reason"]
    search_fields = ["worker__user__username"]
    raw_id_fields = ["worker", "job"]
