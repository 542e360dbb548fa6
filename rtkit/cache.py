"""A cache of ephemeral keys, so that a page reload does not cost an upstream mint.

A key is served from the cache only while it has more than ``margin`` seconds of life left: a
client must have time to open its call before the key dies. Concurrent requests for the same
missing key make exactly one upstream call (single flight); the Redis backend extends both the
cache and that guarantee across broker processes. Where the API spends a key on the session it
opens, ``KeyPool`` hands each key out once instead, from a few minted ahead.

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
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from cachetools import TLRUCache
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from rtkit.errors import CacheUnavailableError, ConfigurationError, RtkitError
from rtkit.tokens import EphemeralKey

__all__ = [
    "CacheBackend",
    "CachedKey",
    "KeyCache",
    "KeyPool",
    "MemoryBackend",
    "PoolBackend",
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


class PoolBackend(CacheBackend, Protocol):
    """A backend that also keeps pools of keys, each handed out once (``KeyPool``)."""

    async def push(self, key: str, value: EphemeralKey, ttl: float) -> None:
        """Append ``value`` to the pool ``key``; it may be served for ``ttl`` seconds."""
        ...

    async def pop(self, key: str) -> EphemeralKey | None:
        """Take the pool's oldest servable key, atomically: no two callers, in any process, get the same one."""
        ...

    async def pooled(self, key: str) -> int: ...

    async def drain(self, key: str) -> int:
        """Empty the pool ``key``; how many keys it held."""
        ...


class MemoryBackend:
    """In-process cache: a ``cachetools.TLRUCache`` whose entries die at their own deadline."""

    def __init__(self, maxsize: int = 10_000) -> None:
        self._cache: TLRUCache[str, tuple[EphemeralKey, float]] = TLRUCache(
            maxsize, ttu=lambda _k, v, _now: v[1], timer=time.time
        )
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        # A pool lives as long as its newest key (pushed last), whose deadline is the deque's last.
        self._pools: TLRUCache[str, deque[tuple[EphemeralKey, float]]] = TLRUCache(
            maxsize, ttu=lambda _k, v, _now: v[-1][1], timer=time.time
        )

    async def get(self, key: str) -> EphemeralKey | None:
        entry = self._cache.get(key)
        return entry[0] if entry else None

    async def push(self, key: str, value: EphemeralKey, ttl: float) -> None:
        pool = self._pools.get(key) or deque()
        pool.append((value, time.time() + ttl))
        self._pools[key] = pool  # set again, so that the entry now lives as long as this key

    async def pop(self, key: str) -> EphemeralKey | None:
        # No ``await`` between looking and taking: in one event loop that is atomic, with no lock to wait for.
        pool, now = self._pools.get(key), time.time()
        while pool:
            value, deadline = pool.popleft()
            if deadline > now:
                return value
        return None

    async def pooled(self, key: str) -> int:
        now = time.time()
        return sum(1 for _, deadline in self._pools.get(key) or () if deadline > now)

    async def drain(self, key: str) -> int:
        return len(self._pools.pop(key, ()))

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
        self._pools.clear()


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

    def _sealed(self, name: str, value: EphemeralKey) -> bytes:
        data = {
            "value": value.value,
            "expires_at": value.expires_at.timestamp(),
            "session_id": value.session_id,
            "model": value.model,
            "session": value.session,
        }
        nonce = os.urandom(12)
        return nonce + self._seal.encrypt(nonce, json.dumps(data).encode(), name.encode())

    async def set(self, key: str, value: EphemeralKey, ttl: float) -> None:
        name = self._name(key)
        with self._answering():
            await self._redis.set(name, self._sealed(name, value), px=max(1, int(ttl * 1000)))

    async def push(self, key: str, value: EphemeralKey, ttl: float) -> None:
        # A list of sealed records; the list dies with its newest record, each record is checked when popped.
        name = self._name(key)
        with self._answering():
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.rpush(name, self._sealed(name, value))
                pipe.pexpire(name, max(1, int(ttl * 1000)))
                await pipe.execute()

    async def pop(self, key: str) -> EphemeralKey | None:
        name = self._name(key)
        while True:
            with self._answering():
                raw = await self._redis.lpop(name)
            if not isinstance(raw, bytes):
                return None
            if (opened := self._open(name, raw)) is not None:
                return opened

    async def pooled(self, key: str) -> int:
        with self._answering():
            return int(await self._redis.llen(self._name(key)))

    async def drain(self, key: str) -> int:
        name = self._name(key)
        with self._answering():
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.llen(name)
                pipe.delete(name)
                held, _ = await pipe.execute()
        return int(held)

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


class KeyCache(Protocol):
    """What the broker asks of a key policy: ``TokenCache`` (``reuse``) and ``KeyPool`` (``single-use``)."""

    @property
    def backend(self) -> CacheBackend: ...

    async def get(self, identity: str, session: dict[str, Any]) -> CachedKey: ...

    async def forget(self, identity: str, session: dict[str, Any], value: str) -> bool: ...

    async def aclose(self) -> None: ...


class KeyPool:
    """Hands each key out exactly once, for an API that spends a key on the session it opens, while a request
    still costs no upstream call: up to ``size`` keys per identity and session config are minted ahead.

    Taking a key is one atomic pop (a deque's ``popleft`` in this loop; ``LPOP`` in Redis) and waits for no
    lock, since a refill holds the entry's lock for as long as its mints take. After each take a background
    task tops the pool up, under that lock, so that several broker processes sharing Redis never overfill it.
    Keys that come within ``margin`` of expiry are dropped when they reach the front, never served.
    """

    def __init__(
        self,
        mint: Callable[[dict[str, Any]], Awaitable[EphemeralKey]],
        *,
        backend: PoolBackend | None = None,
        margin: float = 30.0,
        size: int = 2,
    ) -> None:
        self._mint = mint
        self.backend: PoolBackend = backend or MemoryBackend()
        self.margin = margin
        self.size = size
        self._tasks: set[asyncio.Task[None]] = set()
        #: Entries with a refill running here → whether a key was taken since its last count.
        self._again: dict[str, bool] = {}

    @staticmethod
    def _entry(identity: str, session: dict[str, Any]) -> str:
        # Its own namespace: a pool is never read as a cached key, even with both policies on one Redis.
        return "pool:" + cache_key(identity, session)

    def _fresh(self, key: EphemeralKey) -> bool:
        return key.expires_in() > self.margin

    async def get(self, identity: str, session: dict[str, Any]) -> CachedKey:
        entry = self._entry(identity, session)
        while (pooled := await self.backend.pop(entry)) is not None:
            if self._fresh(pooled):
                self._refill_soon(entry, session)
                return CachedKey(pooled, hit=True)
        minted = await self._mint(session)
        if self._fresh(minted):  # else no key of this lifetime could wait in the pool: minting ahead would waste
            self._refill_soon(entry, session)
        return CachedKey(minted, hit=False)

    async def forget(self, identity: str, session: dict[str, Any], value: str) -> bool:
        """A refused key was never going to be served again; but the API refusing one of ours says it may have
        forgotten the others too (it restarted), so the pool is emptied and the next ``get`` mints. True when
        keys were dropped."""
        return await self.backend.drain(self._entry(identity, session)) > 0

    def _refill_soon(self, entry: str, session: dict[str, Any]) -> None:
        if entry in self._again:
            self._again[entry] = True  # the running refill counts again before it ends
            return
        self._again[entry] = False
        task = asyncio.create_task(self._refill(entry, session))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _refill(self, entry: str, session: dict[str, Any]) -> None:
        try:
            while True:
                self._again[entry] = False
                async with self.backend.lock(entry):
                    while await self.backend.pooled(entry) < self.size:
                        minted = await self._mint(session)
                        ttl = minted.expires_in() - self.margin
                        if ttl <= 0:
                            return
                        await self.backend.push(entry, minted, ttl)
                if not self._again[entry]:
                    return
        except RtkitError as exc:
            # Nobody awaits this task: say why here. The next take tries again; a miss meanwhile mints.
            log.warning("could not refill a key pool: %s", exc)
        except Exception:
            log.exception("refilling a key pool failed")
        finally:
            del self._again[entry]

    async def settled(self) -> None:
        """Wait for the refills under way in this process (tests and benchmarks count mints after it)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.backend.aclose()
