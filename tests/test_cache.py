"""rtkit.cache: margin, single flight, and the Redis backend shared between two caches."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from rtkit.cache import MemoryBackend, RedisBackend, TokenCache
from rtkit.emulator import Emulator
from rtkit.tokens import EphemeralKey, TokenIssuer
from tests.conftest import TEST_KEY

SESSION: dict[str, Any] = {"type": "realtime", "model": "gpt-realtime"}


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
        backend = MemoryBackend() if request.param == "memory" else RedisBackend(request.getfixturevalue("redis_url"))
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
    first, second = RedisBackend(redis_url), RedisBackend(redis_url)
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
