"""django-axes with one limit per username and a higher one per client IP.

Axes counts failures per lockout parameter (here username, then IP address) and compares the
largest count with a single AXES_FAILURE_LIMIT. Phonos wants more room per address than per
username: many people share an office NAT, while a username belongs to one person, and password
spraying (one password over many usernames) must still stop at the address's limit. The IP count
is therefore shifted so that it reaches AXES_FAILURE_LIMIT exactly when it reaches
PHONOS_LOGIN_MAX_FAILURES_PER_IP.
"""

from typing import Any

from axes.handlers.database import AxesDatabaseHandler
from axes.models import AccessAttempt
from django.conf import settings
from django.db.models import Sum
from django.http import HttpRequest

from apps.accounts.models import User


class PerParameterLimitHandler(AxesDatabaseHandler):
    def get_failures(self, request: HttpRequest, credentials: dict[str, Any] | None = None) -> int:
        by_username, by_ip = (
            attempts.aggregate(total=Sum("failures_since_start"))["total"] or 0
            for attempts in self.get_user_attempts(request, credentials)
        )
        headroom = settings.PHONOS_LOGIN_MAX_FAILURES_PER_IP - settings.PHONOS_LOGIN_MAX_FAILURES
        return max(by_username, by_ip - headroom)

    def user_logged_in(
        self, sender: object, request: HttpRequest, user: User, **kwargs: Any
    ) -> None:
        super().user_logged_in(sender, request, user, **kwargs)
        # The right password ends the username's lockout count, never the address's.
        AccessAttempt.objects.filter(username=user.get_username()).delete()
