"""rtkit.tokens against the real emulator as its upstream: parsing, retries, and the error mapping."""

from __future__ import annotations

import socket
import time
from datetime import UTC, datetime

import pytest

from rtkit.emulator import Emulator
from rtkit.errors import (
    AuthenticationError,
    ConfigurationError,
    InvalidRequestError,
    QuotaExceededError,
    RateLimitedError,
    RequestTimeoutError,
    UpstreamError,
)
from rtkit.schema import RealtimeSessionConfig
from rtkit.tokens import EphemeralKey, TokenIssuer
from tests.conftest import TEST_KEY


def issuer(emu: Emulator, **kw: object) -> TokenIssuer:
    return TokenIssuer(TEST_KEY, base_url=emu.base_url, backoff_initial=0.01, backoff_max=0.5, **kw)  # type: ignore[arg-type]


async def test_issue_returns_a_typed_key_from_the_real_shape(emulator: Emulator) -> None:
    async with issuer(emulator) as tokens:
        key = await tokens.issue(
            RealtimeSessionConfig(type="realtime", model="gpt-realtime", instructions="Be brief."), expires_in=300
        )
    assert key.value.startswith("ek_")
    assert key.expires_at.tzinfo is not None
    assert key.expires_in() == pytest.approx(300, abs=5)
    assert key.session_id and key.session_id.startswith("sess_")
    assert key.model == "gpt-realtime"
    assert key.session["instructions"] == "Be brief."
    assert key.value not in repr(key) and key.fingerprint in repr(key)
    assert tokens.last_attempts == 1


def test_the_guides_flat_shape_is_accepted() -> None:
    key = EphemeralKey.from_response(
        {"value": "ek_abc123", "expires_at": 1_900_000_000, "session_id": "sess_1", "model": "gpt-realtime"}
    )
    assert (key.session_id, key.model) == ("sess_1", "gpt-realtime")
    assert key.expires_at == datetime.fromtimestamp(1_900_000_000, tz=UTC)


@pytest.mark.parametrize("body", [{}, {"value": 3}, {"value": "ek_x"}, {"value": "ek_x", "expires_at": "soon"}, []])
def test_a_200_without_a_usable_secret_is_an_upstream_error(body: object) -> None:
    with pytest.raises(UpstreamError):
        EphemeralKey.from_response(body)


async def test_transient_5xx_is_retried_until_it_succeeds(emulator: Emulator) -> None:
    emulator.faults.fail_next_mints(2, status=503)
    async with issuer(emulator) as tokens:
        key = await tokens.issue()
    assert key.value.startswith("ek_")
    assert tokens.last_attempts == 3


async def test_retry_after_is_honoured(emulator: Emulator) -> None:
    emulator.faults.fail_next_mints(1, status=429, retry_after=0.4)
    async with issuer(emulator) as tokens:
        started = time.perf_counter()
        await tokens.issue()
    assert time.perf_counter() - started >= 0.4
    assert tokens.last_attempts == 2


async def test_attempts_are_bounded(emulator: Emulator) -> None:
    emulator.faults.fail_next_mints(10, status=500)
    async with issuer(emulator, max_attempts=3) as tokens:
        with pytest.raises(UpstreamError) as info:
            await tokens.issue()
    assert info.value.status == 500 and info.value.code == "upstream_unavailable"
    assert tokens.last_attempts == 3


async def test_rate_limit_that_outlasts_the_attempts_is_raised_with_retry_after(emulator: Emulator) -> None:
    emulator.faults.fail_next_mints(5, status=429, retry_after=0.05)
    async with issuer(emulator, max_attempts=2) as tokens:
        with pytest.raises(RateLimitedError) as info:
            await tokens.issue()
    assert info.value.retry_after == pytest.approx(0.05)
    assert info.value.code == "rate_limited"


async def test_exhausted_quota_is_not_retried(emulator: Emulator) -> None:
    emulator.faults.fail_next_mints(5, status=429, quota=True)
    async with issuer(emulator) as tokens:
        with pytest.raises(QuotaExceededError):
            await tokens.issue()
    assert tokens.last_attempts == 1


async def test_wrong_main_key_is_not_retried(emulator: Emulator) -> None:
    async with TokenIssuer("sk-wrong", base_url=emulator.base_url) as tokens:
        with pytest.raises(AuthenticationError) as info:
            await tokens.issue()
    assert tokens.last_attempts == 1
    assert info.value.code == "invalid_api_key"
    assert "sk-wrong" not in str(info.value)


async def test_invalid_session_is_an_invalid_request_naming_the_parameter(emulator: Emulator) -> None:
    async with issuer(emulator) as tokens:
        with pytest.raises(InvalidRequestError) as info:
            await tokens.issue({"type": "realtime", "voice": "marin"})
    assert "session.voice" in str(info.value)
    assert tokens.last_attempts == 1


async def test_slow_upstream_times_out_within_one_budget_for_all_attempts(emulator: Emulator) -> None:
    emulator.faults.add_latency("client_secrets", 1.0)
    async with issuer(emulator, timeout=0.3, max_attempts=3) as tokens:
        started = time.perf_counter()
        with pytest.raises(RequestTimeoutError):
            await tokens.issue()
    assert time.perf_counter() - started < 0.9  # not 3 x 0.3 s: the budget covers every attempt
    assert tokens.last_attempts == 1


async def test_a_retry_after_longer_than_the_budget_is_raised_at_once_uncapped(emulator: Emulator) -> None:
    emulator.faults.fail_next_mints(1, status=429, retry_after=30)
    async with issuer(emulator, timeout=2.0) as tokens:
        started = time.perf_counter()
        with pytest.raises(RateLimitedError) as info:
            await tokens.issue()
    assert time.perf_counter() - started < 1.5
    assert info.value.retry_after == 30  # what the server said, not backoff_max (0.5 s here)
    assert tokens.last_attempts == 1


async def test_a_retry_after_above_backoff_max_is_waited_in_full_when_it_fits(emulator: Emulator) -> None:
    emulator.faults.fail_next_mints(1, status=429, retry_after=0.8)
    async with issuer(emulator, timeout=5.0) as tokens:  # backoff_max is 0.5
        started = time.perf_counter()
        await tokens.issue()
    assert time.perf_counter() - started >= 0.8
    assert tokens.last_attempts == 2


def test_the_derived_secret_depends_on_the_main_key_and_the_purpose() -> None:
    a, same, other = TokenIssuer("sk-one"), TokenIssuer("sk-one"), TokenIssuer("sk-two")
    assert a.derive_secret("cache") == same.derive_secret("cache") != other.derive_secret("cache")
    assert a.derive_secret("cache") != a.derive_secret("limits")
    assert len(a.derive_secret("cache")) == 32 and b"sk-one" not in a.derive_secret("cache")


async def test_unreachable_upstream_is_an_upstream_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with TokenIssuer(
        TEST_KEY, base_url=f"http://127.0.0.1:{port}/v1", max_attempts=2, backoff_initial=0.01
    ) as tokens:
        with pytest.raises(UpstreamError, match="Cannot reach"):
            await tokens.issue()


def test_an_empty_main_key_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError):
        TokenIssuer("")
