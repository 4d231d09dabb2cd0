"""Errors of the Vast backend; all are ``BackendError``s, so ``except BackendError`` still works.

Each message says what to do next. No message ever contains an API key:
``api.VastAPI`` scrubs every key it knows from server texts before quoting them.
"""
from __future__ import annotations

from ...errors import BackendError


class VastAPIError(BackendError):
    """The Vast API answered with an error or could not be reached; ``status`` is the HTTP status."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class VastAuthError(VastAPIError):
    """401/403: the API key was rejected."""


class VastNotFoundError(VastAPIError):
    """404: the deployment, endpoint or workergroup does not exist (any more)."""


class VastRejectedError(VastAPIError):
    """400/422 (and other 4xx): Vast refused the request as sent."""


class VastRateLimitedError(VastAPIError):
    """429 on every attempt."""


class VastUnavailableError(VastAPIError):
    """5xx, timeouts or transport errors on every attempt."""


class VastUploadError(VastAPIError):
    """The bundle upload to the presigned URL failed."""
