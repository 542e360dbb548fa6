"""Shared fixtures: a real emulator on a loopback port, and a check that everything it said was valid."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from pydantic import TypeAdapter

from rtkit.audio.pcm import PCM
from rtkit.emulator import Emulator
from rtkit.emulator.responders import voice_text

TEST_KEY = "sk-test-emulator-main-key"


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    """A fresh emulator per test; at teardown every server event it sent must parse as the official
    SDK's ``RealtimeServerEvent`` (the wire-faithfulness oracle)."""
    async with Emulator(api_key=TEST_KEY) as emu:
        yield emu
    assert_valid_server_events(list(emu.server_events))


@pytest.fixture
async def backend(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Any]:
    """A lesson's backend as a reader without an API key gets it (``rtkit.lab.start_backend``): the emulator,
    a broker and its keys; ``RTKIT_AUDIO`` unset so a laptop's own setting does not choose the side."""
    from rtkit.lab import start_backend  # the widgets' stack, loaded only by the tests that ask for it

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("RTKIT_AUDIO", raising=False)
    lab = await start_backend()
    yield lab
    await lab.close()


def assert_valid_server_events(events: list[dict[str, Any]]) -> None:
    from openai.types.realtime import RealtimeServerEvent

    adapter: TypeAdapter[Any] = TypeAdapter(RealtimeServerEvent)
    for event in events:
        parsed = adapter.validate_python(event)
        assert parsed.type == event["type"], f"{event['type']} parsed as {parsed.type}"
        assert event["event_id"].startswith("event_")


@pytest.fixture(scope="session")
def speech() -> PCM:
    """A sentence spoken by espeak-ng (or beeps where it is missing): 24 kHz mono PCM16."""
    import asyncio

    return asyncio.run(voice_text("Hello from the realtime kit. What is the weather like in Paris today?"))


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_redis(port: int) -> subprocess.Popen[bytes]:
    """A real redis-server on ``port`` (loopback, no persistence), answering PING when this returns. Tests
    that take Redis away (kill, stop, restart on the same port) start their own with this."""
    import shutil
    import socket
    import time

    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server is not installed (make setup installs Debian's redis-server)")
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as conn:
                conn.sendall(b"PING\r\n")
                if conn.recv(16).startswith(b"+PONG"):
                    return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    pytest.fail(f"redis-server did not start on port {port}")


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A real redis-server on a free loopback port, without persistence, for this test session."""
    port = free_port()
    proc = start_redis(port)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


def broker_argv(port: int, upstream: str, *extra: str) -> list[str]:
    """``rtkit broker`` as an operator starts it, on loopback ``port`` in front of ``upstream``."""
    import sys

    return [sys.executable, "-m", "rtkit", "broker", "--port", str(port), "--upstream", upstream, *extra]


def preflight_for(origin: str, headers: str = "authorization,content-type,x-openai-agents-sdk") -> dict[str, str]:
    """The CORS preflight a browser sends before it POSTs an SDP offer with a Bearer key (and the agents SDK's
    header) from a page at ``origin``."""
    return {"Origin": origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": headers}


#: The longest modules, longest first: with
#: ``--dist loadfile`` a module is one worker's, so the long poles start first and the short modules fill in
#: around them (longest-processing-time scheduling); collected last, two of them could end up back to back.
LONG_POLES = (
    "tests/notebooks/test_jupyterlab.py",
    "tests/notebooks/test_jupyterlab_later_lessons.py",
    "tests/widgets/test_browser_call.py",
    "tests/broker/test_page.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        path = item.path.as_posix()
        return next((n for n, pole in enumerate(LONG_POLES) if path.endswith(pole)), len(LONG_POLES))

    items.sort(key=rank)  # stable: within a module, and among the others, the collected order stays
