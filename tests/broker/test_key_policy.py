"""The broker's key policy, against an API that spends a key on the session it opens (the emulator's
``single_use_keys``): ``reuse`` recovers through one fresh key after a 401, ``single-use`` never meets one."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from rtkit._ids import fingerprint
from rtkit.broker import Broker
from rtkit.cache import KeyPool
from rtkit.emulator import Emulator
from rtkit.session import RealtimeSession
from tests.broker.conftest import LogCapture, settings
from tests.broker.test_broker import BODY, ask
from tests.broker.test_stale_keys import RECONNECT, audits, keys_for
from tests.emulator.test_single_use_keys import admin


@pytest.fixture(params=["memory", "redis"])
async def shared(request: pytest.FixtureRequest) -> AsyncIterator[dict[str, Any]]:
    """Broker settings for the cache backend under test: in process, or a real Redis emptied for the test."""
    if request.param == "memory":
        yield {}
        return
    import redis.asyncio as redis

    url = request.getfixturevalue("redis_url")
    client = redis.from_url(url)
    await client.flushdb()
    await client.aclose()
    yield {"redis_url": url}


def single_use(emu: Emulator, **overrides: Any) -> Broker:
    return Broker(settings(emu, key_policy="single-use", rate_limit_per_ip="1000/minute", **overrides))


def pool(broker: Broker) -> KeyPool:
    assert isinstance(broker.state.cache, KeyPool)
    return broker.state.cache


async def key_uses(emu: Emulator) -> dict[str, int]:
    """Fingerprint → sessions the key was presented to open, from the emulator's operator listing."""
    r = await admin(emu, "GET", "keys")
    r.raise_for_status()
    return {k["fingerprint"]: k["uses"] for k in r.json()["keys"]}


async def lose_the_call_and_reconnect(broker: Broker, emu: Emulator) -> tuple[str, str]:
    """A WebRTC session through ``BrokerKeys`` whose call drops: the keys before and after."""
    session = RealtimeSession(keys_for(broker), base_url=emu.base_url, transport="webrtc", reconnect=RECONNECT)
    async with session:
        assert session.key is not None
        before = session.key.value
        await emu.drop_call()
        change = await session.wait_for_state("connected", "failed", timeout=20)
        assert change.state == "connected", change.reason
        return before, session.key.value


async def test_a_reuse_broker_recovers_a_lost_call_through_exactly_one_fresh_key(
    emulator: Emulator, broker: Broker, logs: LogCapture
) -> None:
    emulator.faults.single_use_keys = True
    before, after = await lose_the_call_and_reconnect(broker, emulator)
    assert after != before
    assert emulator.keys.issued == 2
    reported = [(a["refusedKey"], a["evicted"]) for a in audits(logs) if a["refusedKey"] is not None]
    assert reported == [(fingerprint(before), True)]  # the cached key was spent: one 401, one report
    assert await key_uses(emulator) == {fingerprint(before): 2, fingerprint(after): 1}


async def test_a_single_use_broker_recovers_a_lost_call_without_a_401(
    emulator: Emulator, shared: dict[str, Any], logs: LogCapture
) -> None:
    emulator.faults.single_use_keys = True
    async with single_use(emulator, **shared) as broker:
        before, after = await lose_the_call_and_reconnect(broker, emulator)
        await pool(broker).settled()
    assert after != before
    assert not [a for a in audits(logs) if a["refusedKey"] is not None]  # BrokerKeys reports every 401
    uses = await key_uses(emulator)
    assert {f for f, n in uses.items() if n} == {fingerprint(before), fingerprint(after)}
    assert set(uses.values()) <= {0, 1}  # every key presented at most once; the pool's spares not yet


async def test_a_single_use_broker_never_hands_out_a_key_twice(
    emulator: Emulator, shared: dict[str, Any], http: httpx.AsyncClient, logs: LogCapture
) -> None:
    # With Redis, two broker processes' worth of brokers share one pool.
    brokers = [await single_use(emulator, **shared).start() for _ in range(2 if shared else 1)]
    try:
        warm = (await ask(http, brokers[0])).json()["ephemeralKey"]
        await pool(brokers[0]).settled()
        answers = await asyncio.gather(*(ask(http, brokers[i % len(brokers)]) for i in range(20)))
        for b in brokers:
            await pool(b).settled()
    finally:
        for b in brokers:
            await b.stop()
    assert [r.status_code for r in answers] == [200] * 20
    served = [warm] + [r.json()["ephemeralKey"] for r in answers]
    assert len(set(served)) == 21
    hits = [a["cacheHit"] for a in audits(logs)]
    assert hits.count(True) >= 2  # the two keys minted ahead went to two of the twenty


async def test_a_pool_hit_makes_no_upstream_mint_on_the_request_path(
    emulator: Emulator, shared: dict[str, Any], http: httpx.AsyncClient, logs: LogCapture
) -> None:
    async with single_use(emulator, **shared) as broker:
        first = (await ask(http, broker)).json()["ephemeralKey"]
        await pool(broker).settled()
        assert emulator.keys.issued == 1 + broker.settings.key_pool_size
        emulator.faults.add_latency("client_secrets", 1.0)  # any mint on the request path would take ≥ 1 s
        started = time.perf_counter()
        second = (await ask(http, broker)).json()["ephemeralKey"]
        elapsed = time.perf_counter() - started
        await pool(broker).settled()  # the refill, in the background, after the answer
    assert second != first and elapsed < 1.0
    assert emulator.keys.issued == 2 + broker.settings.key_pool_size
    records = audits(logs)
    assert [(a["cacheHit"], a["upstreamMs"] is None) for a in records] == [(False, False), (True, True)]
    assert records[1]["key"] == fingerprint(second)


async def test_pooled_keys_near_expiry_are_dropped_not_served(
    emulator: Emulator, shared: dict[str, Any], http: httpx.AsyncClient, logs: LogCapture
) -> None:
    # Keys live 3 s and are served only with 1.5 s left: the pool's spares age out in a 1.6 s wait.
    emulator.faults.key_ttl_override = 3
    async with single_use(emulator, cache_margin_seconds=1.5, **shared) as broker:
        await ask(http, broker)
        await pool(broker).settled()
        spares = emulator.keys.issued - 1
        await asyncio.sleep(1.6)
        late = await ask(http, broker)
        await pool(broker).settled()
    assert spares == broker.settings.key_pool_size and late.status_code == 200
    assert [a["cacheHit"] for a in audits(logs)] == [False, False]  # the aged spares were not served


async def test_a_refused_key_empties_the_callers_pool(
    emulator: Emulator, shared: dict[str, Any], http: httpx.AsyncClient, logs: LogCapture
) -> None:
    """An API that refused one key may have forgotten all it issued (a restart): the pool's spares go too."""
    async with single_use(emulator, **shared) as broker:
        served = (await ask(http, broker)).json()["ephemeralKey"]
        await pool(broker).settled()
        fresh = await ask(http, broker, {**BODY, "refusedKey": served})
        await pool(broker).settled()
    assert fresh.status_code == 200
    reported = [(a["refusedKey"], a["evicted"], a["cacheHit"]) for a in audits(logs) if a["refusedKey"]]
    assert reported == [(fingerprint(served), True, False)]


async def test_a_failing_refill_is_logged_and_the_pool_still_serves(
    emulator: Emulator, http: httpx.AsyncClient, logs: LogCapture
) -> None:
    async with single_use(emulator) as broker:
        await ask(http, broker)
        await pool(broker).settled()
        emulator.faults.fail_next_mints(4, status=500)  # both attempts of both refills below
        answers = [await ask(http, broker) for _ in range(2)]
        await pool(broker).settled()
    assert [r.status_code for r in answers] == [200, 200]
    assert [a["cacheHit"] for a in audits(logs)] == [False, True, True]
    assert [line for line in logs.lines if "could not refill a key pool" in line]
    assert not [line for line in logs.lines if "never retrieved" in line]
