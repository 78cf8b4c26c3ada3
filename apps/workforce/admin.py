"""Admin for ops: workers (with ban / suspend / unban actions), pools and the ledger."""

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from apps.pipeline.crowd import worker_ban, worker_suspend, worker_unban
from apps.workforce.models import LedgerEntry, Pool, Worker


def _apply(modeladmin, request, queryset: QuerySet[Worker], service, verb: str) -> None:
    # Through the services, so live leases are returned exactly as the API does it.
    for worker in queryset:
        service(worker=worker)
    modeladmin.message_user(request, f"{verb} {queryset.count()} worker(s).", messages.SUCCESS)


@admin.action(description="Ban selected workers (returns their leases)")
def ban_workers(modeladmin, request: HttpRequest, queryset: QuerySet[Worker]) -> None:
    _apply(modeladmin, request, queryset, worker_ban, "Banned")


@admin.action(description="Suspend selected workers (returns their leases)")
def suspend_workers(modeladmin, request: HttpRequest, queryset: QuerySet[Worker]) -> None:
    _apply(modeladmin, request, queryset, worker_suspend, "Suspended")


@admin.action(description="Unban / reactivate selected workers")
def unban_workers(modeladmin, request: HttpRequest, queryset: QuerySet[Worker]) -> None:
    _apply(modeladmin, request, queryset, worker_unban, "Reactivated")


@admin.register(Worker)
class WorkerAdmin(admin.ModelAdmin):
    list_display = ["id", "user", "organization", "tier", "status", "pay_rate", "created_at"]
    list_filter = ["tier", "status", "organization", "pools"]
    search_fields = ["user__username", "user__email", "status_reason"]
    list_select_related = ["user", "organization"]
    autocomplete_fields = ["user"]
    readonly_fields = ["created_at", "updated_at"]
    actions = [ban_workers, suspend_workers, unban_workers]


@admin.register(Pool)
class PoolAdmin(admin.ModelAdmin):
    list_display = ["id", "name", "organization", "created_at"]
    list_filter = ["organization"]
    search_fields = ["name", "description"]
    filter_horizontal = ["members"]
    raw_id_fields = ["jobs"]


@admin.register(LedgerEntry)
class LedgerEntryAdmin(admin.ModelAdmin):
    list_display = ["id", "worker", "job", "kind", "amount", "idempotency_key", "created_at"]
    list_filter = ["kind"]
    search_fields = ["worker__user__username", "idempotency_key", "note"]
    list_select_related = ["worker__user", "job"]
    raw_id_fields = ["worker", "job", "label"]
    readonly_fields = ["created_at"]
    date_hierarchy = "created_at"
