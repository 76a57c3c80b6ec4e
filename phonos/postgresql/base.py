"""Django's PostgreSQL backend with a health check that costs no round trip when it can.

`CONN_HEALTH_CHECKS` makes Django check a persistent connection before a request first uses it,
with a `SELECT 1`: on the polled reads that was one of three round trips per request. An idle
connection has nothing to read, so before sending anything this backend asks the socket (a poll
with no wait): a server that closed the connection (a restart, `pg_terminate_backend`, an idle
timeout) has sent its error and end-of-file, and the socket is readable. Only then, or when the
connection is not idle and healthy by libpq's own account, is the `SELECT 1` sent, and a failed
one closes the connection, as Django does. A peer that vanished without a word (a host off the
network) is found out by neither check before the query itself: the `SELECT 1` would wait on it
just the same.
"""

import select
from typing import Any

from django.db.backends.postgresql.base import DatabaseWrapper as PostgresWrapper
from psycopg import pq


class DatabaseWrapper(PostgresWrapper):
    def is_usable(self) -> bool:
        connection: Any = self.connection
        if connection is None:
            return False
        try:
            healthy = (
                not connection.closed
                and connection.pgconn.status == pq.ConnStatus.OK
                and connection.info.transaction_status == pq.TransactionStatus.IDLE
                and not select.select([connection.fileno()], [], [], 0)[0]
            )
        except (OSError, ValueError):
            healthy = False
        return healthy or bool(super().is_usable())
