"""The raw WebSocket side of emulator tests: a conversation helper, event builders, and one shared emulator per
module for the files whose tests each open their own session (starting an emulator per test costs more than
most of those tests)."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import pytest_asyncio
import websockets

from rtkit.emulator import Emulator
from tests.conftest import TEST_KEY, assert_valid_server_events


class Conn:
    """A raw WebSocket conversation with helpers to send an event and read until a type shows up."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.seen: list[dict[str, Any]] = []

    async def send(self, event: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(event))

    async def until(self, kind: str, timeout: float = 10) -> dict[str, Any]:
        while True:
            event = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
            self.seen.append(event)
            if event["type"] == kind:
                return event

    async def error_for(self, event: dict[str, Any]) -> dict[str, Any]:
        await self.send({**event, "event_id": "evt_client_1"})
        error = (await self.until("error"))["error"]
        assert error["event_id"] == "evt_client_1"
        return dict(error)


async def open_conn(emulator: Emulator, **kwargs: Any) -> Conn:
    """A session on ``emulator`` with the main key, once ``session.created`` has arrived."""
    # No backpressure: a test reads when it chooses, and a close behind 16 unread events would wait out the
    # client's 10 s close timeout (the close frame is never read) and end as 1006.
    kwargs.setdefault("max_queue", None)
    ws = await websockets.connect(
        f"{emulator.websocket_url}/realtime?model=gpt-realtime",
        additional_headers={"Authorization": f"Bearer {TEST_KEY}"},
        **kwargs,
    )
    conn = Conn(ws)
    await conn.until("session.created")
    return conn


def append(pcm: np.ndarray) -> dict[str, Any]:
    return {
        "type": "input_audio_buffer.append",
        "audio": base64.b64encode(pcm.astype("<i2").tobytes()).decode(),
    }


def text_item(text: str, role: str = "user") -> dict[str, Any]:
    kind = "input_text" if role == "user" else "output_text"
    return {
        "type": "conversation.item.create",
        "item": {"type": "message", "role": role, "content": [{"type": kind, "text": text}]},
    }


def shared_emulator() -> Callable[..., Any]:
    """A module's ``emulator`` fixture: one emulator for the module (its tests run in the module's event loop,
    ``pytest.mark.asyncio(loop_scope="module")``), and everything it sent checked against the SDK's types."""

    @pytest_asyncio.fixture(scope="module", loop_scope="module", name="emulator")
    async def fixture() -> AsyncIterator[Emulator]:
        async with Emulator(api_key=TEST_KEY) as emu:
            yield emu
        assert_valid_server_events(list(emu.server_events))

    return fixture


def shared_conn() -> Callable[..., Any]:
    """A module's ``conn`` fixture: a fresh session on the module's emulator for each test."""

    @pytest_asyncio.fixture(loop_scope="module", name="conn")
    async def fixture(emulator: Emulator) -> AsyncIterator[Conn]:
        conn = await open_conn(emulator)
        async with conn.ws:
            yield conn
        assert_valid_server_events(conn.seen)

    return fixture
