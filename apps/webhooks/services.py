"""Webhook writes: endpoints, the event outbox, and delivery attempts.

An event is a WebhookDelivery row written in the transaction of the change it announces, and
published to the `light` queue when that transaction commits. The sweeper publishes again any
delivery that is due and unclaimed, so a crash between commit and publish loses nothing. An
attempt claims its delivery by compare-and-set, so a delivery published twice is still sent
once per due time. See docs/webhooks.md.
"""

import json
import logging
import random
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography.fernet import InvalidToken
from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from apps.accounts.models import Account
from apps.common.exceptions import Conflict, InvalidInput
from apps.common.metrics import webhook_delivery_observe
from apps.common.queues import Queue, task_publish
from apps.common.request_context import (
    REQUEST_ID_HEADER,
    log_context_bind,
    log_context_reset,
    request_id_current,
)
from apps.webhooks.models import AccountWebhookSecret, Webhook, WebhookAttempt, WebhookDelivery
from apps.webhooks.outbound import DestinationRefused, OutboundError, destination_vet, outbound_post
from apps.webhooks.selectors import (
    request_webhook_delivery_get,
    webhook_delivery_get,
    webhook_get,
)
from apps.webhooks.signing import (
    secret_decrypt,
    secret_encrypt,
    secret_generate,
    secret_hint,
    signature_headers,
)

logger = logging.getLogger(__name__)

DELIVERY_TASK = "apps.webhooks.tasks.webhook_delivery_attempt"
# Retries further off than this are left to the sweeper, not held as ETA tasks in worker memory
# (which Redis would also hand out again after its visibility timeout).
MAX_ETA = timedelta(minutes=10)
# The sweeper leaves a delivery this long past due to the task already published for it, and
# publishes any one delivery again at most this often.
SWEEP_GRACE = timedelta(seconds=60)
SWEEP_REPUBLISH_AFTER = timedelta(minutes=5)
SWEEP_BATCH = 500
RETRY_JITTER = 0.2
ROTATION_GRACE_MAX_HOURS = 72
TEST_JOB_ID = "00000000-0000-0000-0000-000000000000"
# A per-request webhook hears how its job ended unless it asks for other events.
REQUEST_WEBHOOK_DEFAULT_EVENTS = (
    Webhook.Event.JOB_COMPLETED,
    Webhook.Event.JOB_FAILED,
    Webhook.Event.JOB_CANCELLED,
)


@dataclass(frozen=True)
class WebhookWithSecret:
    """A webhook with its secret in clear: the one time the secret is shown."""

    webhook: Webhook
    secret: str


@dataclass(frozen=True)
class AccountSecretShown:
    """The account's webhook secret in clear, the one time it is shown; `created` when this
    call made the account's first one rather than rotating it."""

    account_secret: AccountWebhookSecret
    secret: str
    created: bool


@dataclass(frozen=True)
class RequestWebhook:
    """A submission's own webhook: where to send its job's events, and which ones."""

    url: str
    events: tuple[str, ...]


@dataclass(frozen=True)
class AttemptOutcome:
    succeeded: bool
    status_code: int | None = None
    latency_ms: int | None = None
    error: str = ""
    response_body: str = ""


# --- Endpoints -----------------------------------------------------------------------------------


def _events_clean(
    events: object,
    *,
    default: tuple[str, ...] = Webhook.DEFAULT_EVENTS,
    field_name: str = "events",
) -> list[str]:
    if events is None:
        return list(default)
    known = list(Webhook.Event.values)
    if not isinstance(events, list) or not events:
        raise InvalidInput(f"{field_name} must be a non-empty list of: {', '.join(known)}")
    unknown = [event for event in events if event not in known]
    if unknown:
        raise InvalidInput(
            f"{field_name}: unknown event {unknown[0]!r}; choose from {', '.join(known)}"
        )
    return list(dict.fromkeys(events))


def webhook_url_check(*, url: str) -> None:
    """Refuse, with 400, a URL that is plainly bad now; deliveries check again every time."""
    try:
        destination_vet(url=url)
    except OutboundError as error:
        raise InvalidInput(f"url: {error}") from None


def request_webhook_clean(*, url: object, events: object) -> RequestWebhook | None:
    """A submission's `webhook_url` and `webhook_events`, checked by the same guard as an
    account webhook's URL: 400 for one it refuses now (each attempt checks it again)."""
    if url is None or url == "":
        if events is not None:
            raise InvalidInput("webhook_events needs webhook_url")
        return None
    if not isinstance(url, str):
        raise InvalidInput("webhook_url must be a string")
    cleaned_events = _events_clean(
        events, default=REQUEST_WEBHOOK_DEFAULT_EVENTS, field_name="webhook_events"
    )
    url = url.strip()
    # Last: resolving the host is the slow check.
    try:
        destination_vet(url=url)
    except OutboundError as error:
        raise InvalidInput(f"webhook_url: {error}") from None
    return RequestWebhook(url=url, events=tuple(cleaned_events))


def webhook_create(
    *, account: Account, url: str, events: list[str] | None = None
) -> WebhookWithSecret:
    events = _events_clean(events)
    url = url.strip()
    # Resolving may take a while: done before the transaction, not while the account is locked.
    webhook_url_check(url=url)
    secret = secret_generate()
    with transaction.atomic():
        # Locking the account makes the count exact under concurrent creations.
        Account.objects.select_for_update().filter(id=account.id).first()
        limit = settings.PHONOS_WEBHOOKS_PER_ACCOUNT
        if Webhook.objects.filter(account=account).count() >= limit:
            raise InvalidInput(
                f"This account already has {limit} webhooks, the most it may have; "
                "delete one before creating another",
                error="Too many webhooks",
            )
        webhook = Webhook.objects.create(
            account=account,
            url=url,
            events=events,
            secret_encrypted=secret_encrypt(secret=secret),
            secret_hint=secret_hint(secret=secret),
        )
    return WebhookWithSecret(webhook=webhook, secret=secret)


@transaction.atomic
def webhook_delete(*, account: Account, webhook_id: uuid.UUID | str) -> Webhook:
    webhook = webhook_get(account=account, webhook_id=webhook_id)
    # Lock the webhook before its deliveries, in the order attempts lock them.
    Webhook.objects.select_for_update().filter(id=webhook.id).first()
    Webhook.objects.filter(id=webhook.id).delete()
    return webhook


@transaction.atomic
def webhook_secret_rotate(
    *, account: Account, webhook_id: uuid.UUID | str, previous_valid_hours: int = 24
) -> WebhookWithSecret:
    """A new secret signs from now on; the old one signs too for `previous_valid_hours`
    (0 retires it at once, e.g. when it leaked)."""
    if not 0 <= previous_valid_hours <= ROTATION_GRACE_MAX_HOURS:
        raise InvalidInput(
            f"previous_secret_valid_hours must be between 0 and {ROTATION_GRACE_MAX_HOURS}"
        )
    webhook = webhook_get(account=account, webhook_id=webhook_id)
    webhook = Webhook.objects.select_for_update().get(id=webhook.id)
    secret = secret_generate()
    _secret_replace(
        webhook,
        encrypted=secret_encrypt(secret=secret),
        hint=secret_hint(secret=secret),
        previous_valid_hours=previous_valid_hours,
    )
    return WebhookWithSecret(webhook=webhook, secret=secret)


def _secret_replace(
    holder: Webhook | AccountWebhookSecret,
    *,
    encrypted: str,
    hint: str,
    previous_valid_hours: int,
) -> None:
    """Put a new signing secret on a row locked for update; the replaced one keeps signing next
    to it for `previous_valid_hours` (0 retires it now)."""
    keep_previous = previous_valid_hours > 0
    holder.previous_secret_encrypted = holder.secret_encrypted if keep_previous else ""
    holder.previous_secret_expires_at = (
        timezone.now() + timedelta(hours=previous_valid_hours) if keep_previous else None
    )
    holder.secret_encrypted = encrypted
    holder.secret_hint = hint
    holder.save(
        update_fields=[
            "previous_secret_encrypted",
            "previous_secret_expires_at",
            "secret_encrypted",
            "secret_hint",
            "updated_at",
        ]
    )


def _account_secret_new(*, account_id: int) -> tuple[AccountWebhookSecret, str]:
    secret = secret_generate()
    return (
        AccountWebhookSecret(
            account_id=account_id,
            secret_encrypted=secret_encrypt(secret=secret),
            secret_hint=secret_hint(secret=secret),
        ),
        secret,
    )


def account_webhook_secret_ensure(*, account_id: int) -> AccountWebhookSecret:
    """The account's secret, made on first use: a job's webhook may fire before its owner ever
    asked for the secret (they rotate it to see one)."""
    existing = AccountWebhookSecret.objects.filter(account_id=account_id).first()
    if existing is not None:
        return existing
    candidate, _ = _account_secret_new(account_id=account_id)
    # Two first attempts at once: get_or_create lets one create and the other read it.
    account_secret, _ = AccountWebhookSecret.objects.get_or_create(
        account_id=account_id,
        defaults={
            "secret_encrypted": candidate.secret_encrypted,
            "secret_hint": candidate.secret_hint,
        },
    )
    return account_secret


@transaction.atomic
def account_webhook_secret_rotate(
    *, account: Account, previous_valid_hours: int = 24
) -> AccountSecretShown:
    """Create the account's webhook secret, or replace it; either way show it this once. The
    replaced one keeps signing next to the new one for `previous_valid_hours`."""
    if not 0 <= previous_valid_hours <= ROTATION_GRACE_MAX_HOURS:
        raise InvalidInput(
            f"previous_secret_valid_hours must be between 0 and {ROTATION_GRACE_MAX_HOURS}"
        )
    candidate, secret = _account_secret_new(account_id=account.id)
    # get_or_create settles a race between two first calls: one creates, the other rotates.
    account_secret, created = AccountWebhookSecret.objects.get_or_create(
        account_id=account.id,
        defaults={
            "secret_encrypted": candidate.secret_encrypted,
            "secret_hint": candidate.secret_hint,
        },
    )
    if created:
        return AccountSecretShown(account_secret=account_secret, secret=secret, created=True)
    account_secret = AccountWebhookSecret.objects.select_for_update().get(account_id=account.id)
    _secret_replace(
        account_secret,
        encrypted=candidate.secret_encrypted,
        hint=candidate.secret_hint,
        previous_valid_hours=previous_valid_hours,
    )
    return AccountSecretShown(account_secret=account_secret, secret=secret, created=False)


# --- Events (the outbox) -------------------------------------------------------------------------


def _payload_render(*, event: str, data: dict[str, Any]) -> str:
    timestamp = timezone.now().strftime("%Y-%m-%dT%H:%M:%SZ")
    return json.dumps({"event": event, "timestamp": timestamp, "data": data}, separators=(",", ":"))


def _deliveries_create(
    *,
    account_id: int,
    webhooks: list[Webhook],
    event: str,
    payload: str,
    request_id: str,
    request_webhook_url: str = "",
    job_id: uuid.UUID | str | None = None,
) -> list[uuid.UUID]:
    """Write the outbox rows (one per webhook, and one for the job's own `webhook_url`) and
    publish them once the surrounding transaction commits."""
    now = timezone.now()
    common = {
        "account_id": account_id,
        "event": event,
        "payload": payload,
        "request_id": request_id,
        "max_attempts": len(settings.PHONOS_WEBHOOK_RETRY_SCHEDULE) + 1,
        "next_attempt_at": now,
    }
    rows = [WebhookDelivery(webhook=webhook, **common) for webhook in webhooks]
    if request_webhook_url:
        rows.append(WebhookDelivery(url=request_webhook_url, job_id=job_id, **common))
    deliveries = WebhookDelivery.objects.bulk_create(rows)
    delivery_ids = [delivery.id for delivery in deliveries]

    def publish() -> None:
        for delivery_id in delivery_ids:
            webhook_delivery_enqueue(delivery_id=delivery_id)

    transaction.on_commit(publish)
    return delivery_ids


def webhook_event_emit(
    *,
    account_id: int,
    event: str,
    data: dict[str, Any],
    request_id: str = "",
    job_id: uuid.UUID | str | None = None,
    request_webhook: RequestWebhook | None = None,
) -> None:
    """Announce `event` with `data` (the caller builds it: jobs its job payload) to every enabled
    webhook of the account subscribed to it, and to the job's own webhook if it asked for this
    event, carrying the request id that started it. Call it inside the transaction of the
    change: the deliveries commit or roll back with it."""
    if event not in Webhook.Event.values:
        raise ValueError(f"Unknown webhook event {event!r}")
    webhooks = [
        webhook
        for webhook in Webhook.objects.filter(account_id=account_id, disabled_at__isnull=True)
        if event in webhook.events
    ]
    request_url = (
        request_webhook.url
        if request_webhook is not None and event in request_webhook.events
        else ""
    )
    if webhooks or request_url:
        payload = _payload_render(event=event, data=data)
        _deliveries_create(
            account_id=account_id,
            webhooks=webhooks,
            event=event,
            payload=payload,
            request_id=request_id,
            request_webhook_url=request_url,
            job_id=job_id,
        )


@transaction.atomic
def webhook_test_send(*, account: Account, webhook_id: uuid.UUID | str) -> WebhookDelivery:
    """A `webhook.test` event with sample job data, sent even to a disabled webhook: a success
    enables it again."""
    webhook = webhook_get(account=account, webhook_id=webhook_id)
    payload = _payload_render(
        event=Webhook.TEST_EVENT,
        data={
            "job_id": TEST_JOB_ID,
            "status": "completed",
            "model": "esmfold",
            "download_url": f"/v1/jobs/{TEST_JOB_ID}/download",
        },
    )
    [delivery_id] = _deliveries_create(
        account_id=account.id,
        webhooks=[webhook],
        event=Webhook.TEST_EVENT,
        payload=payload,
        request_id=request_id_current(),
    )
    return WebhookDelivery.objects.get(id=delivery_id)


@transaction.atomic
def webhook_delivery_retry(
    *, account: Account, webhook_id: uuid.UUID | str, delivery_id: uuid.UUID | str
) -> WebhookDelivery:
    webhook = webhook_get(account=account, webhook_id=webhook_id)
    return _delivery_retry(delivery=webhook_delivery_get(webhook=webhook, delivery_id=delivery_id))


@transaction.atomic
def request_webhook_delivery_retry(
    *, account: Account, job_id: uuid.UUID | str, delivery_id: uuid.UUID | str
) -> WebhookDelivery:
    """The same for a delivery to a job's own `webhook_url` (the caller checked the job)."""
    return _delivery_retry(
        delivery=request_webhook_delivery_get(
            account=account, job_id=job_id, delivery_id=delivery_id
        )
    )


def _delivery_retry(*, delivery: WebhookDelivery) -> WebhookDelivery:
    """Attempt a delivery now. A pending one is brought forward and keeps its schedule; a
    finished one (succeeded or failed) gets exactly one more attempt. Same `webhook-id`."""
    now = timezone.now()
    if delivery.locked_until is not None and delivery.locked_until > now:
        raise Conflict(f"Delivery {delivery.id} is being attempted right now; retry it later")
    changes: dict[str, Any] = {"next_attempt_at": now, "updated_at": now}
    if delivery.status != WebhookDelivery.Status.PENDING:
        changes |= {
            "status": WebhookDelivery.Status.PENDING,
            "max_attempts": delivery.attempt_count + 1,
            "finished_at": None,
        }
    changed = (
        WebhookDelivery.objects.filter(
            id=delivery.id, status=delivery.status, attempt_count=delivery.attempt_count
        )
        .filter(Q(locked_until__isnull=True) | Q(locked_until__lte=now))
        .update(**changes)
    )
    if changed != 1:
        raise Conflict(f"Delivery {delivery.id} changed while it was being retried; try again")
    transaction.on_commit(lambda: webhook_delivery_enqueue(delivery_id=delivery.id))
    delivery.refresh_from_db()
    return delivery


def webhook_delivery_enqueue(*, delivery_id: uuid.UUID, eta: datetime | None = None) -> bool:
    """Publish a delivery's task. A broker that is down is logged, not raised: the sweeper
    publishes due deliveries again."""
    return task_publish(
        DELIVERY_TASK,
        args=[str(delivery_id)],
        queue=Queue.LIGHT,
        what=f"webhook delivery {delivery_id}",
        eta=eta,
    )


# --- Attempts ------------------------------------------------------------------------------------


def _claim_lease() -> timedelta:
    # Longer than an attempt can take (resolve, connect, send, read), so a live claim never lapses.
    return timedelta(seconds=3 * settings.PHONOS_WEBHOOK_TIMEOUT_SECONDS + 30)


def _retry_delay(*, attempts_made: int) -> timedelta:
    schedule = settings.PHONOS_WEBHOOK_RETRY_SCHEDULE
    base = schedule[min(attempts_made, len(schedule)) - 1]
    return timedelta(seconds=base * random.uniform(1 - RETRY_JITTER, 1 + RETRY_JITTER))


def _signing_secrets(*, holder: Webhook | AccountWebhookSecret, now: datetime) -> list[str]:
    tokens = [holder.secret_encrypted]
    expires = holder.previous_secret_expires_at
    if holder.previous_secret_encrypted and expires is not None and expires > now:
        tokens.append(holder.previous_secret_encrypted)
    return [secret_decrypt(token=token) for token in tokens]


def _send(*, delivery: WebhookDelivery) -> AttemptOutcome:
    # An account webhook signs with its own secret; a job's `webhook_url` with the account's.
    holder = delivery.webhook or account_webhook_secret_ensure(account_id=delivery.account_id)
    try:
        signing_secrets = _signing_secrets(holder=holder, now=timezone.now())
    except InvalidToken:
        logger.error(
            "Delivery %s: secret does not decrypt with PHONOS_WEBHOOK_SECRET_KEY", delivery.id
        )
        return AttemptOutcome(succeeded=False, error="Phonos could not sign the request")
    headers = signature_headers(
        signing_secrets=signing_secrets,
        message_id=str(delivery.id),
        timestamp=int(time.time()),
        body=delivery.payload,
    )
    headers["Content-Type"] = "application/json"
    if delivery.request_id:
        headers[REQUEST_ID_HEADER] = delivery.request_id
    try:
        response = outbound_post(
            url=delivery.destination_url,
            body=delivery.payload.encode(),
            headers=headers,
            timeout=settings.PHONOS_WEBHOOK_TIMEOUT_SECONDS,
        )
    except DestinationRefused as error:
        return AttemptOutcome(succeeded=False, error=f"Refused, nothing was sent: {error}")
    except OutboundError as error:
        return AttemptOutcome(succeeded=False, error=str(error))
    code = response.status_code
    succeeded = 200 <= code < 300
    if succeeded:
        problem = ""
    elif 300 <= code < 400:
        problem = f"HTTP {code}: redirects are not followed"
    else:
        problem = f"HTTP {code}"
    return AttemptOutcome(
        succeeded=succeeded,
        status_code=code,
        latency_ms=response.latency_ms,
        error=problem,
        response_body=response.body.decode("utf-8", "replace").replace("\x00", ""),
    )


def _webhook_health_record(*, webhook_id: uuid.UUID, succeeded: bool, now: datetime) -> bool:
    """Track how long an endpoint has been failing; disable it past the limit. True if the
    webhook is disabled now."""
    webhooks = Webhook.objects.filter(id=webhook_id)
    if succeeded:
        webhooks.filter(Q(failing_since__isnull=False) | Q(disabled_at__isnull=False)).update(
            failing_since=None, disabled_at=None, disabled_reason="", updated_at=now
        )
        return False
    webhooks.filter(failing_since__isnull=True).update(failing_since=now, updated_at=now)
    hours = settings.PHONOS_WEBHOOK_DISABLE_AFTER_HOURS
    disabled = webhooks.filter(
        disabled_at__isnull=True, failing_since__lte=now - timedelta(hours=hours)
    ).update(
        disabled_at=now,
        disabled_reason=f"Every delivery failed for more than {hours} hours",
        updated_at=now,
    )
    if disabled:
        logger.info("Webhook %s disabled after failing for %s hours", webhook_id, hours)
        WebhookDelivery.objects.filter(
            webhook_id=webhook_id, status=WebhookDelivery.Status.PENDING
        ).filter(Q(locked_until__isnull=True) | Q(locked_until__lte=now)).update(
            status=WebhookDelivery.Status.FAILED,
            next_attempt_at=None,
            finished_at=now,
            updated_at=now,
        )
    return webhooks.filter(disabled_at__isnull=False).exists()


@transaction.atomic
def _attempt_record(
    *,
    delivery: WebhookDelivery,
    lease: datetime,
    attempted_at: datetime,
    outcome: AttemptOutcome,
) -> None:
    # Webhook before delivery: the lock order webhook_delete uses too. A job's own webhook_url
    # has no endpoint whose health is tracked.
    webhook = None
    if delivery.webhook_id is not None:
        webhook = (
            Webhook.objects.select_for_update(no_key=True).filter(id=delivery.webhook_id).first()
        )
    current = WebhookDelivery.objects.select_for_update(no_key=True).filter(id=delivery.id).first()
    if current is None or (delivery.webhook_id is not None and webhook is None):
        return  # deleted while the request was in flight
    now = timezone.now()
    disabled = webhook is not None and _webhook_health_record(
        webhook_id=webhook.id, succeeded=outcome.succeeded, now=now
    )
    next_retry_at = None
    # A claim that outlived its lease has been taken over: its attempt is logged, not acted on.
    if current.locked_until == lease and current.status == WebhookDelivery.Status.PENDING:
        if outcome.succeeded:
            current.status = WebhookDelivery.Status.SUCCEEDED
        elif current.attempt_count < current.max_attempts and not disabled:
            next_retry_at = now + _retry_delay(attempts_made=current.attempt_count)
        else:
            current.status = WebhookDelivery.Status.FAILED
        current.next_attempt_at = next_retry_at
        current.finished_at = now if next_retry_at is None else None
        current.locked_until = None
        current.save(
            update_fields=["status", "next_attempt_at", "finished_at", "locked_until", "updated_at"]
        )
    WebhookAttempt.objects.create(
        delivery=current,
        number=delivery.attempt_count,
        attempted_at=attempted_at,
        succeeded=outcome.succeeded,
        status_code=outcome.status_code,
        latency_ms=outcome.latency_ms,
        error=outcome.error[:500],
        response_body=outcome.response_body,
        next_retry_at=next_retry_at,
    )
    if next_retry_at is not None and next_retry_at - now <= MAX_ETA:
        transaction.on_commit(
            lambda: webhook_delivery_enqueue(delivery_id=current.id, eta=next_retry_at)
        )


def webhook_delivery_attempt(*, delivery_id: uuid.UUID | str) -> None:
    """Make the delivery's due attempt, if it is due and nobody else is making it: safe to run
    any number of times."""
    now = timezone.now()
    lease = now + _claim_lease()
    claimed = (
        WebhookDelivery.objects.filter(
            id=delivery_id, status=WebhookDelivery.Status.PENDING, next_attempt_at__lte=now
        )
        .filter(Q(locked_until__isnull=True) | Q(locked_until__lte=now))
        .update(locked_until=lease, attempt_count=F("attempt_count") + 1, updated_at=now)
    )
    if claimed != 1:
        return
    delivery = WebhookDelivery.objects.select_related("webhook").filter(id=delivery_id).first()
    if delivery is None:
        return
    token = log_context_bind(request_id=delivery.request_id)
    try:
        outcome = _send(delivery=delivery)
        _attempt_record(delivery=delivery, lease=lease, attempted_at=now, outcome=outcome)
        webhook_delivery_observe(succeeded=outcome.succeeded)
        logger.info(
            "Webhook delivery %s attempt %s: %s",
            delivery.id,
            delivery.attempt_count,
            "succeeded" if outcome.succeeded else outcome.error,
            extra={
                "delivery_id": str(delivery.id),
                "webhook_event": delivery.event,
                "attempt": delivery.attempt_count,
                "http_status": outcome.status_code,
                "succeeded": outcome.succeeded,
            },
        )
    finally:
        log_context_reset(token)


# --- Sweeping ------------------------------------------------------------------------------------


def webhook_deliveries_sweep() -> int:
    """Publish again the deliveries that are due and that no task has claimed: lost on a crash
    between commit and publish, lost by the broker, or retries too far off for an ETA task."""
    now = timezone.now()
    due_ids = list(
        WebhookDelivery.objects.filter(
            status=WebhookDelivery.Status.PENDING, next_attempt_at__lte=now - SWEEP_GRACE
        )
        .filter(Q(locked_until__isnull=True) | Q(locked_until__lte=now))
        .filter(Q(swept_at__isnull=True) | Q(swept_at__lte=now - SWEEP_REPUBLISH_AFTER))
        .order_by("next_attempt_at")
        .values_list("id", flat=True)[:SWEEP_BATCH]
    )
    if due_ids:
        WebhookDelivery.objects.filter(id__in=due_ids).update(swept_at=now)
        for delivery_id in due_ids:
            webhook_delivery_enqueue(delivery_id=delivery_id)
    return len(due_ids)


def webhook_deliveries_prune() -> int:
    """Delete finished deliveries past the retention period, a batch at a time."""
    cutoff = timezone.now() - timedelta(days=settings.PHONOS_WEBHOOK_DELIVERY_RETENTION_DAYS)
    old_ids = list(
        WebhookDelivery.objects.filter(
            status__in=[WebhookDelivery.Status.SUCCEEDED, WebhookDelivery.Status.FAILED],
            finished_at__lt=cutoff,
        ).values_list("id", flat=True)[:SWEEP_BATCH]
    )
    if not old_ids:
        return 0
    WebhookDelivery.objects.filter(id__in=old_ids).delete()
    return len(old_ids)
