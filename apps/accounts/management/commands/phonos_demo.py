import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from apps.accounts.models import Account
from apps.accounts.services import api_key_create
from apps.billing.services import account_open

DEMO_USERNAME = "demo"


class Command(BaseCommand):
    help = "Make sure the demo account exists and print a fresh API key for it (JSON)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--credits", type=int, default=1000)

    def handle(self, *args: Any, credits: int, **options: Any) -> None:
        account = Account.objects.filter(username=DEMO_USERNAME).first()
        if account is None:
            account = account_open(
                username=DEMO_USERNAME, email="demo@phonos.local", credits=credits
            )
        created = api_key_create(account=account, name="demo (scripts/run)")
        account.refresh_from_db()
        self.stdout.write(
            json.dumps(
                {
                    "account_id": account.id,
                    "credits": account.credit_balance,
                    "api_key": created.raw_key,
                }
            )
        )
