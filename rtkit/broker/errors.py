"""The guide's error format, ``{error, message, code, requestId, retryAfter}``, and the broker's table of errors.

``retryAfter`` is in milliseconds (and a ``Retry-After`` header in seconds goes with it).
"""

from __future__ import annotations

import math

from starlette.responses import JSONResponse

from rtkit.errors import (
    AuthenticationError,
    InvalidRequestError,
    QuotaExceededError,
    RateLimitedError,
    RequestTimeoutError,
    RtkitError,
    UpstreamError,
)


class BrokerError(Exception):
    def __init__(self, status: int, error: str, code: str, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.code = code
        self.message = message
        self.retry_after = retry_after

    def response(self, request_id: str) -> JSONResponse:
        retry_ms = None if self.retry_after is None else math.ceil(self.retry_after * 1000)
        headers = {"X-Request-ID": request_id}
        if self.retry_after is not None:
            headers["Retry-After"] = str(max(1, math.ceil(self.retry_after)))
        return JSONResponse(
            {
                "error": self.error,
                "message": self.message,
                "code": self.code,
                "requestId": request_id,
                "retryAfter": retry_ms,
            },
            status_code=self.status,
            headers=headers,
        )


def bad_request(message: str, code: str = "invalid_request") -> BrokerError:
    return BrokerError(400, "InvalidRequest", code, message)


#: Seconds a client is asked to wait when Redis is down: long enough not to hammer a broker that cannot
#: serve, short enough that a restarted Redis is noticed soon.
CACHE_RETRY_AFTER = 2.0


def cache_unavailable() -> BrokerError:
    """What the client is told while Redis (shared cache, locks, rate-limit counters) does not answer."""
    return BrokerError(
        503,
        "CacheUnavailable",
        "cache_unavailable",
        "The broker's shared cache is unavailable, so it cannot serve keys right now. Try again shortly.",
        retry_after=CACHE_RETRY_AFTER,
    )


def from_upstream(exc: RtkitError) -> BrokerError:
    """What the browser is told when minting failed upstream. The main key's problems are the operator's,
    so they surface as a 502 without detail; the browser gets what it can act on (wait, retry)."""
    if isinstance(exc, AuthenticationError):
        return BrokerError(
            502,
            "UpstreamAuthFailed",
            "upstream_auth_failed",
            "The broker could not authenticate with the Realtime API. The operator must check its API key.",
        )
    if isinstance(exc, QuotaExceededError):
        return BrokerError(
            503,
            "UpstreamQuotaExceeded",
            "insufficient_quota",
            "The Realtime API account is out of quota. Try again later.",
        )
    if isinstance(exc, RateLimitedError):
        return BrokerError(
            503,
            "UpstreamRateLimited",
            "upstream_rate_limited",
            "The Realtime API is rate limiting the broker. Try again shortly.",
            retry_after=exc.retry_after if exc.retry_after is not None else 1.0,
        )
    if isinstance(exc, RequestTimeoutError):
        return BrokerError(
            504,
            "UpstreamTimeout",
            "upstream_timeout",
            "The Realtime API did not answer in time. Try again.",
            retry_after=1.0,
        )
    if isinstance(exc, InvalidRequestError):
        return BrokerError(
            502,
            "UpstreamRejected",
            "upstream_rejected",
            f"The Realtime API rejected the session the broker asked for: {exc.message}",
        )
    if isinstance(exc, UpstreamError):
        return BrokerError(
            502,
            "UpstreamUnavailable",
            "upstream_unavailable",
            "The Realtime API is unavailable. Try again shortly.",
            retry_after=2.0,
        )
    return BrokerError(500, "InternalError", "internal_error", "The broker failed unexpectedly.")
