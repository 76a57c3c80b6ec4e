import json
from dataclasses import asdict
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.accounts.models import Account
from apps.ops.account_deletion import account_delete


class Command(BaseCommand):
    help = (
        "Delete an account's keys, users, jobs and stored outputs, webhooks and usage; its "
        "ledger stays on an anonymised tombstone (docs/ledger.md). Prints JSON. Running it "
        "again on a deleted account retries the deletion of stored outputs."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--account", type=int, dest="account_id", required=True)
        parser.add_argument(
            "--yes", action="store_true", help="Confirm: the deletion cannot be undone"
        )

    def handle(self, *args: Any, account_id: int, yes: bool, **options: Any) -> None:
        account = Account.objects.filter(id=account_id).first()
        if account is None:
            raise CommandError(f"Account {account_id} does not exist")
        if not yes:
            raise CommandError(f"Deleting account {account_id} ({account.username}) needs --yes")
        self.stdout.write(json.dumps(asdict(account_delete(account=account)), indent=2))
