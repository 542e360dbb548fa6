"""Shared fixtures: a real emulator on a loopback port, and a check that everything it said was valid."""

from __future__ import annotations

from collections.abc import AsyncIterator
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
