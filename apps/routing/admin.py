from django.contrib import admin

from apps.routing.models import ItemScore, ModelVersion, PrelabelExposure


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "job",
        "number",
        "kind",
        "is_active",
        "n_train",
        "n_heldout",
        "temperature",
        "threshold",
        "target_accuracy",
        "created_at",
    ]
    list_filter = ["kind", "is_active"]
    search_fields = ["job__name"]
    raw_id_fields = ["job", "parent"]
    # The weights are bytes: never render them in a form.
    exclude = ["weights"]
    readonly_fields = ["card", "decision", "data_cutoff", "seconds", "created_at"]


@admin.register(ItemScore)
class ItemScoreAdmin(admin.ModelAdmin):
    list_display = [
        "item",
        "job",
        "model_version",
        "predicted",
        "confidence",
        "audit",
        "updated_at",
    ]
    list_filter = ["audit"]
    search_fields = ["item__external_id"]
    raw_id_fields = ["item", "job", "model_version"]


@admin.register(PrelabelExposure)
class PrelabelExposureAdmin(admin.ModelAdmin):
    list_display = ["assignment", "job", "item", "prelabel", "source", "created_at"]
    list_filter = ["source"]
    raw_id_fields = ["assignment", "job", "item"]
