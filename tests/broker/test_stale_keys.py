"""A cached key the Realtime API no longer accepts (revoked, or the API restarted): the client reports it as
``refusedKey`` and gets a fresh one, instead of the same dead key until it expires."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from rtkit._ids import fingerprint
from rtkit.broker import Broker
from rtkit.emulator import Emulator
from rtkit.keys import BrokerKeys, RefusableKeyProvider
from rtkit.session import RealtimeSession, ReconnectPolicy
from tests.broker.conftest import APP_TOKEN, LogCapture, settings
from tests.broker.test_broker import ask, assert_guide_error
from tests.conftest import TEST_KEY

RECONNECT = ReconnectPolicy(max_attempts=8, initial_delay=0.05, max_delay=0.3)


@pytest.fixture(params=["memory", "redis"])
async def any_broker(request: pytest.FixtureRequest, emulator: Emulator, logs: LogCapture) -> AsyncIterator[Broker]:
    overrides: dict[str, Any] = {}
    if request.param == "redis":
        import redis.asyncio as redis

        url = request.getfixturevalue("redis_url")
        client = redis.from_url(url)
        await client.flushdb()
        await client.aclose()
        overrides["redis_url"] = url
    async with Broker(settings(emulator, **overrides)) as b:
        yield b


def keys_for(broker: Broker, session_id: str = "tab-1") -> BrokerKeys:
    return BrokerKeys(broker.url, app_token=APP_TOKEN, session_id=session_id)


def audits(logs: LogCapture) -> list[dict[str, Any]]:
    return [json.loads(line) for line in logs.lines if '"broker.request"' in line]


async def test_a_refused_cached_key_is_replaced_by_a_fresh_one(
    any_broker: Broker, emulator: Emulator, logs: LogCapture
) -> None:
    keys = keys_for(any_broker)
    assert isinstance(keys, RefusableKeyProvider)
    first = await keys()
    assert (await keys()).value == first.value and emulator.keys.issued == 1
    emulator.keys.expire(first.value)  # revoked upstream; the broker's cache does not know

    keys.refused(first.value)
    fresh = await keys()
    assert fresh.value != first.value and emulator.keys.issued == 2
    assert (await keys()).value == fresh.value  # told once: the fresh key is cached and served again
    assert emulator.keys.issued == 2

    reported = [a for a in audits(logs) if a["refusedKey"] is not None]
    assert len(reported) == 1
    assert reported[0]["refusedKey"] == first.fingerprint and reported[0]["evicted"] is True
    assert reported[0]["cacheHit"] is False
    assert not [line for line in logs.lines if first.value in line or fresh.value in line]


async def test_a_refused_key_that_is_not_the_cached_one_evicts_nothing(
    any_broker: Broker, emulator: Emulator, logs: LogCapture
) -> None:
    mine, other_tab = keys_for(any_broker, "tab-1"), keys_for(any_broker, "tab-2")
    served = await mine()
    other_tab.refused(served.value)  # another session of the same app cannot evict tab-1's key
    assert (await other_tab()).value != served.value
    mine.refused("ek_" + "0" * 32)  # a key this caller was never served
    assert (await mine()).value == served.value
    assert emulator.keys.issued == 2
    assert [a["evicted"] for a in audits(logs) if a["refusedKey"] is not None] == [False, False]


async def test_reporting_a_refused_key_counts_against_the_rate_limit(
    emulator: Emulator, http: httpx.AsyncClient, logs: LogCapture
) -> None:
    async with Broker(settings(emulator, rate_limit_per_caller="2/minute")) as b:
        served = (await ask(http, b, {"sessionId": "tab-1"})).json()["ephemeralKey"]
        assert (await ask(http, b, {"sessionId": "tab-1"})).status_code == 200
        limited = await ask(http, b, {"sessionId": "tab-1", "refusedKey": served})
    assert_guide_error(limited, 429, "rate_limited")
    assert emulator.keys.issued == 1


async def test_a_malformed_refused_key_is_a_400_that_does_not_echo_it(broker: Broker, http: httpx.AsyncClient) -> None:
    r = await ask(http, broker, {"sessionId": "tab-1", "refusedKey": "ek_<script>alert(1)</script>"})
    body = assert_guide_error(r, 400, "invalid_request")
    assert "refusedKey" in body["message"] and "<script>" not in body["message"]


async def test_a_session_reconnecting_with_a_revoked_cached_key_gets_a_fresh_one(
    broker: Broker, emulator: Emulator, logs: LogCapture
) -> None:
    keys = keys_for(broker)
    session = RealtimeSession(keys, base_url=emulator.base_url, transport="webrtc", reconnect=RECONNECT)
    noticed: list[dict[str, Any]] = []
    session.events.on(lambda e: e["type"] == "rtkit.key_refused" and noticed.append(e))
    async with session:
        assert session.key is not None
        revoked = session.key.value
        emulator.keys.expire(revoked)
        await emulator.drop_call()
        change = await session.wait_for_state("connected", timeout=20)
        assert change.attempt >= 1
        assert session.key.value != revoked
    assert emulator.keys.issued == 2
    reported = [(a["refusedKey"], a["evicted"]) for a in audits(logs) if a["refusedKey"] is not None]
    assert reported == [(fingerprint(revoked), True)]  # told exactly once
    # The session shows it too: an event, and the attempt's connect record (which recovered).
    assert [e["key"] for e in noticed] == [fingerprint(revoked)]
    recovered = [r for r in session.metrics.connects if r.refused_key is not None]
    assert [(r.refused_key, r.ok) for r in recovered] == [(fingerprint(revoked), True)]


async def test_a_session_survives_an_upstream_restart_that_forgot_every_cached_key(logs: LogCapture) -> None:
    """The issue's case: the API restarts, every key it issued is unknown (401, not "expired"), and the
    broker's cache still holds one for this caller."""
    first = await Emulator(api_key=TEST_KEY).start()
    broker = await Broker(settings(first)).start()
    session = RealtimeSession(keys_for(broker), base_url=first.base_url, transport="websocket", reconnect=RECONNECT)
    second: Emulator | None = None
    try:
        await session.connect()
        assert session.key is not None
        cached = session.key.value
        await first.stop()
        second = await Emulator(api_key=TEST_KEY, port=first.port).start()
        change = await session.wait_for_state("connected", "failed", timeout=20)
        assert change.state == "connected", change.reason
        assert session.key.value != cached and second.keys.issued == 1
    finally:
        await session.close()
        await broker.stop()
        await (second or first).stop()
    reported = [(a["refusedKey"], a["evicted"]) for a in audits(logs) if a["refusedKey"] is not None]
    assert reported == [(fingerprint(cached), True)]
