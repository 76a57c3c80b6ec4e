from django.contrib import admin

from apps.webhooks.models import Webhook, WebhookAttempt, WebhookDelivery


@admin.register(Webhook)
class WebhookAdmin(admin.ModelAdmin[Webhook]):
    list_display = ("id", "account", "url", "secret_hint", "failing_since", "disabled_at")
    list_filter = ("disabled_at",)
    search_fields = ("id", "url", "account__username")
    # The encrypted secrets stay out of the admin altogether.
    exclude = ("secret_encrypted", "previous_secret_encrypted")
    readonly_fields = [
        field.name
        for field in Webhook._meta.fields
        if field.name not in {"secret_encrypted", "previous_secret_encrypted"}
    ]


class WebhookAttemptInline(admin.TabularInline[WebhookAttempt, WebhookDelivery]):
    model = WebhookAttempt
    extra = 0
    can_delete = False
    readonly_fields = [field.name for field in WebhookAttempt._meta.fields]


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin[WebhookDelivery]):
    list_display = ("id", "account", "webhook", "url", "event", "status", "attempt_count")
    list_filter = ("status", "event")
    search_fields = ("id", "webhook__id", "job_id", "account__username")
    readonly_fields = [field.name for field in WebhookDelivery._meta.fields]
    inlines = [WebhookAttemptInline]
