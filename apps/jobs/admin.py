from django.contrib import admin, messages

from apps.common.errors import ApplicationError
from apps.jobs import services
from apps.jobs.models import Item, Job


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "name",
        "organization",
        "status",
        "feature_dim",
        "created_at",
        "launched_at",
    ]
    list_filter = ["status", "organization"]
    search_fields = ["name", "organization__name"]
    readonly_fields = ["created_at", "updated_at", "launched_at", "completed_at"]
    actions = ["launch", "pause", "cancel"]

    def _transition(self, request, queryset, action, verb: str) -> None:
        done = 0
        for job in queryset:
            try:
                action(job=job)
                done += 1
            except ApplicationError as exc:
                self.message_user(request, f"{job}: {exc.message}", messages.WARNING)
        self.message_user(request, f"{verb} {done} job(s).")

    @admin.action(description="Launch / resume selected jobs")
    def launch(self, request, queryset) -> None:
        self._transition(request, queryset, services.job_launch, "Launched")

    @admin.action(description="Pause selected jobs")
    def pause(self, request, queryset) -> None:
        self._transition(request, queryset, services.job_pause, "Paused")

    @admin.action(description="Cancel selected jobs")
    def cancel(self, request, queryset) -> None:
        self._transition(request, queryset, services.job_cancel, "Cancelled")


@admin.register(Item)
class ItemAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "external_id",
        "job",
        "state",
        "priority",
        "n_labels",
        "labels_needed",
        "label",
        "confidence",
        "source",
    ]
    list_filter = ["state", "source", "job"]
    search_fields = ["external_id"]
    list_select_related = ["job"]
    raw_id_fields = ["job"]
    exclude = ["features"]
    readonly_fields = ["n_labels", "n_leases", "created_at", "updated_at", "settled_at"]
    show_full_result_count = False
