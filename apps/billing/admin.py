from django.contrib import admin
from django.http import HttpRequest

from apps.billing.models import CheckoutSession, LedgerEntry, StripeEvent


@admin.register(LedgerEntry)
class LedgerEntryAdmin(admin.ModelAdmin[LedgerEntry]):
    list_display = ("id", "account", "kind", "amount", "balance_after", "job_id", "created_at")
    list_filter = ("kind",)
    search_fields = ("account__username", "reference", "job_id")

    # The ledger is insert-only, also for staff: corrections are new adjustment entries.
    def has_change_permission(self, request: HttpRequest, obj: LedgerEntry | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: LedgerEntry | None = None) -> bool:
        return False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(CheckoutSession)
class CheckoutSessionAdmin(admin.ModelAdmin[CheckoutSession]):
    list_display = ("stripe_session_id", "account", "pack_id", "credits", "status", "created_at")
    list_filter = ("status", "pack_id")
    search_fields = ("account__username", "stripe_session_id")
    readonly_fields = [field.name for field in CheckoutSession._meta.fields]


@admin.register(StripeEvent)
class StripeEventAdmin(admin.ModelAdmin[StripeEvent]):
    list_display = ("id", "type", "outcome", "processed_at")
    list_filter = ("type", "outcome")
    search_fields = ("id",)
    readonly_fields = ("id", "type", "outcome", "processed_at")
