"""A cache of ephemeral keys, so that a page reload does not cost an upstream mint.

A key is served from the cache only while it has more than ``margin`` seconds of life left: a
client must have time to open its call before the key dies. Concurrent requests for the same
missing key make exactly one upstream call (single flight); the Redis backend extends both the
cache and that guarantee across broker processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from cachetools import TLRUCache

from rtkit.tokens import EphemeralKey

__all__ = ["CacheBackend", "CachedKey", "MemoryBackend", "RedisBackend", "TokenCache", "cache_key"]


def cache_key(identity: str, session: dict[str, Any]) -> str:
    """One entry per caller identity and session config (canonical JSON, so key order does not matter)."""
    blob = json.dumps([identity, session], sort_keys=True, separators=(",", ":"))
    return "rtkit:ek:" + hashlib.sha256(blob.encode()).hexdigest()


class CacheBackend(Protocol):
    async def get(self, key: str) -> EphemeralKey | None: ...

    async def set(self, key: str, value: EphemeralKey, ttl: float) -> None: ...

    def lock(self, key: str) -> contextlib.AbstractAsyncContextManager[None]:
        """Held while one caller mints the key for ``key``; the others wait, then read the cache."""
        ...

    async def ping(self) -> bool: ...

    async def aclose(self) -> None: ...


class MemoryBackend:
    """In-process cache: a ``cachetools.TLRUCache`` whose entries die at their own deadline."""

    def __init__(self, maxsize: int = 10_000) -> None:
        self._cache: TLRUCache[str, tuple[EphemeralKey, float]] = TLRUCache(
            maxsize, ttu=lambda _k, v, _now: v[1], timer=time.time
        )
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    async def get(self, key: str) -> EphemeralKey | None:
        entry = self._cache.get(key)
        return entry[0] if entry else None

    async def set(self, key: str, value: EphemeralKey, ttl: float) -> None:
        self._cache[key] = (value, time.time() + ttl)

    @contextlib.asynccontextmanager
    async def lock(self, key: str) -> AsyncIterator[None]:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        async with lock:
            yield

    async def ping(self) -> bool:
        return True

    async def aclose(self) -> None:
        self._cache.clear()


class RedisBackend:
    """Shared cache for several broker processes; Redis expires entries itself (``PX``) and its lock
    (``redis.asyncio.lock.Lock``) makes single flight hold across processes."""

    def __init__(self, url: str, *, lock_timeout: float = 15.0) -> None:
        import redis.asyncio as redis

        self._redis = redis.from_url(url)
        self._lock_timeout = lock_timeout

    async def get(self, key: str) -> EphemeralKey | None:
        raw = await self._redis.get(key)
        if raw is None:
            return None
        data = json.loads(raw)
        return EphemeralKey(
            value=data["value"],
            expires_at=datetime.fromtimestamp(data["expires_at"], tz=UTC),
            session_id=data["session_id"],
            model=data["model"],
            session=data["session"],
        )

    async def set(self, key: str, value: EphemeralKey, ttl: float) -> None:
        data = {
            "value": value.value,
            "expires_at": value.expires_at.timestamp(),
            "session_id": value.session_id,
            "model": value.model,
            "session": value.session,
        }
        await self._redis.set(key, json.dumps(data), px=max(1, int(ttl * 1000)))

    @contextlib.asynccontextmanager
    async def lock(self, key: str) -> AsyncIterator[None]:
        async with self._redis.lock(key + ":lock", timeout=self._lock_timeout, blocking_timeout=self._lock_timeout):
            yield

    async def ping(self) -> bool:
        try:
            return bool(await self._redis.ping())
        except Exception:
            return False

    async def aclose(self) -> None:
        await self._redis.aclose()


@dataclass(frozen=True)
class CachedKey:
    key: EphemeralKey
    #: True when no upstream call was made for this request.
    hit: bool


class TokenCache:
    """Serves ephemeral keys from ``backend``, minting with ``mint`` on a miss."""

    def __init__(
        self,
        mint: Callable[[dict[str, Any]], Awaitable[EphemeralKey]],
        *,
        backend: CacheBackend | None = None,
        margin: float = 30.0,
    ) -> None:
        self._mint = mint
        self.backend: CacheBackend = backend or MemoryBackend()
        self.margin = margin

    def _fresh(self, key: EphemeralKey | None) -> bool:
        return key is not None and key.expires_in() > self.margin

    async def get(self, identity: str, session: dict[str, Any]) -> CachedKey:
        entry = cache_key(identity, session)
        cached = await self.backend.get(entry)
        if cached is not None and self._fresh(cached):
            return CachedKey(cached, hit=True)
        async with self.backend.lock(entry):
            cached = await self.backend.get(entry)
            if cached is not None and self._fresh(cached):
                return CachedKey(cached, hit=True)
            minted = await self._mint(session)
            ttl = minted.expires_in() - self.margin
            if ttl > 0:
                await self.backend.set(entry, minted, ttl)
            return CachedKey(minted, hit=False)

    async def aclose(self) -> None:
        await self.backend.aclose()
