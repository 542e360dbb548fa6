"""A broker whose Redis dies, hangs, or comes back: a quick 503 in the broker's error format while it is away
(never a 500 or a traceback), and service again on its own once it returns."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from rtkit.broker import Broker
from rtkit.emulator import Emulator
from tests.broker.conftest import LogCapture, settings
from tests.broker.test_broker import ask, assert_guide_error
from tests.conftest import free_port, start_redis

#: Generous for a loaded CI machine; before, a dead Redis was a 500 and a hung one a 500 after 5 s.
QUICKLY = 3.0


class RedisProcess:
    """A redis-server of this test's own, to kill, freeze and bring back on the same port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] = start_redis(self.port)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)

    def freeze(self) -> None:
        os.kill(self.proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)

    def restart(self) -> None:
        self.proc = start_redis(self.port)


@pytest.fixture
def redis_process() -> Iterator[RedisProcess]:
    redis = RedisProcess()
    yield redis
    redis.thaw()
    redis.kill()


@pytest.fixture
async def shared_broker(emulator: Emulator, redis_process: RedisProcess, logs: LogCapture) -> AsyncIterator[Broker]:
    async with Broker(settings(emulator, redis_url=redis_process.url)) as b:
        yield b


async def timed_ask(http: httpx.AsyncClient, broker: Broker, session_id: str) -> tuple[httpx.Response, float]:
    started = time.perf_counter()
    r = await ask(http, broker, {"sessionId": session_id})
    return r, time.perf_counter() - started


def assert_cache_unavailable(r: httpx.Response) -> None:
    body = assert_guide_error(r, 503, "cache_unavailable")
    assert body["retryAfter"] == 2000 and r.headers["retry-after"] == "2"


def assert_no_traceback(logs: LogCapture) -> None:
    assert not [line for line in logs.lines if "Traceback" in line or '"outcome": "internal_error"' in line]


async def assert_not_ready_quickly(http: httpx.AsyncClient, broker: Broker) -> None:
    """Readiness says Redis is unreachable, and says so without waiting on it."""
    started = time.perf_counter()
    ready = await http.get(f"{broker.url}/readyz")
    assert time.perf_counter() - started < QUICKLY
    assert ready.status_code == 503 and ready.json()["checks"]["redis"] == "unreachable"


async def test_a_killed_redis_is_a_quick_503_and_the_broker_recovers_when_it_returns(
    shared_broker: Broker, redis_process: RedisProcess, http: httpx.AsyncClient, logs: LogCapture
) -> None:
    assert (await ask(http, shared_broker, {"sessionId": "before"})).status_code == 200
    redis_process.kill()
    for session_id in ("cached-before", "never-seen"):
        r, elapsed = await timed_ask(http, shared_broker, session_id)
        assert_cache_unavailable(r)
        assert elapsed < QUICKLY
    await assert_not_ready_quickly(http, shared_broker)

    redis_process.restart()  # same port, empty: no broker restart, no reconfiguration
    r, _ = await timed_ask(http, shared_broker, "after")
    assert r.status_code == 200, r.text
    assert (await http.get(f"{shared_broker.url}/readyz")).status_code == 200
    assert_no_traceback(logs)


async def test_a_hung_redis_is_a_503_within_a_bound_and_readiness_stays_fast(
    shared_broker: Broker, redis_process: RedisProcess, http: httpx.AsyncClient, logs: LogCapture
) -> None:
    assert (await ask(http, shared_broker, {"sessionId": "before"})).status_code == 200
    redis_process.freeze()
    try:
        r, elapsed = await timed_ask(http, shared_broker, "frozen")
        assert_cache_unavailable(r)
        assert elapsed < QUICKLY
        await assert_not_ready_quickly(http, shared_broker)
    finally:
        redis_process.thaw()
    r, _ = await timed_ask(http, shared_broker, "thawed")
    assert r.status_code == 200, r.text
    assert_no_traceback(logs)


async def test_redis_down_before_the_first_request_is_a_503_not_a_crash(
    emulator: Emulator, redis_process: RedisProcess, http: httpx.AsyncClient, logs: LogCapture
) -> None:
    redis_process.kill()
    async with Broker(settings(emulator, redis_url=redis_process.url)) as b:
        r, elapsed = await timed_ask(http, b, "first")
        assert_cache_unavailable(r)
        assert elapsed < QUICKLY
        redis_process.restart()
        assert (await ask(http, b, {"sessionId": "first"})).status_code == 200
    assert emulator.keys.issued == 1
    assert_no_traceback(logs)
