"""Per-request webhooks: the account's signing secret, and deliveries that go to a job's
`webhook_url` instead of an account webhook. Existing deliveries take their webhook's account."""

import django.db.models.deletion
from django.db import migrations, models


def delivery_accounts_fill(apps, schema_editor) -> None:
    WebhookDelivery = apps.get_model("webhooks", "WebhookDelivery")
    Webhook = apps.get_model("webhooks", "Webhook")
    WebhookDelivery.objects.filter(account__isnull=True).update(
        account_id=models.Subquery(
            Webhook.objects.filter(id=models.OuterRef("webhook_id")).values("account_id")[:1]
        )
    )


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0002_account_email_verification_and_key_rate_limit"),
        ("webhooks", "0002_webhookdelivery_request_id"),
    ]

    operations = [
        migrations.CreateModel(
            name="AccountWebhookSecret",
            fields=[
                (
                    "account",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        primary_key=True,
                        related_name="webhook_secret",
                        serialize=False,
                        to="accounts.account",
                    ),
                ),
                ("secret_encrypted", models.TextField()),
                ("secret_hint", models.CharField(max_length=16)),
                ("previous_secret_encrypted", models.TextField(blank=True)),
                ("previous_secret_expires_at", models.DateTimeField(blank=True, null=True)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("updated_at", models.DateTimeField(auto_now=True)),
            ],
        ),
        migrations.AddField(
            model_name="webhookdelivery",
            name="account",
            field=models.ForeignKey(
                null=True,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="webhook_deliveries",
                to="accounts.account",
            ),
        ),
        migrations.RunPython(delivery_accounts_fill, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="webhookdelivery",
            name="account",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.CASCADE,
                related_name="webhook_deliveries",
                to="accounts.account",
            ),
        ),
        migrations.AddField(
            model_name="webhookdelivery",
            name="job_id",
            field=models.UUIDField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="webhookdelivery",
            name="url",
            field=models.CharField(blank=True, default="", max_length=2048),
        ),
        migrations.AlterField(
            model_name="webhookdelivery",
            name="webhook",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="deliveries",
                to="webhooks.webhook",
            ),
        ),
        migrations.AddIndex(
            model_name="webhookdelivery",
            index=models.Index(
                fields=["account", "job_id", "-created_at"], name="webhooks_we_account_b9caee_idx"
            ),
        ),
        migrations.AddConstraint(
            model_name="webhookdelivery",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    models.Q(("url", ""), ("webhook__isnull", False)),
                    models.Q(("webhook__isnull", True), models.Q(("url", ""), _negated=True)),
                    _connector="OR",
                ),
                name="webhook_delivery_one_destination",
            ),
        ),
    ]
