"""Outbound HTTP to user-supplied URLs: the one way Phonos calls a customer's server.

Every request resolves the host, refuses the URL if any address it resolves to is not a public
one (loopback, private, link-local and cloud metadata, multicast, unspecified, reserved; IPv4,
IPv6 and IPv4-embedded forms), then connects to the address it vetted: there is no second
lookup that a rebinding DNS server could answer differently. The Host header and TLS (SNI and
certificate verification) still use the hostname. Redirects are not followed, no proxy from the
environment is used, each request has a deadline, and the response body read is bounded.

`PHONOS_WEBHOOK_ALLOW_HTTP` and `PHONOS_WEBHOOK_ALLOW_PRIVATE_NETWORKS` loosen this for local
development and tests only (settings refuse them in production).
"""

import http.client
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_URL_LENGTH = 2048
RESPONSE_BODY_LIMIT = 1024
USER_AGENT = "Phonos-Webhooks/1.0"

# Refused even where private networks are allowed: "this network" (Linux takes 0.0.0.0 for the
# local host), and ranges Python 3.11's `is_global` lets through: IETF protocol assignments
# (192.0.0.192 is Oracle Cloud's metadata service) and local-use NAT64.
_ALSO_REFUSED = (
    ipaddress.ip_network("0.0.0.0/8"),
    ipaddress.ip_network("192.0.0.0/24"),
    ipaddress.ip_network("64:ff9b:1::/48"),
)
# Well-known NAT64 and 6to4 addresses embed an IPv4 address that a gateway would connect to.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class OutboundError(Exception):
    """The request could not be made, or got no complete answer in time."""


class DestinationRefused(OutboundError):
    """The URL, or an address it resolves to, is not one Phonos may call."""


@dataclass(frozen=True)
class ParsedUrl:
    scheme: str
    hostname: str  # ASCII (IDNA), lower case, IPv6 without brackets
    port: int
    target: str  # path and query, sent in the request line

    @property
    def host_header(self) -> str:
        host = f"[{self.hostname}]" if ":" in self.hostname else self.hostname
        default_port = 443 if self.scheme == "https" else 80
        return host if self.port == default_port else f"{host}:{self.port}"


@dataclass(frozen=True)
class Destination:
    url: ParsedUrl
    address: IPAddress  # vetted; the connection goes here and nowhere else


@dataclass(frozen=True)
class OutboundResponse:
    status_code: int
    body: bytes  # at most RESPONSE_BODY_LIMIT bytes
    latency_ms: int


def url_parse(*, url: str) -> ParsedUrl:
    """Checks that need no DNS: scheme, credentials, host, port, characters."""
    if len(url) > MAX_URL_LENGTH:
        raise DestinationRefused(f"The URL is longer than {MAX_URL_LENGTH} characters")
    if any(ord(char) <= 0x20 or ord(char) == 0x7F for char in url):
        raise DestinationRefused("The URL contains spaces or control characters")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    allowed = ("https", "http") if settings.PHONOS_WEBHOOK_ALLOW_HTTP else ("https",)
    if scheme not in allowed:
        raise DestinationRefused(
            "The URL must start with " + " or ".join(f"{s}://" for s in allowed)
        )
    if "@" in parts.netloc:
        raise DestinationRefused("The URL must not contain credentials")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        raise DestinationRefused("The URL's port is not valid") from None
    hostname = (parts.hostname or "").rstrip(".")
    if not hostname:
        raise DestinationRefused("The URL has no host")
    try:
        hostname = hostname.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise DestinationRefused("The URL's host name is not valid") from None
    target = parts.path or "/"
    if not target.isascii() or not parts.query.isascii():
        raise DestinationRefused("The URL's path must be ASCII (percent-encode other characters)")
    if parts.query:
        target += "?" + parts.query
    return ParsedUrl(scheme=scheme, hostname=hostname, port=port, target=target)


def hostname_resolve(*, hostname: str, port: int) -> list[IPAddress]:
    """Every address the host resolves to. The only DNS lookup this module makes."""
    try:
        infos = socket.getaddrinfo(hostname, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        raise OutboundError(f"The host {hostname} could not be resolved ({error})") from None
    addresses: list[IPAddress] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


def address_refusal(*, address: IPAddress) -> str | None:
    """Why Phonos must not connect to this address, or None if it is a public one."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            reason = address_refusal(address=embedded)
            return f"{reason} (embedded in IPv6)" if reason else None
    allow_private = settings.PHONOS_WEBHOOK_ALLOW_PRIVATE_NETWORKS
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_link_local:
        return "a link-local address (cloud metadata lives there)"
    if address.is_multicast:
        return "a multicast address"
    if address.is_loopback:
        return None if allow_private else "a loopback address"
    if address.is_reserved or any(address in network for network in _ALSO_REFUSED):
        return "a reserved address"
    if isinstance(address, ipaddress.IPv6Address) and address.is_site_local:
        return "a site-local address"
    if address.is_private or not address.is_global:
        return None if allow_private else "a private address"
    return None


def _is_address_literal(hostname: str) -> bool:
    try:
        ipaddress.ip_address(hostname)
    except ValueError:
        return False
    return True


def destination_vet(*, url: str) -> Destination:
    """Parse, resolve and check: the address to connect to, or DestinationRefused."""
    parsed = url_parse(url=url)
    addresses = hostname_resolve(hostname=parsed.hostname, port=parsed.port)
    if not addresses:
        raise OutboundError(f"The host {parsed.hostname} has no addresses")
    for address in addresses:
        reason = address_refusal(address=address)
        if reason is None:
            continue
        # A literal address may be named; what a host name resolves to stays unsaid, so the
        # message reveals nothing about names that only resolve inside our network.
        if _is_address_literal(parsed.hostname):
            raise DestinationRefused(f"{parsed.hostname} is {reason}")
        raise DestinationRefused(f"The host {parsed.hostname} resolves to {reason}")
    return Destination(url=parsed, address=addresses[0])


def _tls_context() -> ssl.SSLContext:
    # The system's trust store, certificate and hostname verification on, TLS 1.2 at least.
    context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class _Watchdog:
    """Shuts the connection down at the deadline. Socket timeouts bound each read; a receiver
    trickling bytes could otherwise stretch one exchange without end."""

    def __init__(self, deadline: float) -> None:
        self.fired = False
        self._sock: socket.socket | None = None
        self._timer = threading.Timer(max(deadline - time.monotonic(), 0), self._fire)
        self._timer.daemon = True

    def watch(self, sock: socket.socket) -> None:
        self._sock = sock

    def _fire(self) -> None:
        self.fired = True
        if self._sock is not None:
            try:
                # The plain socket's shutdown, also for a TLS socket: it unblocks any read.
                socket.socket.shutdown(self._sock, socket.SHUT_RDWR)
            except OSError:
                pass

    def __enter__(self) -> "_Watchdog":
        self._timer.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._timer.cancel()


def _remaining(deadline: float) -> float:
    return max(deadline - time.monotonic(), 0.01)


def _describe(error: OSError | http.client.HTTPException) -> str:
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"TLS error: {error.verify_message}"
    if isinstance(error, ssl.SSLError):
        return f"TLS error: {error.reason or error}"
    if isinstance(error, TimeoutError):
        return "Timed out waiting for the response"
    if isinstance(error, http.client.RemoteDisconnected):
        return "The receiver closed the connection without answering"
    if isinstance(error, http.client.HTTPException):
        return f"The receiver's answer is not valid HTTP ({type(error).__name__})"
    return f"Connection error: {error.strerror or error}"


def outbound_post(
    *, url: str, body: bytes, headers: Mapping[str, str], timeout: float
) -> OutboundResponse:
    """POST to a user-supplied URL within `timeout` seconds; any HTTP status is returned, a
    redirect is never followed."""
    deadline = time.monotonic() + timeout
    destination = destination_vet(url=url)
    started = time.monotonic()
    with _Watchdog(deadline) as watchdog:
        try:
            sock = socket.create_connection(
                (str(destination.address), destination.url.port), timeout=_remaining(deadline)
            )
        except TimeoutError:
            raise OutboundError("Timed out connecting") from None
        except OSError as error:
            raise OutboundError(f"Could not connect: {error.strerror or error}") from None
        watchdog.watch(sock)
        try:
            if destination.url.scheme == "https":
                # SNI and certificate verification for the hostname, on the vetted address.
                sock = _tls_context().wrap_socket(
                    sock, server_hostname=destination.url.hostname, do_handshake_on_connect=False
                )
                watchdog.watch(sock)
                sock.do_handshake()
            connection = http.client.HTTPConnection(
                str(destination.address), destination.url.port, timeout=_remaining(deadline)
            )
            connection.sock = sock
            connection.request(
                "POST",
                destination.url.target,
                body=body,
                headers={
                    **headers,
                    "Host": destination.url.host_header,
                    "User-Agent": USER_AGENT,
                    "Accept-Encoding": "identity",
                    "Connection": "close",
                },
            )
            response = connection.getresponse()
        except (OSError, http.client.HTTPException) as error:
            sock.close()
            if watchdog.fired:
                raise OutboundError(f"Timed out after {timeout:g} s") from None
            raise OutboundError(_describe(error)) from None
        latency_ms = int((time.monotonic() - started) * 1000)
        # The status is the answer; the body is kept only as far as it comes in time.
        content = b""
        try:
            while len(content) < RESPONSE_BODY_LIMIT:
                chunk = response.read1(RESPONSE_BODY_LIMIT - len(content))
                if not chunk:
                    break
                content += chunk
        except (OSError, http.client.HTTPException):
            pass
        finally:
            sock.close()
    return OutboundResponse(status_code=response.status, body=content, latency_ms=latency_ms)
