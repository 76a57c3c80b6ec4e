import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.ops.retention import retention_prune


class Command(BaseCommand):
    help = (
        "Delete rows past their retention (idempotency records, job events of finished jobs, "
        "finished webhook deliveries, usage records), in batches. Prints what was deleted as "
        "JSON. The `retention-prune` beat task does the same every hour."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--batch-size", type=int, default=None, help="Rows per DELETE statement"
        )

    def handle(self, *args: Any, batch_size: int | None, **options: Any) -> None:
        if batch_size is not None and batch_size < 1:
            raise CommandError("--batch-size must be at least 1")
        self.stdout.write(json.dumps(retention_prune(batch_size=batch_size).as_dict()))
