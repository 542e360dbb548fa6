"""A tiny publish/subscribe hub: how levels, states, events and metrics reach widgets, plots and tests.

Publishing never blocks and never waits for a slow consumer: each subscriber has a bounded queue
and loses its *oldest* items when it falls behind (a plot that skips a level reading is fine; an
audio path that stalls for a plot is not).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Generic, TypeVar

T = TypeVar("T")
log = logging.getLogger("rtkit")

__all__ = ["Broadcast"]


class Broadcast(Generic[T]):
    """Fan-out of values of one kind to callbacks and async iterators."""

    def __init__(self, maxsize: int = 1000) -> None:
        self._maxsize = maxsize
        self._callbacks: list[Callable[[T], object]] = []
        self._queues: list[asyncio.Queue[T | None]] = []
        self._closed = False

    def publish(self, value: T) -> None:
        for callback in list(self._callbacks):
            try:
                callback(value)
            except Exception:  # a broken widget must not break the session
                log.exception("subscriber %r failed", callback)
        for queue in self._queues:
            if queue.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
            queue.put_nowait(value)

    def on(self, callback: Callable[[T], object]) -> Callable[[], None]:
        """Call ``callback`` with every value from now on; returns a function that unsubscribes."""
        self._callbacks.append(callback)
        return lambda: self._callbacks.remove(callback) if callback in self._callbacks else None

    async def __aiter__(self) -> AsyncIterator[T]:
        """Iterate over values published from now on, until ``close()``."""
        queue: asyncio.Queue[T | None] = asyncio.Queue(self._maxsize)
        if self._closed:
            return
        self._queues.append(queue)
        try:
            while True:
                value = await queue.get()
                if value is None and self._closed and queue.empty():
                    return
                if value is not None:
                    yield value
        finally:
            self._queues.remove(queue)

    def close(self) -> None:
        """End every iteration (after it has drained what was already published)."""
        self._closed = True
        for queue in self._queues:
            if queue.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
            queue.put_nowait(None)
