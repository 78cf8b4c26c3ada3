"""Admin for webhook endpoints and deliveries (read mostly: clients manage them over the API)."""

from django.contrib import admin

from apps.webhooks.models import WebhookDelivery, WebhookEndpoint


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    list_display = ("id", "organization", "url", "active", "created_at")
    list_filter = ("active",)
    search_fields = ("url", "organization__name")
    raw_id_fields = ("organization", "created_by")
    exclude = ("secret",)


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "endpoint",
        "event",
        "status",
        "attempts",
        "last_response_code",
        "next_attempt_at",
        "created_at",
    )
    list_filter = ("status", "event")
    raw_id_fields = ("endpoint", "replay_of")
    list_select_related = ("endpoint",)
