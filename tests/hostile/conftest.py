"""The real emulator and broker, served in a thread of their own for the whole module.

Hypothesis calls a test function hundreds of times; each call is a plain synchronous function using
a blocking client against servers that keep running between examples, the way a stranger's requests
hit a running service. The servers are the same ``Emulator`` and ``Broker`` users start.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from rtkit.broker import Broker, BrokerSettings
from rtkit.emulator import Emulator
from tests.conftest import TEST_KEY

#: Broker error bodies carry exactly these keys (the guide's format).
BROKER_ERROR_KEYS = {"error", "message", "code", "requestId", "retryAfter"}
#: The emulator's error bodies are OpenAI's: ``{"error": {message, type, param, code}}``.
API_ERROR_KEYS = {"message", "type", "param", "code"}


@dataclass
class Servers:
    emulator: Emulator
    broker: Broker
    loop: asyncio.AbstractEventLoop

    def run(self, coro: Any, timeout: float = 30.0) -> Any:
        """Run a coroutine on the servers' loop (to read their state), from the test's thread."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)


@pytest.fixture(scope="module")
def servers() -> Iterator[Servers]:
    ready: dict[str, Any] = {}
    started = threading.Event()
    loop = asyncio.new_event_loop()

    async def serve() -> None:
        stop = asyncio.Event()
        ready["stop"] = stop
        async with Emulator(api_key=TEST_KEY) as emu:
            settings = BrokerSettings(
                upstream_url=emu.base_url,
                api_key=TEST_KEY,
                dev_mode=True,
                allowed_origins=["http://127.0.0.1:5173"],
                # Hypothesis sends hundreds of requests from one address: the limits are not under test here.
                rate_limit_per_ip="1000000/minute",
                rate_limit_per_caller="1000000/minute",
            )
            async with Broker(settings) as broker:
                ready["servers"] = Servers(emu, broker, loop)
                started.set()
                await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    assert started.wait(30), "the servers did not start"
    yield ready["servers"]
    loop.call_soon_threadsafe(ready["stop"].set)
    thread.join(30)
    loop.close()


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=20) as http:
        yield http


def assert_broker_error(response: httpx.Response) -> None:
    assert response.status_code < 500, f"{response.status_code}: {response.text[:300]}"
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == BROKER_ERROR_KEYS, body
        assert isinstance(body["message"], str) and body["message"]
        assert response.headers.get("x-request-id") == body["requestId"]


def assert_api_error(response: httpx.Response) -> None:
    assert response.status_code < 500, f"{response.status_code}: {response.text[:300]}"
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == {"error"} and set(body["error"]) == API_ERROR_KEYS, body
        assert isinstance(body["error"]["message"], str) and body["error"]["message"]


def answers_normally(servers: Servers, http: httpx.Client) -> None:
    """After whatever came before, an ordinary client still gets what it asked for from both servers."""
    r = http.post(f"{servers.broker.url}/api/client-secret", json={"sessionId": "after-the-storm"})
    assert r.status_code == 200 and r.json()["ephemeralKey"].startswith("ek_"), r.text
    r = http.post(
        f"{servers.emulator.base_url}/realtime/client_secrets",
        json={"session": {"type": "realtime"}},
        headers={"Authorization": f"Bearer {TEST_KEY}"},
    )
    assert r.status_code == 200 and r.json()["value"].startswith("ek_"), r.text
