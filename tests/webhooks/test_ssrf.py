"""Webhook URLs never reach Phonos' own network: refused when created, and again before every
attempt, where a host name may have come to resolve somewhere else."""

import datetime
import ipaddress
import socket
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from apps.jobs.services import job_complete, job_start
from apps.webhooks import outbound
from apps.webhooks.models import Webhook, WebhookAttempt
from apps.webhooks.services import webhook_delivery_attempt, webhook_test_send
from apps.webhooks.signing import secret_encrypt, secret_generate
from tests.api.test_auth_and_errors import assert_error
from tests.webhooks.conftest import finished_deliveries, job_submit, webhook_create

pytestmark = pytest.mark.django_db(transaction=True)

PUBLIC_ADDRESS = "93.184.215.14"
NON_PUBLIC_URLS = [
    "http://127.0.0.1/hooks",
    "https://[::1]/hooks",
    "https://169.254.169.254/latest/meta-data/",
    "https://10.0.0.1",
    "https://[::ffff:127.0.0.1]/hooks",
    "https://localhost/hooks",
    "https://0x7f.1/hooks",
]


@pytest.fixture
def strict(settings) -> None:
    """Production's address rules; plain http allowed so that the address is what is refused."""
    settings.PHONOS_WEBHOOK_ALLOW_HTTP = True
    settings.PHONOS_WEBHOOK_ALLOW_PRIVATE_NETWORKS = False


@pytest.fixture
def dns(monkeypatch) -> dict[str, list[str]]:
    """Names this test makes up resolve as the test says; the rest as the system does."""
    answers: dict[str, list[str]] = {}
    system_resolve = outbound.hostname_resolve

    def resolve(*, hostname: str, port: int) -> list:
        if hostname in answers:
            return [ipaddress.ip_address(address) for address in answers[hostname]]
        return system_resolve(hostname=hostname, port=port)

    monkeypatch.setattr(outbound, "hostname_resolve", resolve)
    return answers


@pytest.fixture
def connections(monkeypatch) -> list[tuple]:
    """Every connection opened to port 80 or 443, where these tests' webhook URLs point; none is
    actually made. (The test's own API calls go to the live server's port.)"""
    opened: list[tuple] = []
    create = socket.create_connection

    def create_connection(address, *args, **kwargs):
        if address[1] not in (80, 443):
            return create(address, *args, **kwargs)
        opened.append(address)
        raise ConnectionRefusedError("connections are recorded, not made, in this test")

    monkeypatch.setattr(socket, "create_connection", create_connection)
    return opened


@pytest.mark.usefixtures("strict")
@pytest.mark.parametrize("url", NON_PUBLIC_URLS)
def test_creation_refuses_urls_that_reach_non_public_addresses(alice, url):
    body = assert_error(alice.post("/v1/webhooks", json={"url": url}), 400)
    assert body["message"].startswith("url: ")
    assert "address" in body["message"]
    assert not Webhook.objects.exists()


@pytest.mark.usefixtures("strict")
def test_creation_refuses_a_name_that_resolves_to_a_private_address(alice, dns):
    dns["hooks.customer.example"] = [PUBLIC_ADDRESS, "10.20.30.40"]
    body = assert_error(
        alice.post("/v1/webhooks", json={"url": "https://hooks.customer.example/phonos"}), 400
    )
    # What the name resolves to inside our network is not told.
    assert body["message"] == "url: The host hooks.customer.example resolves to a private address"
    assert "10.20.30.40" not in body["message"]


def test_creation_refuses_plainly_bad_urls(alice, settings, dns):
    settings.PHONOS_WEBHOOK_ALLOW_HTTP = False
    dns["hooks.customer.example"] = [PUBLIC_ADDRESS]
    for url, problem in (
        ("http://hooks.customer.example/phonos", "must start with https://"),
        ("ftp://hooks.customer.example/phonos", "must start with https://"),
        ("https://user:pass@hooks.customer.example/", "credentials"),
        ("https:///phonos", "no host"),
        ("https://hooks.customer.example:99999/", "port"),
        ("https://hooks.customer.example/a b", "spaces"),
        ("https://nowhere.invalid/phonos", "could not be resolved"),
        ("https://" + "a" * 2050 + ".example/", "2048"),
    ):
        body = assert_error(alice.post("/v1/webhooks", json={"url": url}), 400)
        assert problem in body["message"], (url, body)
    assert webhook_create(alice, "https://hooks.customer.example/phonos")["url"] == (
        "https://hooks.customer.example/phonos"
    )


def test_link_local_is_refused_even_where_private_networks_are_allowed(alice, settings):
    settings.PHONOS_WEBHOOK_ALLOW_HTTP = True
    settings.PHONOS_WEBHOOK_ALLOW_PRIVATE_NETWORKS = True
    for url in ("http://169.254.169.254/latest/", "http://[fe80::1]/", "http://0.0.0.0/"):
        assert_error(alice.post("/v1/webhooks", json={"url": url}), 400)
    webhook_create(alice, "http://10.0.0.1/hooks")


def _stored_webhook(account, url: str) -> Webhook:
    """A webhook whose URL was accepted once (say before a rule changed): delivery checks
    again."""
    return Webhook.objects.create(
        account=account,
        url=url,
        events=["job.completed"],
        secret_encrypted=secret_encrypt(secret=secret_generate()),
        secret_hint="whsec_test",
    )


@pytest.mark.usefixtures("strict")
@pytest.mark.parametrize("url", NON_PUBLIC_URLS)
def test_delivery_refuses_stored_urls_that_reach_non_public_addresses(alice, url, connections):
    webhook = _stored_webhook(alice.account, url)
    delivery = webhook_test_send(account=alice.account, webhook_id=webhook.id)
    webhook_delivery_attempt(delivery_id=delivery.id)

    attempt = WebhookAttempt.objects.get(delivery=delivery)
    assert attempt.error.startswith("Refused, nothing was sent: ")
    assert attempt.status_code is None and attempt.succeeded is False
    assert connections == []


@pytest.mark.usefixtures("strict")
@pytest.mark.parametrize(
    "rebound",
    [["127.0.0.1"], ["::1"], ["169.254.169.254"], ["10.0.0.1"], ["::ffff:127.0.0.1"]]
    + [[PUBLIC_ADDRESS, "192.168.1.1"], ["fd00:ec2::254"], ["100.100.100.200"]],
)
def test_delivery_refuses_a_name_that_resolves_elsewhere_since_creation(
    alice, dns, connections, rebound
):
    dns["hooks.customer.example"] = [PUBLIC_ADDRESS]
    created = webhook_create(alice, "https://hooks.customer.example/phonos")
    dns["hooks.customer.example"] = rebound
    delivery = webhook_test_send(account=alice.account, webhook_id=created["webhook_id"])
    webhook_delivery_attempt(delivery_id=delivery.id)

    attempt = WebhookAttempt.objects.get(delivery=delivery)
    assert attempt.error.startswith(
        "Refused, nothing was sent: The host hooks.customer.example resolves to a"
    ), attempt.error
    assert connections == []
    assert attempt.next_retry_at is not None  # the name may be fixed; it is tried again later


@pytest.mark.usefixtures("strict")
def test_a_real_worker_refuses_loopback_and_sends_nothing(alice, receiver, hook_worker, settings):
    settings.PHONOS_WEBHOOK_RETRY_SCHEDULE = [0.2]
    hook_worker(PHONOS_WEBHOOK_ALLOW_PRIVATE_NETWORKS="false", PHONOS_WEBHOOK_RETRY_SCHEDULE="0.2")
    settings.PHONOS_WEBHOOK_ALLOW_PRIVATE_NETWORKS = True
    webhook = webhook_create(alice, receiver.url)
    settings.PHONOS_WEBHOOK_ALLOW_PRIVATE_NETWORKS = False
    job_id = job_submit(alice)
    job_start(job_id=job_id)
    job_complete(job_id=job_id, output_file="out.pdb", summary={}, metadata={})

    [delivery] = finished_deliveries(alice, webhook["webhook_id"])
    assert delivery["status"] == "failed"
    assert [attempt["error"] for attempt in delivery["attempts"]] == [
        "Refused, nothing was sent: 127.0.0.1 is a loopback address"
    ] * 2
    assert receiver.requests == []


# --- Pinning: the vetted address is the one connected to, TLS still checks the name -----------


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(subject: str, issuer_key, issuer: x509.Certificate | None, key, *, ca: bool):
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer.subject if issuer else _name(subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    else:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(subject)]), critical=False
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


class TlsReceiver:
    """An HTTPS server on loopback whose certificate names `certified_name`; it records the
    SNI name and Host header of each request."""

    def __init__(self, tmp_path: Path, ca_key, ca_cert, certified_name: str) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _certificate(certified_name, ca_key, ca_cert, key, ca=False)
        cert_path, key_path = tmp_path / f"{certified_name}.pem", tmp_path / f"{certified_name}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        self.server_names: list[str | None] = []
        self.hosts: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.hosts.append(self.headers["Host"])
                self.send_response(204)
                self.end_headers()

            def log_message(self, format, *args) -> None:
                return

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_path, key_path)
        context.sni_callback = lambda sock, name, ctx: receiver.server_names.append(name)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def certificate_authority(tmp_path, monkeypatch) -> Iterator[tuple]:
    """A throwaway CA that this process (and only it) trusts for the test."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _certificate("Phonos test CA", key, None, key, ca=True)
    bundle = tmp_path / "ca.pem"
    bundle.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    yield key, cert


def test_the_vetted_address_is_connected_with_the_hostname_kept_for_host_sni_and_tls(
    settings, dns, tmp_path, certificate_authority, monkeypatch
):
    settings.PHONOS_WEBHOOK_ALLOW_PRIVATE_NETWORKS = True  # the receiver is on loopback
    ca_key, ca_cert = certificate_authority
    good = TlsReceiver(tmp_path, ca_key, ca_cert, "hooks.customer.example")
    impostor = TlsReceiver(tmp_path, ca_key, ca_cert, "other.example")
    lookups: list[str] = []
    resolve = outbound.hostname_resolve

    def counting_resolve(*, hostname: str, port: int) -> list:
        lookups.append(hostname)
        return resolve(hostname=hostname, port=port)

    monkeypatch.setattr(outbound, "hostname_resolve", counting_resolve)
    try:
        dns["hooks.customer.example"] = ["127.0.0.1"]
        response = outbound.outbound_post(
            url=f"https://hooks.customer.example:{good.port}/phonos?x=1",
            body=b"{}",
            headers={"Content-Type": "application/json"},
            timeout=5,
        )
        assert response.status_code == 204
        assert lookups == ["hooks.customer.example"]
        assert good.server_names == ["hooks.customer.example"]
        assert good.hosts == [f"hooks.customer.example:{good.port}"]

        # Same name, but the server there holds another name's certificate: refused by TLS.
        with pytest.raises(outbound.OutboundError, match="TLS error"):
            outbound.outbound_post(
                url=f"https://hooks.customer.example:{impostor.port}/phonos",
                body=b"{}",
                headers={},
                timeout=5,
            )
        assert impostor.hosts == []
    finally:
        good.stop()
        impostor.stop()
