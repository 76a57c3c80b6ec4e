from typing import Any

from django.core.management.base import CommandError, CommandParser

from apps.accounts.management.actions import ActionCommand
from apps.accounts.selectors import account_get, account_get_by_verified_email
from apps.accounts.services import api_key_create
from apps.billing.services import account_open, credits_grant


class Command(ActionCommand):
    help = "Create accounts and grant them credits. Prints JSON."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True)
        create = actions.add_parser("create", help="Create an account with a first API key")
        create.add_argument("--email", required=True)
        create.add_argument("--username", help="Defaults to the email address")
        create.add_argument("--credits", type=int, default=0)
        create.add_argument("--key-name", default="default")
        grant = actions.add_parser("grant", help="Add credits to an account (a ledger grant)")
        target = grant.add_mutually_exclusive_group(required=True)
        target.add_argument("--account", type=int, dest="account_id", help="The account's id")
        target.add_argument(
            "--email", help="Only an address one account has verified; otherwise use --account"
        )
        grant.add_argument("--credits", type=int, required=True)
        grant.add_argument("--reason", default="Operator grant")

    def _create(
        self, *, email: str, username: str | None, credits: int, key_name: str, **_: Any
    ) -> dict[str, Any]:
        if credits < 0:
            raise CommandError("--credits must not be negative")
        # The operator vouches for the address they type, so it counts as verified.
        account = account_open(
            username=username or email, email=email, credits=credits, email_verified=True
        )
        created = api_key_create(account=account, name=key_name)
        return {
            "account_id": account.id,
            "username": account.username,
            "email": account.email,
            "credits": account.credit_balance,
            "api_key": created.raw_key,
            "api_key_prefix": created.api_key.prefix,
        }

    def _grant(
        self, *, account_id: int | None, email: str | None, credits: int, reason: str, **_: Any
    ) -> dict[str, Any]:
        if account_id is not None:
            account = account_get(account_id=account_id)
            if account is None:
                raise CommandError(f"No account with id {account_id}")
        else:
            # An unverified address proves nothing: anyone can sign up with any address.
            assert email is not None  # the group is required: no --account means --email
            account = account_get_by_verified_email(email=email)
            if account is None:
                raise CommandError(
                    f"No account has verified {email!r}; grant by --account ID instead"
                )
        entry = credits_grant(account_id=account.id, amount=credits, description=reason)
        return {"account_id": account.id, "granted": credits, "balance": entry.balance_after}
