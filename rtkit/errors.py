"""One exception tree for everything rtkit raises.

Callers catch at whatever depth suits them (``RtkitError`` for "anything went wrong",
``RateLimitedError`` to back off). Every class carries the stable ``code`` of the guide's
error format (``{error, message, code, requestId, retryAfter}``), so an exception and the
HTTP error the broker returns for it always agree.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "AudioUnavailableError",
    "AuthenticationError",
    "CacheUnavailableError",
    "ConfigurationError",
    "InvalidRequestError",
    "MicrophoneDeniedError",
    "MicrophoneUnavailableError",
    "NetworkLostError",
    "QuotaExceededError",
    "RateLimitedError",
    "RealtimeAPIError",
    "RequestTimeoutError",
    "RtkitError",
    "SpeakerUnavailableError",
    "TokenExpiredError",
    "UpstreamError",
    "WebRTCUnavailableError",
    "error_for_code",
    "retry_wait",
]


class RtkitError(Exception):
    """Base of every error rtkit raises on purpose.

    ``message`` is written for a workshop participant; ``hint`` says what to do next.
    """

    code: ClassVar[str] = "rtkit_error"
    #: The guide's ``error`` field: a short CamelCase name for the family of failure.
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


def retry_wait(error: BaseException | None, guess: float) -> float:
    """How long to wait before trying again after ``error``: exactly the server's ``Retry-After`` when it said
    one (never less: asking sooner is refused again; never more: a cap on our own guesses is not a reason to
    wait longer than asked), else ``guess``, the caller's own backoff. The one rule for every retry in rtkit."""
    if isinstance(error, RateLimitedError) and error.retry_after is not None:
        return error.retry_after
    return guess


class UpstreamError(RtkitError):
    """The Realtime API (or the emulator) failed or could not be reached; retrying may help."""

    code = "upstream_unavailable"
    error = "UpstreamUnavailable"

    def __init__(self, message: str, *, status: int | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.status = status


class CacheUnavailableError(UpstreamError):
    """The broker's shared cache (Redis) did not answer in time, so no key is served: try again shortly.
    Raised rather than falling back to an in-process cache, which would break single flight across
    processes and multiply the global rate limit by the number of brokers."""

    code = "cache_unavailable"
    error = "CacheUnavailable"


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


class MicrophoneUnavailableError(AudioUnavailableError):
    """No microphone can be opened here: PortAudio is missing, there is no input device, or it is busy.

    Feeding a ``SpeechSource`` or ``WavFileSource`` instead keeps a demo going on a machine without one.
    """

    code = "microphone_unavailable"
    error = "MicrophoneUnavailable"


class MicrophoneDeniedError(MicrophoneUnavailableError):
    """A microphone exists but this process may not record from it (OS privacy setting, ``audio`` group)."""

    code = "microphone_denied"
    error = "MicrophoneDenied"


class SpeakerUnavailableError(AudioUnavailableError):
    """No speaker can be opened here: PortAudio is missing, there is no output device, or it is busy."""

    code = "speaker_unavailable"
    error = "SpeakerUnavailable"


class WebRTCUnavailableError(RtkitError):
    """A WebRTC call could not be set up here (aiortc missing, ICE failed or timed out).

    ``transport="auto"`` falls back to the WebSocket transport on this error.
    """

    code = "webrtc_unavailable"
    error = "WebRTCUnavailable"


class NetworkLostError(RtkitError):
    """A live connection dropped (peer gone, network down, server hung up)."""

    code = "network_lost"
    error = "NetworkLost"


class RealtimeAPIError(RtkitError):
    """An ``error`` event (or a failed ``response.done``) from the Realtime API, with its own fields."""

    code = "realtime_error"
    error = "RealtimeError"

    def __init__(
        self,
        message: str,
        *,
        api_code: str | None = None,
        api_type: str | None = None,
        param: str | None = None,
        event_id: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.api_code = api_code
        self.api_type = api_type
        self.param = param
        self.event_id = event_id


#: Codes the broker and the browser page use for failures rtkit already names under its own code.
_ALIASES: dict[str, type[RtkitError]] = {
    "upstream_rate_limited": RateLimitedError,
    "missing_token": AuthenticationError,
    "invalid_token": AuthenticationError,
    "origin_not_allowed": AuthenticationError,
    "upstream_unreachable": UpstreamError,
}
_BY_CODE: dict[str, type[RtkitError]] = {
    cls.code: cls
    for cls in (
        ConfigurationError,
        InvalidRequestError,
        AuthenticationError,
        TokenExpiredError,
        RateLimitedError,
        UpstreamError,
        CacheUnavailableError,
        QuotaExceededError,
        RequestTimeoutError,
        AudioUnavailableError,
        MicrophoneUnavailableError,
        MicrophoneDeniedError,
        SpeakerUnavailableError,
        WebRTCUnavailableError,
        NetworkLostError,
    )
}


def error_for_code(
    code: str | None,
    message: str,
    *,
    status: int | None = None,
    retry_after: float | None = None,
    hint: str | None = None,
) -> RtkitError:
    """The one mapping from an error ``code`` in the guide's format (the broker's answers, the browser page's
    reports) to rtkit's tree. A code nobody knows falls back on the status: a server failure (5xx, or none
    given) is an ``UpstreamError``, anything else the caller's ``InvalidRequestError``."""
    cls = _BY_CODE.get(code or "") or _ALIASES.get(code or "")
    if cls is None:
        cls = UpstreamError if status is None or status >= 500 else InvalidRequestError
    if issubclass(cls, RateLimitedError):
        return cls(message, retry_after=retry_after, hint=hint)
    if issubclass(cls, UpstreamError):
        return cls(message, status=status, hint=hint)
    return cls(message, hint=hint)
