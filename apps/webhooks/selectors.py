import uuid

from django.db.models import QuerySet

from apps.accounts.models import Account
from apps.common.exceptions import NotFound
from apps.webhooks.models import AccountWebhookSecret, Webhook, WebhookDelivery


def _uuid_or_none(value: uuid.UUID | str) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


def webhook_list(*, account: Account) -> QuerySet[Webhook]:
    return Webhook.objects.filter(account=account).order_by("created_at", "id")


def webhook_get(*, account: Account, webhook_id: uuid.UUID | str) -> Webhook:
    """A webhook of this account; another tenant's answers exactly like a missing one."""
    webhook_uuid = _uuid_or_none(webhook_id)
    webhook = (
        Webhook.objects.filter(account=account, id=webhook_uuid).first() if webhook_uuid else None
    )
    if webhook is None:
        raise NotFound(f"Webhook {webhook_id} not found")
    return webhook


def webhook_delivery_list(*, webhook: Webhook) -> QuerySet[WebhookDelivery]:
    return (
        WebhookDelivery.objects.filter(webhook=webhook)
        .prefetch_related("attempts")
        .order_by("-created_at", "-id")
    )


def webhook_delivery_get(*, webhook: Webhook, delivery_id: uuid.UUID | str) -> WebhookDelivery:
    delivery_uuid = _uuid_or_none(delivery_id)
    delivery = (
        WebhookDelivery.objects.filter(webhook=webhook, id=delivery_uuid).first()
        if delivery_uuid
        else None
    )
    if delivery is None:
        raise NotFound(f"Delivery {delivery_id} not found")
    return delivery


def request_webhook_delivery_list(
    *, account: Account, job_id: uuid.UUID | str
) -> QuerySet[WebhookDelivery]:
    """The deliveries to a job's own `webhook_url`, newest first. The caller checked the job
    belongs to the account; the account filter keeps it so if it did not."""
    return (
        WebhookDelivery.objects.filter(
            account=account, job_id=_uuid_or_none(job_id), webhook__isnull=True
        )
        .prefetch_related("attempts")
        .order_by("-created_at", "-id")
    )


def request_webhook_delivery_get(
    *, account: Account, job_id: uuid.UUID | str, delivery_id: uuid.UUID | str
) -> WebhookDelivery:
    delivery_uuid = _uuid_or_none(delivery_id)
    delivery = (
        request_webhook_delivery_list(account=account, job_id=job_id)
        .filter(id=delivery_uuid)
        .first()
        if delivery_uuid
        else None
    )
    if delivery is None:
        raise NotFound(f"Delivery {delivery_id} not found")
    return delivery


def account_webhook_secret_get(*, account: Account) -> AccountWebhookSecret:
    account_secret = AccountWebhookSecret.objects.filter(account=account).first()
    if account_secret is None:
        raise NotFound(
            "This account has no webhook secret yet; POST /v1/webhooks/account-secret makes one"
        )
    return account_secret
