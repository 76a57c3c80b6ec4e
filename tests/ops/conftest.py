from tests.webhooks.conftest import loopback_allowed, receiver  # noqa: F401  (shared fixtures)
