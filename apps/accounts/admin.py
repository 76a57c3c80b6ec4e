from django.contrib import admin
from django.contrib.auth.admin import UserAdmin

from apps.accounts.models import Account, ApiKey, User


@admin.register(Account)
class AccountAdmin(admin.ModelAdmin):
    list_display = ("id", "username", "email", "credit_balance", "created_at")
    search_fields = ("username", "email")
    # The balance moves only through ledger entries (see apps.billing.services).
    readonly_fields = ("credit_balance", "created_at")


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = (
        "prefix",
        "name",
        "account",
        "rate_limit_per_minute",
        "last_used_at",
        "revoked_at",
    )
    list_filter = ("revoked_at",)
    search_fields = ("prefix", "name", "account__username")
    readonly_fields = ("digest", "prefix", "created_at", "last_used_at")


admin.site.register(User, UserAdmin)
