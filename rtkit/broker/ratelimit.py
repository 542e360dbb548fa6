"""Rate limits per client IP and per caller, with the ``limits`` library (memory, or Redis when shared)."""

from __future__ import annotations

import time

from limits import parse
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter

from rtkit.broker.config import BrokerSettings
from rtkit.broker.errors import BrokerError


class RateLimits:
    def __init__(self, settings: BrokerSettings) -> None:
        self.storage: Storage
        if settings.redis_url:
            # redis-py, which the token cache uses too (limits would default to coredis).
            url = settings.redis_url.replace("redis://", "async+redis://", 1)
            self.storage = RedisStorage(url, implementation="redispy")
        else:
            self.storage = MemoryStorage()
        # A sliding-window *counter* keeps two counters per key; the moving window kept one object per hit
        # for the whole window, and at 2,000 req/s that meant GC pauses of 20-70 ms (benchmarks/broker.py).
        self._limiter = SlidingWindowCounterRateLimiter(self.storage)
        self._per_ip = parse(settings.rate_limit_per_ip)
        self._per_caller = parse(settings.rate_limit_per_caller)

    async def check(self, ip: str, caller: str) -> None:
        for item, scope, who in ((self._per_ip, "ip", ip), (self._per_caller, "caller", caller)):
            if not await self._limiter.hit(item, "rtkit-broker", scope, who):
                stats = await self._limiter.get_window_stats(item, "rtkit-broker", scope, who)
                retry = max(0.001, stats.reset_time - time.time())
                raise BrokerError(
                    429,
                    "RateLimited",
                    "rate_limited",
                    f"Too many requests from this {'address' if scope == 'ip' else 'app'} "
                    f"(limit {item}). Try again in {retry:.1f} s.",
                    retry_after=retry,
                )
