"""The connection health check (phonos.postgresql): no round trip for a healthy idle connection,
and a connection the server closed fails it (tests/api/test_hot_path.py: a gunicorn whose
connections the database dropped answers the next requests, no 500)."""

import time

import pytest
from django.db import connection, connections

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_healthy_idle_connection_is_checked_without_a_query():
    connection.ensure_connection()
    raw = connection.connection

    def no_query(*args, **kwargs):
        raise AssertionError("the health check sent a query")

    original = raw.cursor
    raw.cursor = no_query
    try:
        assert connection.is_usable()
    finally:
        raw.cursor = original


def test_a_connection_the_server_closed_fails_the_check():
    victim = connections.create_connection("default")
    try:
        victim.ensure_connection()
        backend_pid = victim.connection.info.backend_pid
        assert victim.is_usable()
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [backend_pid])
        deadline = time.monotonic() + 5
        while victim.is_usable() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not victim.is_usable()
    finally:
        victim.close()
