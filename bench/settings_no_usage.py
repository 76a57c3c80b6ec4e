"""bench.settings without usage recording, to measure what recording costs per request."""

from bench.settings import *  # noqa: F403
from bench.settings import MIDDLEWARE

USAGE_MIDDLEWARE = "apps.usage.middleware.UsageRecordingMiddleware"
if USAGE_MIDDLEWARE not in MIDDLEWARE:
    raise RuntimeError(f"{USAGE_MIDDLEWARE} is no longer in MIDDLEWARE; update this variant")
MIDDLEWARE = [name for name in MIDDLEWARE if name != USAGE_MIDDLEWARE]
