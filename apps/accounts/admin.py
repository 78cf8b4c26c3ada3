from django.contrib import admin

from apps.accounts.models import ApiToken, Membership, Organization, VendorContract


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin):
    list_display = ["name", "kind", "created_at"]
    list_filter = ["kind"]
    search_fields = ["name"]
    inlines = [MembershipInline]


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "organization", "role", "created_at"]
    list_filter = ["role", "organization__kind"]
    search_fields = ["user__username", "organization__name"]
    autocomplete_fields = ["user", "organization"]


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["prefix", "user", "name", "created_at", "last_used_at", "revoked_at"]
    list_filter = ["revoked_at"]
    search_fields = ["user__username", "prefix", "name"]
    readonly_fields = ["prefix", "digest", "created_at", "last_used_at"]


@admin.register(VendorContract)
class VendorContractAdmin(admin.ModelAdmin):
    """Which vendor serves which client: the vendor's ops and QC see the client's jobs while
    the contract is active."""

    list_display = ["vendor", "client", "active", "created_at", "updated_at"]
    list_filter = ["active", "vendor"]
    list_editable = ["active"]
    search_fields = ["client__name", "vendor__name", "note"]
    autocomplete_fields = ["client", "vendor"]
    readonly_fields = ["created_at", "updated_at"]
