import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "phonos.settings")

app = Celery("phonos", include=["workers.tasks"])
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@app.on_after_configure.connect
def tune_embedded_broker(sender: Celery, **_) -> None:
    if (sender.conf.broker_url or "").startswith("sqla+"):
        # The embedded default's SQLite broker polls. The class attribute is the knob that works
        # (a transport option crashes); its 1 s default would add a second to every job.
        from kombu.transport.sqlalchemy import Transport

        Transport.polling_interval = 0.1
