from django.db import models


class UsageRecord(models.Model):
    """One authenticated API request, written before the response leaves."""

    account = models.ForeignKey("accounts.Account", on_delete=models.CASCADE)
    api_key = models.ForeignKey("accounts.ApiKey", on_delete=models.SET_NULL, null=True)
    endpoint = models.CharField(max_length=120)
    method = models.CharField(max_length=10)
    status_code = models.PositiveSmallIntegerField()
    latency_ms = models.FloatField()
    credits = models.IntegerField(default=0)
    model = models.CharField(max_length=32, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["account", "created_at"])]
