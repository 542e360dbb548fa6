"""rtkit.cache: margin, single flight, and the Redis backend shared between two caches."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from rtkit.cache import MemoryBackend, RedisBackend, TokenCache
from rtkit.emulator import Emulator
from rtkit.errors import CacheUnavailableError
from rtkit.tokens import EphemeralKey, TokenIssuer
from tests.conftest import TEST_KEY, free_port

SESSION: dict[str, Any] = {"type": "realtime", "model": "gpt-realtime"}
SECRET = bytes(range(32))


class CountingMint:
    """The real issuer, counting upstream calls."""

    def __init__(self, issuer: TokenIssuer) -> None:
        self.issuer = issuer
        self.calls = 0

    async def __call__(self, session: dict[str, Any]) -> EphemeralKey:
        self.calls += 1
        return await self.issuer.issue(session)


@pytest.fixture
async def mint(emulator: Emulator) -> AsyncIterator[CountingMint]:
    async with TokenIssuer(TEST_KEY, base_url=emulator.base_url) as issuer:
        yield CountingMint(issuer)


@pytest.fixture(params=["memory", "redis"])
async def backend_factory(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    made: list[Any] = []

    def make() -> Any:
        backend = (
            MemoryBackend()
            if request.param == "memory"
            else RedisBackend(request.getfixturevalue("redis_url"), secret=SECRET)
        )
        made.append(backend)
        return backend

    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
        import redis.asyncio as redis

        client = redis.from_url(url)
        await client.flushdb()
        await client.aclose()
    yield make
    for backend in made:
        await backend.aclose()


async def test_second_request_is_a_hit_with_the_same_key(mint: CountingMint, backend_factory: Any) -> None:
    cache = TokenCache(mint, backend=backend_factory())
    first = await cache.get("alice", SESSION)
    second = await cache.get("alice", dict(reversed(SESSION.items())))
    assert (first.hit, second.hit) == (False, True)
    assert first.key.value == second.key.value
    assert mint.calls == 1


async def test_identity_and_session_each_get_their_own_key(mint: CountingMint, backend_factory: Any) -> None:
    cache = TokenCache(mint, backend=backend_factory())
    a = await cache.get("alice", SESSION)
    b = await cache.get("bob", SESSION)
    c = await cache.get("alice", {**SESSION, "instructions": "other"})
    assert len({a.key.value, b.key.value, c.key.value}) == 3
    assert mint.calls == 3


async def test_keys_closer_to_expiry_than_the_margin_are_never_served(
    emulator: Emulator, mint: CountingMint, backend_factory: Any
) -> None:
    emulator.faults.key_ttl_override = 3
    cache = TokenCache(mint, backend=backend_factory(), margin=2.0)
    first = await cache.get("alice", SESSION)
    assert (await cache.get("alice", SESSION)).hit
    await asyncio.sleep(1.3)
    later = await cache.get("alice", SESSION)
    assert not later.hit and later.key.value != first.key.value
    assert later.key.expires_in() > 1.5


async def test_a_key_shorter_lived_than_the_margin_is_not_cached(
    emulator: Emulator, mint: CountingMint, backend_factory: Any
) -> None:
    emulator.faults.key_ttl_override = 5
    cache = TokenCache(mint, backend=backend_factory(), margin=30.0)
    assert not (await cache.get("alice", SESSION)).hit
    assert not (await cache.get("alice", SESSION)).hit
    assert mint.calls == 2


async def test_concurrent_misses_make_one_upstream_call(mint: CountingMint, backend_factory: Any) -> None:
    cache = TokenCache(mint, backend=backend_factory())
    results = await asyncio.gather(*(cache.get("alice", SESSION) for _ in range(25)))
    assert mint.calls == 1
    assert len({r.key.value for r in results}) == 1
    assert sum(not r.hit for r in results) == 1


async def test_two_caches_sharing_redis_make_one_upstream_call(mint: CountingMint, redis_url: str) -> None:
    import redis.asyncio as redis

    client = redis.from_url(redis_url)
    await client.flushdb()
    await client.aclose()
    first, second = RedisBackend(redis_url, secret=SECRET), RedisBackend(redis_url, secret=SECRET)
    a, b = TokenCache(mint, backend=first), TokenCache(mint, backend=second)
    try:
        results = await asyncio.gather(*(cache.get("alice", SESSION) for cache in [a, b] * 10))
    finally:
        await first.aclose()
        await second.aclose()
    assert mint.calls == 1
    assert len({r.key.value for r in results}) == 1


async def test_a_failed_mint_is_not_cached(emulator: Emulator, mint: CountingMint) -> None:
    emulator.faults.fail_next_mints(1, status=500, retry_after=0)
    mint.issuer.max_attempts = 1
    cache = TokenCache(mint, backend=MemoryBackend())
    with pytest.raises(Exception, match="server had an error"):
        await cache.get("alice", SESSION)
    assert not (await cache.get("alice", SESSION)).hit


async def test_forget_drops_only_the_key_it_names(mint: CountingMint, backend_factory: Any) -> None:
    cache = TokenCache(mint, backend=backend_factory())
    served = (await cache.get("alice", SESSION)).key.value
    assert not await cache.forget("alice", SESSION, "ek_not_the_cached_one")
    assert not await cache.forget("bob", SESSION, served)  # another caller cannot evict alice's key
    assert (await cache.get("alice", SESSION)).hit
    assert await cache.forget("alice", SESSION, served)
    fresh = await cache.get("alice", SESSION)
    assert not fresh.hit and fresh.key.value != served
    assert mint.calls == 2


async def test_redis_holds_neither_keys_nor_identities_and_needs_the_secret(mint: CountingMint, redis_url: str) -> None:
    import redis.asyncio as redis

    client = redis.from_url(redis_url)
    await client.flushdb()
    ours, theirs = RedisBackend(redis_url, secret=SECRET), RedisBackend(redis_url, secret=bytes(32))
    try:
        served = (await TokenCache(mint, backend=ours).get("alice", SESSION)).key
        stored = {name: await client.get(name) async for name in client.scan_iter()}
        assert (await TokenCache(mint, backend=ours).get("alice", SESSION)).hit
        assert not (await TokenCache(mint, backend=theirs).get("alice", SESSION)).hit
    finally:
        await ours.aclose()
        await theirs.aclose()
        await client.aclose()
    assert len(stored) == 1
    for name, value in stored.items():
        assert value is not None
        for secret in (served.value.encode(), b"ek_", b"alice", b"gpt-realtime"):
            assert secret not in name and secret not in value


async def test_a_redis_that_does_not_answer_is_cache_unavailable_quickly(mint: CountingMint) -> None:
    backend = RedisBackend(f"redis://127.0.0.1:{free_port()}/0", secret=SECRET, timeout=0.5)
    cache = TokenCache(mint, backend=backend)
    try:
        for attempt in (cache.get("alice", SESSION), cache.forget("alice", SESSION, "ek_whatever")):
            started = time.perf_counter()
            with pytest.raises(CacheUnavailableError) as info:
                await attempt
            assert time.perf_counter() - started < 2.0
            assert info.value.code == "cache_unavailable"
        assert not await backend.ping()
    finally:
        await backend.aclose()
    assert mint.calls == 0  # nothing minted that could not be cached or locked
