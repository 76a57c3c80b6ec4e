"""A management command made of actions (`phonos_key create|revoke`), each printing JSON."""

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from apps.common.exceptions import ApplicationError


class ActionCommand(BaseCommand):
    """`handle` runs the method `_<action>` with the parsed options and prints what it returns
    as JSON; a service's refusal (an ApplicationError) is the command's error. Subclasses add
    one subparser per action, into `dest="action"`."""

    def handle(self, *args: Any, action: str, **options: Any) -> None:
        try:
            result = getattr(self, f"_{action}")(**options)
        except ApplicationError as error:
            raise CommandError(error.message) from None
        self.stdout.write(json.dumps(result, indent=2))
