from typing import Any

from django.core.management.base import CommandError, CommandParser

from apps.accounts.management.actions import ActionCommand
from apps.accounts.models import ApiKey
from apps.accounts.selectors import account_get
from apps.accounts.services import api_key_create, api_key_revoke


class Command(ActionCommand):
    help = "Create or revoke API keys. Prints JSON; a new key is shown only here, once."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True)
        create = actions.add_parser("create")
        create.add_argument("--account", type=int, required=True, dest="account_id")
        create.add_argument("--name", default="")
        create.add_argument("--rate-limit", type=int, dest="rate_limit")
        revoke = actions.add_parser("revoke")
        revoke.add_argument("--prefix", required=True, help="The key's display prefix (pk_...)")

    def _create(
        self, *, account_id: int, name: str, rate_limit: int | None, **_: Any
    ) -> dict[str, Any]:
        account = account_get(account_id=account_id)
        if account is None:
            raise CommandError(f"No account with id {account_id}")
        created = api_key_create(account=account, name=name, rate_limit_per_minute=rate_limit)
        return {
            "account_id": account.id,
            "api_key": created.raw_key,
            "api_key_prefix": created.api_key.prefix,
            "rate_limit_per_minute": created.api_key.rate_limit_per_minute,
        }

    def _revoke(self, *, prefix: str, **_: Any) -> dict[str, Any]:
        keys = list(ApiKey.objects.filter(prefix=prefix, revoked_at__isnull=True))
        if len(keys) != 1:
            raise CommandError(f"{len(keys)} active keys have the prefix {prefix!r}; need one")
        api_key = api_key_revoke(account=keys[0].account, key_id=keys[0].id)
        assert api_key.revoked_at is not None  # the service has just set it
        return {"api_key_prefix": api_key.prefix, "revoked_at": api_key.revoked_at.isoformat()}
