"""One exception tree for everything rtkit raises.

Callers catch at whatever depth suits them (``RtkitError`` for "anything went wrong",
``RateLimitedError`` to back off). Every class carries the stable ``code`` of the seed's
error format (``{error, message, code, requestId, retryAfter}``), so an exception and the
HTTP error the broker returns for it always agree.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "AudioUnavailableError",
    "AuthenticationError",
    "ConfigurationError",
    "InvalidRequestError",
    "QuotaExceededError",
    "RateLimitedError",
    "RequestTimeoutError",
    "RtkitError",
    "TokenExpiredError",
    "UpstreamError",
]


class RtkitError(Exception):
    """Base of every error rtkit raises on purpose.

    ``message`` is written for a workshop participant; ``hint`` says what to do next.
    """

    code: ClassVar[str] = "rtkit_error"
    #: The seed's ``error`` field: a short CamelCase name for the family of failure.
    error: ClassVar[str] = "Error"

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class ConfigurationError(RtkitError):
    """A setting is missing or out of range; nothing was sent anywhere."""

    code = "invalid_configuration"
    error = "InvalidConfiguration"


class InvalidRequestError(RtkitError):
    """The request was refused as malformed; retrying it unchanged will fail again."""

    code = "invalid_request"
    error = "InvalidRequest"


class AuthenticationError(RtkitError):
    """A key was refused (wrong, revoked or foreign)."""

    code = "invalid_api_key"
    error = "Unauthorized"


class TokenExpiredError(AuthenticationError):
    """An ephemeral key is past its ``expires_at``: mint a fresh one."""

    code = "token_expired"
    error = "TokenExpired"


class RateLimitedError(RtkitError):
    """Too many requests; ``retry_after`` (seconds) says when to try again, if known."""

    code = "rate_limited"
    error = "RateLimited"

    def __init__(self, message: str, *, retry_after: float | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.retry_after = retry_after


class UpstreamError(RtkitError):
    """The Realtime API (or the emulator) failed or could not be reached; retrying may help."""

    code = "upstream_unavailable"
    error = "UpstreamUnavailable"

    def __init__(self, message: str, *, status: int | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.status = status


class QuotaExceededError(RateLimitedError):
    """The account's quota is used up: waiting will not help, so this is never retried."""

    code = "insufficient_quota"
    error = "QuotaExceeded"


class RequestTimeoutError(UpstreamError):
    """The upstream did not answer in time."""

    code = "upstream_timeout"
    error = "UpstreamTimeout"


class AudioUnavailableError(RtkitError):
    """An audio tool or device rtkit needs is not there (PortAudio, espeak-ng, a microphone)."""

    code = "audio_unavailable"
    error = "AudioUnavailable"
