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
from typing import Any, Generic, TypeVar

T = TypeVar("T")
log = logging.getLogger("rtkit")

__all__ = ["Broadcast", "EventWaiters", "next_value"]


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


class EventWaiters:
    """Futures waiting for the next server event of a type: how a session (or a browser call) says
    "tell me when ``session.updated`` arrives" without subscribing and unsubscribing by hand."""

    def __init__(self) -> None:
        self._waiting: list[tuple[str, asyncio.Future[dict[str, Any]]]] = []

    def expect(self, kind: str) -> asyncio.Future[dict[str, Any]]:
        """A future for the next event of this type; register it *before* doing what triggers the event."""
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting.append((kind, future))
        return future

    def resolve(self, event: dict[str, Any]) -> None:
        """Hand ``event`` to everyone waiting for its type."""
        kind = event.get("type")
        for waiter in list(self._waiting):
            wanted, future = waiter
            if wanted == kind and not future.done():
                future.set_result(event)
                self._waiting.remove(waiter)

    def cancel_all(self) -> None:
        for _, future in self._waiting:
            future.cancel()
        self._waiting.clear()


async def next_value(stream: Broadcast[T], accept: Callable[[T], bool], timeout: float) -> T:
    """The next value published on ``stream`` that ``accept`` takes, within ``timeout`` seconds."""
    future: asyncio.Future[T] = asyncio.get_running_loop().create_future()

    def check(value: T) -> None:
        if accept(value) and not future.done():
            future.set_result(value)

    unsubscribe = stream.on(check)
    try:
        return await asyncio.wait_for(future, timeout)
    finally:
        unsubscribe()
