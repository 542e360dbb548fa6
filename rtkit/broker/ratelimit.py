"""Rate limits per client IP and per caller, with the ``limits`` library (memory, or Redis when shared)."""

from __future__ import annotations

import hashlib
import hmac
import logging
import time

from limits import parse
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.errors import StorageError

from rtkit.broker.config import BrokerSettings
from rtkit.broker.errors import BrokerError, cache_unavailable
from rtkit.cache import redis_options
from rtkit.errors import ConfigurationError

log = logging.getLogger("rtkit.broker")


class RateLimits:
    """Counts requests per IP and per caller.

    With Redis the counters are global, and the limiter fails closed: while Redis does not answer, requests
    are refused (503 ``cache_unavailable``), not counted in-process. N broker processes each falling back to
    their own counters would silently allow N times the global limit, just when something is already wrong.
    Counters are named by an HMAC of the IP or caller under ``secret``, so Redis never shows who asked.
    """

    def __init__(self, settings: BrokerSettings, *, secret: bytes | None = None) -> None:
        self.storage: Storage
        self._secret = secret
        if settings.redis_url:
            if secret is None:
                raise ConfigurationError("Rate limits kept in Redis need a secret to name their counters by.")
            # redis-py, which the token cache uses too (limits would default to coredis), with the cache's
            # short timeouts; wrap_exceptions turns every Redis failure into one StorageError to catch.
            url = settings.redis_url.replace("redis://", "async+redis://", 1)
            self.storage = RedisStorage(
                url, implementation="redispy", wrap_exceptions=True, **redis_options(settings.redis_timeout)
            )
        else:
            self.storage = MemoryStorage()
        # A sliding-window *counter* keeps two counters per key; the moving window kept one object per hit
        # for the whole window, and at 2,000 req/s that meant GC pauses of 20-70 ms (benchmarks/broker.py).
        self._limiter = SlidingWindowCounterRateLimiter(self.storage)
        self._per_ip = parse(settings.rate_limit_per_ip)
        self._per_caller = parse(settings.rate_limit_per_caller)

    def _pseudonym(self, who: str) -> str:
        if self._secret is None:
            return who
        return hmac.new(self._secret, who.encode(), hashlib.sha256).hexdigest()[:32]

    async def check(self, ip: str, caller: str) -> None:
        try:
            await self._check(ip, caller)
        except StorageError as exc:
            log.warning("Redis did not answer the rate limiter: %s", exc.storage_error)
            raise cache_unavailable() from None

    async def _check(self, ip: str, caller: str) -> None:
        for item, scope, who in ((self._per_ip, "ip", ip), (self._per_caller, "caller", caller)):
            name = self._pseudonym(who)
            if not await self._limiter.hit(item, "rtkit-broker", scope, name):
                stats = await self._limiter.get_window_stats(item, "rtkit-broker", scope, name)
                retry = max(0.001, stats.reset_time - time.time())
                raise BrokerError(
                    429,
                    "RateLimited",
                    "rate_limited",
                    f"Too many requests from this {'address' if scope == 'ip' else 'app'} "
                    f"(limit {item}). Try again in {retry:.1f} s.",
                    retry_after=retry,
                )
