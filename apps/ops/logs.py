"""Log formatting: JSON lines (production default) or plain text, each with the request id and
job id of the context it was written in. Wired by `LOGGING` in phonos/settings/, which
Celery workers use too (phonos/celery.py)."""

import logging
from typing import Any

from pythonjsonlogger.json import JsonFormatter

from apps.common.request_context import log_context_get


class LogContextFilter(logging.Filter):
    """Copies the context (request_id, job_id) onto every record the handler emits."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = log_context_get()
        record.request_id = context.get("request_id", "")
        for key, value in context.items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


class PhonosJsonFormatter(JsonFormatter):
    """One JSON object a line: time, level, logger, message, then the context and any `extra`."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            **kwargs,
        )

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        return {key: value for key, value in log_data.items() if value not in ("", None)}
