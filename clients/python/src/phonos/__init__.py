"""The Phonos Python client.

import phonos
client = phonos.Client()                      # PHONOS_API_KEY, PHONOS_BASE_URL
job = client.predict("esmfold", "MGSSHHHHHHSSGLVPRGSHM", wait=True)
job.download("structure.pdb")
"""

from phonos import webhooks
from phonos._async import AsyncClient
from phonos._client import Client
from phonos.errors import (
    AuthenticationError,
    ConflictError,
    ConnectionError,
    InsufficientCreditsError,
    InvalidRequestError,
    JobFailedError,
    ModelUnavailableError,
    NotFoundError,
    PayloadTooLargeError,
    PhonosError,
    RateLimitError,
    ServerError,
    ServiceUnavailableError,
    WaitTimeout,
    WebhookVerificationError,
)
from phonos.models import Account, BatchResult, Delivery, Job, Model, Usage, Webhook

__all__ = [
    "Account",
    "AsyncClient",
    "AuthenticationError",
    "BatchResult",
    "Client",
    "ConflictError",
    "ConnectionError",
    "Delivery",
    "InsufficientCreditsError",
    "InvalidRequestError",
    "Job",
    "JobFailedError",
    "Model",
    "ModelUnavailableError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PhonosError",
    "RateLimitError",
    "ServerError",
    "ServiceUnavailableError",
    "Usage",
    "WaitTimeout",
    "Webhook",
    "WebhookVerificationError",
    "webhooks",
]
