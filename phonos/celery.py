import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "phonos.settings")

app = Celery("phonos", include=["workers.tasks"])
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
