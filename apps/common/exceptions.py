"""The one exception family of Phonos services.

Services raise these; `apps.common.exception_handler` turns every one of them (and every DRF or
unexpected error) into the public error envelope `{"error": ..., "message": ...}`.
"""


class ApplicationError(Exception):
    """A 400 unless a subclass says otherwise. `retry_after` (seconds) becomes the answer's
    Retry-After header: when the same request may succeed (429, 503)."""

    status_code = 400
    error = "Bad Request"

    def __init__(
        self, message: str, *, error: str | None = None, retry_after: int | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        if error is not None:
            self.error = error
        self.retry_after = retry_after


class InvalidInput(ApplicationError):
    """The request is malformed or breaks a rule of its model (400)."""


class NotFound(ApplicationError):
    status_code = 404
    error = "Not Found"


class InsufficientCredits(ApplicationError):
    status_code = 402
    error = "Insufficient credits"


class Conflict(ApplicationError):
    status_code = 409
    error = "Conflict"


class TooManyRequests(ApplicationError):
    status_code = 429
    error = "Too Many Requests"

    def __init__(
        self,
        message: str,
        *,
        reason: str,
        error: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message, error=error, retry_after=retry_after)
        # A stable word a client can branch on: rate_limit, active_jobs, queue_full, ...
        self.reason = reason


class BadGateway(ApplicationError):
    status_code = 502
    error = "Bad Gateway"


class GatewayTimeout(ApplicationError):
    status_code = 504
    error = "Upstream timeout"


class ServiceUnavailable(ApplicationError):
    """Nothing can serve the request right now (no live worker for the model); retry later."""

    status_code = 503
    error = "Service Unavailable"
