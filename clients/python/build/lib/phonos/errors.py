"""Exceptions for every error the API answers, each carrying the body's `error` and `message`."""

from __future__ import annotations

from typing import Any


class PhonosError(Exception):
    """An error answer from the API (or a transport failure, with `status` 0)."""

    def __init__(
        self,
        message: str,
        *,
        error: str = "",
        status: int = 0,
        body: dict[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{status} {error}: {message}" if status else message)
        self.error = error
        self.message = message
        self.status = status
        self.body = body or {}
        self.retry_after = retry_after


class InvalidRequestError(PhonosError):
    """400: the request was refused as it stands; `message` says why."""


class AuthenticationError(PhonosError):
    """401: the API key is missing, unknown or revoked."""


class InsufficientCreditsError(PhonosError):
    """402: the account's balance does not cover the job."""


class NotFoundError(PhonosError):
    """404: no such object in this account."""


class ConflictError(PhonosError):
    """409: the object is not in a state that allows this (or an Idempotency-Key was reused)."""


class PayloadTooLargeError(PhonosError):
    """413: the request body is over the server's limit."""


class RateLimitError(PhonosError):
    """429: `reason` is `rate_limit`, `active_jobs` or `queue_full`."""

    @property
    def reason(self) -> str:
        return str(self.body.get("reason", "rate_limit"))


class ServiceUnavailableError(PhonosError):
    """503: the service cannot take the request now; retry after `retry_after` seconds."""


class ModelUnavailableError(ServiceUnavailableError):
    """503: no worker serves this model right now; nothing was charged."""


class ServerError(PhonosError):
    """5xx other than 503."""


class ConnectionError(PhonosError):  # noqa: A001 - the client's own, carries status 0
    """The request never got an answer (refused, reset or timed out) after every retry."""


class WaitTimeout(PhonosError):
    """`Job.wait(timeout=...)` ran out before the job ended."""


class JobFailedError(PhonosError):
    """Raised by `Job.wait(raise_on_failure=True)` for a failed or cancelled job."""

    def __init__(self, job: Any) -> None:
        super().__init__(
            job.error or f"job {job.job_id} ended {job.status}", error=f"Job {job.status}"
        )
        self.job = job


class WebhookVerificationError(Exception):
    """A webhook request whose signature, timestamp or headers do not check out."""


_BY_STATUS: dict[int, type[PhonosError]] = {
    400: InvalidRequestError,
    401: AuthenticationError,
    402: InsufficientCreditsError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    429: RateLimitError,
    503: ServiceUnavailableError,
}


def error_for(status: int, body: dict[str, Any], retry_after: float | None) -> PhonosError:
    error = str(body.get("error", ""))
    message = str(body.get("message", "")) or error or f"HTTP {status}"
    cls = _BY_STATUS.get(status, ServerError if status >= 500 else PhonosError)
    if status == 503 and error == "Model unavailable":
        cls = ModelUnavailableError
    return cls(message, error=error, status=status, body=body, retry_after=retry_after)
