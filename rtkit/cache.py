"""A cache of ephemeral keys, so that a page reload does not cost an upstream mint.

A key is served from the cache only while it has more than ``margin`` seconds of life left: a
client must have time to open its call before the key dies. Concurrent requests for the same
missing key make exactly one upstream call (single flight); the Redis backend extends both the
cache and that guarantee across broker processes.

What Redis holds is useless to whoever reads it: entries are named by an HMAC of caller and session,
and their records are sealed with AES-GCM, both under a secret that only processes holding the main
API key can derive (``TokenIssuer.derive_secret``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import os
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from cachetools import TLRUCache
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from rtkit.errors import CacheUnavailableError, ConfigurationError
from rtkit.tokens import EphemeralKey

__all__ = [
    "CacheBackend",
    "CachedKey",
    "MemoryBackend",
    "RedisBackend",
    "TokenCache",
    "cache_key",
    "redis_options",
]

log = logging.getLogger("rtkit.cache")


def cache_key(identity: str, session: dict[str, Any]) -> str:
    """One entry per caller identity and session config (canonical JSON, so key order does not matter)."""
    blob = json.dumps([identity, session], sort_keys=True, separators=(",", ":"))
    return "rtkit:ek:" + hashlib.sha256(blob.encode()).hexdigest()


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


class CacheBackend(Protocol):
    async def get(self, key: str) -> EphemeralKey | None: ...

    async def set(self, key: str, value: EphemeralKey, ttl: float) -> None: ...

    async def forget(self, key: str, value: str) -> bool:
        """Drop the entry for ``key`` only if it still holds the secret ``value``; True when it did."""
        ...

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

    async def forget(self, key: str, value: str) -> bool:
        entry = self._cache.get(key)
        if entry is None or not _same(entry[0].value, value):
            return False
        self._cache.pop(key, None)
        return True

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


def redis_options(timeout: float) -> dict[str, Any]:
    """redis-py options for a Redis that may vanish: short connect and command timeouts, and one immediate
    retry, which is what carries a request over a pooled connection that a restarted Redis left dead.
    The cache and the rate limiter both use these, so an outage looks the same to both."""
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    return {"socket_timeout": timeout, "socket_connect_timeout": timeout, "retry": Retry(NoBackoff(), 1)}


# Compare-and-delete in one step: another process may have replaced the entry since we read it.
_DELETE_IF_SAME = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


class RedisBackend:
    """Shared cache for several broker processes; Redis expires entries itself (``PX``) and its lock
    (``redis.asyncio.lock.Lock``) makes single flight hold across processes.

    ``secret`` (32 bytes, the same in every process that shares the cache) names entries by HMAC and seals
    their records with AES-GCM, the entry's name as associated data: a dump or ``MONITOR`` of Redis shows
    neither a usable key nor who asked for it, and a record cannot be moved under another caller's name.
    A Redis that does not answer within ``timeout`` raises ``CacheUnavailableError``.
    """

    def __init__(self, url: str, *, secret: bytes, lock_timeout: float = 15.0, timeout: float = 0.5) -> None:
        import redis.asyncio as redis

        if len(secret) < 32:
            raise ConfigurationError("The Redis cache needs a secret of at least 32 bytes.")
        self._redis = redis.from_url(url, **redis_options(timeout))
        self._lock_timeout = lock_timeout
        self._names = HKDFExpand(hashes.SHA256(), 32, b"rtkit cache names").derive(secret)
        self._seal = AESGCM(HKDFExpand(hashes.SHA256(), 32, b"rtkit cache records").derive(secret))
        self._delete_if_same = self._redis.register_script(_DELETE_IF_SAME)

    def _name(self, key: str) -> str:
        return "rtkit:ek:" + hmac.new(self._names, key.encode(), hashlib.sha256).hexdigest()

    @staticmethod
    @contextlib.contextmanager
    def _answering() -> Iterator[None]:
        from redis.exceptions import RedisError

        try:
            yield
        except RedisError as exc:
            log.warning("Redis did not answer: %s: %s", type(exc).__name__, exc)
            raise CacheUnavailableError(
                f"The broker's shared cache (Redis) is unavailable ({type(exc).__name__}).",
                hint="try again in a few seconds; the operator should check Redis",
            ) from None

    def _open(self, name: str, raw: bytes) -> EphemeralKey | None:
        try:
            data = json.loads(self._seal.decrypt(raw[:12], raw[12:], name.encode()))
        except (InvalidTag, ValueError):
            # Not sealed by a process with our main key (or damaged): a miss, and the next mint overwrites it.
            log.warning("ignoring a cache entry that does not open with this broker's secret")
            return None
        return EphemeralKey(
            value=data["value"],
            expires_at=datetime.fromtimestamp(data["expires_at"], tz=UTC),
            session_id=data["session_id"],
            model=data["model"],
            session=data["session"],
        )

    async def _read(self, key: str) -> tuple[str, bytes | None]:
        name = self._name(key)
        with self._answering():
            raw = await self._redis.get(name)
        return name, raw if isinstance(raw, bytes) else None

    async def get(self, key: str) -> EphemeralKey | None:
        name, raw = await self._read(key)
        return None if raw is None else self._open(name, raw)

    async def set(self, key: str, value: EphemeralKey, ttl: float) -> None:
        name = self._name(key)
        data = {
            "value": value.value,
            "expires_at": value.expires_at.timestamp(),
            "session_id": value.session_id,
            "model": value.model,
            "session": value.session,
        }
        nonce = os.urandom(12)
        sealed = nonce + self._seal.encrypt(nonce, json.dumps(data).encode(), name.encode())
        with self._answering():
            await self._redis.set(name, sealed, px=max(1, int(ttl * 1000)))

    async def forget(self, key: str, value: str) -> bool:
        name, raw = await self._read(key)
        if raw is None:
            return False
        cached = self._open(name, raw)
        if cached is None or not _same(cached.value, value):
            return False
        with self._answering():
            return bool(await self._delete_if_same(keys=[name], args=[raw]))

    @contextlib.asynccontextmanager
    async def lock(self, key: str) -> AsyncIterator[None]:
        lock = self._redis.lock(
            self._name(key) + ":lock", timeout=self._lock_timeout, blocking_timeout=self._lock_timeout
        )
        with self._answering():
            acquired = await lock.acquire()
        if not acquired:
            raise CacheUnavailableError(
                f"Another broker process held this key's lock for over {self._lock_timeout:g} s.",
                hint="try again shortly",
            )
        try:
            yield
        finally:
            from redis.exceptions import RedisError

            try:
                await lock.release()
            except RedisError as exc:
                # The lock has a TTL: it goes away by itself. What the body raised matters more than this.
                log.warning("could not release a cache lock (%s); it expires within %g s", exc, self._lock_timeout)

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

    async def forget(self, identity: str, session: dict[str, Any], value: str) -> bool:
        """Drop the cached key for ``identity`` and ``session`` if it is ``value`` (a key the API refused):
        the next ``get`` mints. A caller can only ever evict the key it was served; True when one was dropped."""
        return await self.backend.forget(cache_key(identity, session), value)

    async def aclose(self) -> None:
        await self.backend.aclose()
