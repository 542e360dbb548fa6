"""One mapping from the guide's error codes to rtkit's exception tree, for every path that reads one."""

from __future__ import annotations

import pytest

from rtkit.errors import (
    AuthenticationError,
    CacheUnavailableError,
    InvalidRequestError,
    MicrophoneDeniedError,
    NetworkLostError,
    QuotaExceededError,
    RateLimitedError,
    RequestTimeoutError,
    RtkitError,
    UpstreamError,
    WebRTCUnavailableError,
    error_for_code,
)


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        # The broker's table (README, "The token broker").
        ("invalid_json", 400, InvalidRequestError),
        ("invalid_request", 400, InvalidRequestError),
        ("voice_not_allowed", 400, InvalidRequestError),
        ("missing_token", 401, AuthenticationError),
        ("invalid_token", 401, AuthenticationError),
        ("origin_not_allowed", 403, AuthenticationError),
        ("payload_too_large", 413, InvalidRequestError),
        ("rate_limited", 429, RateLimitedError),
        ("upstream_auth_failed", 502, UpstreamError),
        ("upstream_unavailable", 502, UpstreamError),
        ("upstream_rate_limited", 503, RateLimitedError),
        ("insufficient_quota", 503, QuotaExceededError),
        ("cache_unavailable", 503, CacheUnavailableError),
        ("upstream_timeout", 504, RequestTimeoutError),
        ("internal_error", 500, UpstreamError),
        # The browser page's reports (no HTTP status of their own).
        ("microphone_denied", None, MicrophoneDeniedError),
        ("webrtc_unavailable", None, WebRTCUnavailableError),
        ("network_lost", None, NetworkLostError),
        ("upstream_unreachable", None, UpstreamError),
        ("something_new", None, UpstreamError),
    ],
)
def test_each_code_maps_to_the_class_a_caller_acts_on(
    code: str, status: int | None, expected: type[RtkitError]
) -> None:
    error = error_for_code(code, "what the server said", status=status, retry_after=2.5, hint="do this")
    assert type(error) is expected
    assert error.message == "what the server said" and error.hint == "do this"
    if isinstance(error, RateLimitedError):
        assert error.retry_after == 2.5


def test_one_rule_for_every_retry_the_servers_retry_after_exactly_else_our_own_backoff() -> None:
    from rtkit.errors import retry_wait

    assert retry_wait(RateLimitedError("slow down", retry_after=7.0), 0.2) == 7.0  # never sooner
    assert retry_wait(RateLimitedError("slow down", retry_after=0.5), 30.0) == 0.5  # nor later than asked
    assert retry_wait(RateLimitedError("slow down"), 0.2) == 0.2
    assert retry_wait(UpstreamError("down"), 0.2) == retry_wait(None, 0.2) == 0.2
