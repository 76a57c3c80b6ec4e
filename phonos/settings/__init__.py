"""Phonos settings, read once from the environment (see docs/settings.md for every variable),
split by concern. Each part sees the parts before it (`from <previous part> import *`): the
order is core, database, queues, api, models, webhooks, billing, dashboard, operations.

With nothing set, Phonos runs on an embedded default that needs no external server: SQLite and
local files under `var/`. `PHONOS_ENV=production` refuses to start without PostgreSQL and Redis.
"""

from phonos.settings.operations import *  # noqa: F403
