"""The ASGI application: in production it serves only the event-stream paths
(`/v1/jobs/<id>/events`, `/dashboard/jobs/<id>/events`), routed to it by the reverse proxy of
`scripts/serve`; gunicorn (`phonos.wsgi`) serves everything else. See docs/serving.md."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "phonos.settings")
application = get_asgi_application()
