from typing import Any

from django.core.management.base import BaseCommand, CommandError

from apps.accounts.models import Account
from apps.billing.selectors import ledger_mismatches


class Command(BaseCommand):
    help = "Check every account's cached balance against the sum of its ledger entries."

    def handle(self, *args: Any, **options: Any) -> None:
        mismatches = ledger_mismatches()
        for mismatch in mismatches:
            self.stderr.write(
                f"account {mismatch.account_id}: balance {mismatch.balance} != "
                f"ledger sum {mismatch.ledger_sum}"
            )
        if mismatches:
            raise CommandError(f"{len(mismatches)} account(s) do not reconcile")
        self.stdout.write(f"OK: {Account.objects.count()} account(s) reconcile with the ledger")
