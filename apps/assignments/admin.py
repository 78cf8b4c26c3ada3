"""Admin for assignments and labels: read-mostly views for ops to inspect the engine."""

from django.contrib import admin

from apps.assignments.models import Assignment, Label


@admin.register(Assignment)
class AssignmentAdmin(admin.ModelAdmin):
    list_display = ["id", "job", "item", "worker", "state", "is_gold", "leased_at", "expires_at"]
    list_filter = ["state", "is_gold"]
    search_fields = ["worker__user__username", "item__external_id"]
    list_select_related = ["job", "item", "worker__user"]
    raw_id_fields = ["item", "job", "worker"]
    date_hierarchy = "leased_at"


@admin.register(Label)
class LabelAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "job",
        "item",
        "worker",
        "value",
        "tier",
        "is_gold",
        "is_correct",
        "created_at",
    ]
    list_filter = ["tier", "is_gold", "is_correct"]
    search_fields = ["worker__user__username", "item__external_id", "value"]
    list_select_related = ["job", "item", "worker__user"]
    raw_id_fields = ["assignment", "item", "job", "worker"]
    readonly_fields = ["created_at"]
    date_hierarchy = "created_at"
