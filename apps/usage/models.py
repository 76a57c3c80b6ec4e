from django.db import models


class UsageCounter(models.Model):
    """One key's requests to one endpoint (and model) on one UTC day, with their credits and
    summed latency. Requests add to it in Redis and a beat task folds those counters in
    (apps.usage.services.usage_fold); without Redis each request adds to it directly."""

    account = models.ForeignKey("accounts.Account", on_delete=models.CASCADE)
    # The key's id, not a foreign key: a counter outlives nothing it counts, and folding
    # needs no row lock on the key.
    api_key_id = models.BigIntegerField()
    date = models.DateField()
    endpoint = models.CharField(max_length=120)
    model = models.CharField(max_length=32, blank=True)
    requests = models.BigIntegerField(default=0)
    credits = models.BigIntegerField(default=0)
    latency_ms_sum = models.FloatField(default=0.0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["account", "date", "api_key_id", "endpoint", "model"],
                name="usage_counter_unique",
            )
        ]


class UsageFold(models.Model):
    """A claimed Redis hash that has been added to the counters: written in the same
    transaction, so a fold that crashed after committing does not add the hash twice."""

    claim = models.CharField(max_length=80, unique=True)
    folded_at = models.DateTimeField(auto_now_add=True)
