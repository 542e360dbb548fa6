"""Two broker processes sharing one real redis-server: one global rate limit, one set of cached keys."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from rtkit.emulator import Emulator
from tests.conftest import TEST_KEY, broker_argv, free_port


async def wait_healthy(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    async with httpx.AsyncClient() as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"broker exited with {proc.returncode}")
            try:
                if (await http.get(f"{url}/healthz")).status_code == 200:
                    return
            except httpx.HTTPError:
                await asyncio.sleep(0.1)
    raise AssertionError("broker did not become healthy")


@pytest.fixture
async def brokers(emulator: Emulator, redis_url: str) -> AsyncIterator[list[str]]:
    import redis.asyncio as redis

    client = redis.from_url(redis_url)
    await client.flushdb()
    await client.aclose()
    env = {**os.environ, "OPENAI_API_KEY": TEST_KEY}
    procs, urls = [], []
    for _ in range(2):
        port = free_port()
        procs.append(
            subprocess.Popen(  # noqa: ASYNC220 (spawning is instant; the test waits on /healthz)
                broker_argv(port, emulator.base_url, "--redis-url", redis_url, "--dev", "--rate-limit-ip", "6/minute"),
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
        )
        urls.append(f"http://127.0.0.1:{port}")
    try:
        for url, proc in zip(urls, procs, strict=True):
            await wait_healthy(url, proc)
        yield urls
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            out, _ = proc.communicate(timeout=10)
            assert TEST_KEY.encode() not in out  # the audit log never shows the main key


async def ask(http: httpx.AsyncClient, url: str, session_id: str) -> httpx.Response:
    return await http.post(f"{url}/api/client-secret", json={"sessionId": session_id})


async def test_cached_keys_are_shared_between_processes(brokers: list[str], emulator: Emulator) -> None:
    a, b = brokers
    async with httpx.AsyncClient() as http:
        first = await ask(http, a, "tab-1")
        second = await ask(http, b, "tab-1")
    assert first.status_code == second.status_code == 200
    assert first.json()["ephemeralKey"] == second.json()["ephemeralKey"]
    assert emulator.keys.issued == 1


async def test_concurrent_misses_across_processes_mint_once(brokers: list[str], emulator: Emulator) -> None:
    async with httpx.AsyncClient() as http:
        responses = await asyncio.gather(*(ask(http, brokers[i % 2], "tab-burst") for i in range(6)))
    assert {r.status_code for r in responses} == {200}
    assert len({r.json()["ephemeralKey"] for r in responses}) == 1
    assert emulator.keys.issued == 1


async def test_the_rate_limit_is_global(brokers: list[str]) -> None:
    async with httpx.AsyncClient() as http:
        statuses = [(await ask(http, brokers[i % 2], f"tab-{i}")).status_code for i in range(8)]
        limited = await ask(http, brokers[0], "tab-late")
    assert statuses == [200] * 6 + [429] * 2
    assert limited.status_code == 429 and limited.json()["code"] == "rate_limited"
    assert limited.json()["retryAfter"] > 0


async def test_readiness_checks_redis(brokers: list[str]) -> None:
    async with httpx.AsyncClient() as http:
        ready = await http.get(f"{brokers[1]}/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"upstream": "ok", "redis": "ok"}
