"""Admin for reviews, decisions and outcomes (read mostly: decisions go through services)."""

from django.contrib import admin

from apps.reviews.models import Review, ReviewDecision, ReviewOutcome


@admin.register(Review)
class ReviewAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "job",
        "item",
        "reason",
        "status",
        "priority",
        "claimed_by",
        "claim_expires_at",
        "created_at",
        "resolved_at",
    )
    list_filter = ("status", "reason", "created_at")
    search_fields = ("item__external_id", "note", "job__name")
    raw_id_fields = ("job", "item", "opened_by", "claimed_by")
    list_select_related = ("job", "item", "claimed_by")
    date_hierarchy = "created_at"


@admin.register(ReviewDecision)
class ReviewDecisionAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "job",
        "item",
        "label",
        "previous_label",
        "original_source",
        "decided_by",
        "make_gold",
        "is_current",
        "created_at",
    )
    list_filter = ("is_current", "make_gold", "original_source", "created_at")
    search_fields = ("item__external_id", "note", "label", "decided_by__username")
    raw_id_fields = ("review", "item", "job", "decided_by", "supersedes")
    list_select_related = ("job", "item", "decided_by")


@admin.register(ReviewOutcome)
class ReviewOutcomeAdmin(admin.ModelAdmin):
    list_display = ("id", "worker", "job", "item", "value", "final_label", "correct", "is_current")
    list_filter = ("correct", "is_current")
    search_fields = ("worker__user__username", "item__external_id", "note")
    raw_id_fields = ("decision", "label", "worker", "job", "item")
    list_select_related = ("worker__user", "job", "item")
