"""The client's IP address: the one helper every throttle and log line uses.

Behind N trusted reverse proxies, each appends the address it received the request from to
X-Forwarded-For, so the Nth entry from the right is the address the outermost trusted proxy saw.
Everything left of it was written by the client and may be forged; with no trusted proxies the
header is ignored entirely and the connection's address (REMOTE_ADDR) is used.
"""

import ipaddress

from django.conf import settings
from django.http import HttpRequest


def client_ip(request: HttpRequest) -> str:
    remote_addr: str = request.META.get("REMOTE_ADDR", "")
    trusted: int = settings.PHONOS_TRUSTED_PROXY_COUNT
    if not trusted:
        return remote_addr
    forwarded = [entry.strip() for entry in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
    forwarded = [entry for entry in forwarded if entry]
    if len(forwarded) < trusted:
        # Fewer hops than configured: the request did not come through every proxy.
        return remote_addr
    candidate = forwarded[-trusted]
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        return remote_addr
