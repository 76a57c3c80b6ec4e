"""The one exception family of Phonos services.

Services raise these; `apps.common.exception_handler` turns every one of them (and every DRF or
unexpected error) into the public error envelope `{"error": ..., "message": ...}`.
"""


class ApplicationError(Exception):
    status_code = 400
    error = "Bad Request"

    def __init__(self, message: str, *, error: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if error is not None:
            self.error = error


class InvalidInput(ApplicationError):
    status_code = 400
    error = "Bad Request"


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
        super().__init__(message, error=error)
        # A stable word a client can branch on: rate_limit, active_jobs, queue_full, ...
        self.reason = reason
        self.retry_after = retry_after


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

    def __init__(
        self, message: str, *, error: str | None = None, retry_after: int | None = None
    ) -> None:
        super().__init__(message, error=error)
        self.retry_after = retry_after
