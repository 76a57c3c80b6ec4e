from django.contrib import admin

from apps.billing.models import LedgerEntry


@admin.register(LedgerEntry)
class LedgerEntryAdmin(admin.ModelAdmin):
    list_display = ("id", "account", "kind", "amount", "balance_after", "job_id", "created_at")
    list_filter = ("kind",)
    search_fields = ("account__username", "reference", "job_id")

    # The ledger is insert-only, also for staff: corrections are new adjustment entries.
    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def has_add_permission(self, request) -> bool:
        return False
