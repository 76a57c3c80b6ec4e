"""Included under /v1/ by phonos/urls.py."""

from django.urls import include, path

from apps.webhooks.apis import (
    AccountSecretApi,
    JobWebhookDeliveryListApi,
    JobWebhookDeliveryRetryApi,
    WebhookDeliveryListApi,
    WebhookDeliveryRetryApi,
    WebhookDetailApi,
    WebhookListApi,
    WebhookSecretRotateApi,
    WebhookTestApi,
)

# Under webhooks/<webhook_id>/.
webhook = [
    path("test", WebhookTestApi.as_view(), name="webhook-test"),
    path("rotate-secret", WebhookSecretRotateApi.as_view(), name="webhook-rotate-secret"),
    path("deliveries", WebhookDeliveryListApi.as_view(), name="webhook-delivery-list"),
    path(
        "deliveries/<str:delivery_id>/retry",
        WebhookDeliveryRetryApi.as_view(),
        name="webhook-delivery-retry",
    ),
]

urlpatterns = [
    path("webhooks", WebhookListApi.as_view(), name="webhook-list"),
    # Before webhooks/<webhook_id>, which would take "account-secret" for an id.
    path("webhooks/account-secret", AccountSecretApi.as_view(), name="webhook-account-secret"),
    path("webhooks/<str:webhook_id>", WebhookDetailApi.as_view(), name="webhook-detail"),
    path("webhooks/<str:webhook_id>/", include(webhook)),
    path(
        "jobs/<str:job_id>/webhook-deliveries",
        JobWebhookDeliveryListApi.as_view(),
        name="job-webhook-delivery-list",
    ),
    path(
        "jobs/<str:job_id>/webhook-deliveries/<str:delivery_id>/retry",
        JobWebhookDeliveryRetryApi.as_view(),
        name="job-webhook-delivery-retry",
    ),
]
