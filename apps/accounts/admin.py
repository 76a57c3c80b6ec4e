from django.contrib import admin
from django.contrib.auth.admin import UserAdmin

from apps.accounts.models import Account, ApiKey, User


@admin.register(Account)
class AccountAdmin(admin.ModelAdmin[Account]):
    list_display = (
        "id",
        "username",
        "email",
        "email_verified_at",
        "credit_balance",
        "max_key_rate_limit",
        "created_at",
    )
    search_fields = ("username", "email")
    # The balance moves only through ledger entries (see apps.billing.services); verification and
    # the trial grant only through the signed link. max_key_rate_limit is the operator's to set.
    readonly_fields = (
        "credit_balance",
        "created_at",
        "email_verified_at",
        "trial_credits_granted_at",
    )


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin[ApiKey]):
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
