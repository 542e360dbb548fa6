"""GET /v1/realtime as a WebSocket: the SDK's ``realtime.connect`` and browser-style subprotocol auth."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import httpx
import numpy as np
import pytest
import websockets
from openai import AsyncOpenAI

from rtkit.audio.pcm import PCM, REALTIME_RATE
from rtkit.emulator import Emulator
from tests.conftest import TEST_KEY


async def mint(emu: Emulator, session: dict[str, Any] | None = None, seconds: int = 600) -> str:
    async with httpx.AsyncClient() as http:
        r = await http.post(
            f"{emu.base_url}/realtime/client_secrets",
            headers={"Authorization": f"Bearer {TEST_KEY}"},
            json={
                "session": session or {"type": "realtime"},
                "expires_after": {"anchor": "created_at", "seconds": seconds},
            },
        )
    return str(r.json()["value"])


def ws_url(emu: Emulator, model: str = "gpt-realtime") -> str:
    return f"{emu.websocket_url}/realtime?model={model}"


async def until(conn: Any, kind: str, seen: list[str] | None = None) -> Any:
    async for event in conn:
        if seen is not None:
            seen.append(event.type)
        if event.type == kind:
            return event
    raise AssertionError(f"connection closed before {kind}")


async def test_sdk_holds_a_text_conversation(emulator: Emulator) -> None:
    client = AsyncOpenAI(base_url=emulator.base_url, api_key=await mint(emulator), max_retries=0)
    async with client.realtime.connect(model="gpt-realtime") as conn:
        created = await conn.recv()
        assert created.type == "session.created"
        await conn.session.update(
            session={"type": "realtime", "output_modalities": ["text"], "instructions": "Answer in one word."}
        )
        updated = await until(conn, "session.updated")
        assert updated.session.output_modalities == ["text"]
        assert updated.session.instructions == "Answer in one word."
        await conn.conversation.item.create(
            item={
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "hello there"}],
            }
        )
        await conn.response.create()
        seen: list[str] = []
        done = await until(conn, "response.done", seen)
    assert done.response.status == "completed"
    assert done.response.output[0].content[0].text == "hello there"
    assert seen[:5] == [
        "conversation.item.added",
        "conversation.item.done",
        "response.created",
        "response.output_item.added",
        "conversation.item.added",
    ]
    assert "response.output_text.delta" in seen and "response.output_text.done" in seen


async def test_sdk_gets_spoken_reply_as_audio_deltas(emulator: Emulator) -> None:
    client = AsyncOpenAI(base_url=emulator.base_url, api_key=TEST_KEY, max_retries=0)
    async with client.realtime.connect(model="gpt-realtime") as conn:
        await until(conn, "session.created")
        await conn.conversation.item.create(
            item={
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "good morning"}],
            }
        )
        await conn.response.create()
        audio = bytearray()
        async for event in conn:
            if event.type == "response.output_audio.delta":
                audio += base64.b64decode(event.delta)
            if event.type == "response.output_audio_transcript.done":
                assert event.transcript == "good morning"
            if event.type == "response.done":
                break
    assert event.response.status == "completed"
    assert event.response.usage.output_token_details.audio_tokens > 0
    pcm = np.frombuffer(bytes(audio), dtype="<i2")
    assert pcm.size / REALTIME_RATE > 0.3
    assert np.abs(pcm).max() > 1000


def appends(pcm: PCM, chunk_ms: int = 100) -> list[str]:
    step = REALTIME_RATE * chunk_ms // 1000
    return [
        json.dumps(
            {
                "type": "input_audio_buffer.append",
                "audio": base64.b64encode(pcm[i : i + step].astype("<i2").tobytes()).decode(),
            }
        )
        for i in range(0, pcm.size, step)
    ]


async def test_spoken_turn_over_websocket_follows_the_documented_event_order(emulator: Emulator, speech: PCM) -> None:
    silence = np.zeros(REALTIME_RATE, dtype=np.int16)
    audio = np.concatenate([silence, speech, silence])
    async with websockets.connect(ws_url(emulator), additional_headers={"Authorization": f"Bearer {TEST_KEY}"}) as ws:
        for message in appends(audio):
            await ws.send(message)
        events = []
        while True:
            event = json.loads(await asyncio.wait_for(ws.recv(), 15))
            events.append(event)
            if event["type"] == "rate_limits.updated":
                break
    kinds = [e["type"] for e in events]
    expected = [
        "session.created",
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
        "response.created",
        "response.output_item.added",
        "conversation.item.added",
        "response.content_part.added",
    ]
    assert kinds[: len(expected)] == expected
    tail = [
        "response.output_audio.done",
        "response.output_audio_transcript.done",
        "response.content_part.done",
        "response.output_item.done",
        "conversation.item.done",
        "response.done",
        "rate_limits.updated",
    ]
    assert kinds[-len(tail) :] == tail
    started = events[1]
    stopped = events[2]
    # espeak's speech starts ~1 s in; the reported start includes the 300 ms prefix padding.
    assert 600 <= started["audio_start_ms"] <= 1100
    assert started["item_id"] == stopped["item_id"] == events[3]["item_id"]
    speech_end_ms = 1000 + speech.size * 1000 // REALTIME_RATE
    assert speech_end_ms - 600 <= stopped["audio_end_ms"] <= speech_end_ms + 600
    echoed = b"".join(base64.b64decode(e["delta"]) for e in events if e["type"] == "response.output_audio.delta")
    # The echo is the committed utterance: from speech start (with padding) to speech stop.
    expected_ms = stopped["audio_end_ms"] - started["audio_start_ms"]
    assert len(echoed) // 2 * 1000 // REALTIME_RATE == pytest.approx(expected_ms, abs=120)


async def test_browser_subprotocol_auth_is_accepted_and_realtime_is_chosen(emulator: Emulator) -> None:
    ek = await mint(emulator)
    async with websockets.connect(
        ws_url(emulator),
        subprotocols=[  # type: ignore[list-item]
            "realtime",
            f"openai-insecure-api-key.{ek}",
            "openai-agents-sdk.0.1.0",
        ],
    ) as ws:
        assert ws.subprotocol == "realtime"
        assert json.loads(await ws.recv())["type"] == "session.created"


async def test_bad_key_is_refused_with_401_before_the_upgrade(emulator: Emulator) -> None:
    with pytest.raises(websockets.InvalidStatus) as info:
        async with websockets.connect(ws_url(emulator), additional_headers={"Authorization": "Bearer sk-bad"}):
            pass
    assert info.value.response.status_code == 401
    assert json.loads(info.value.response.body)["error"]["code"] == "invalid_api_key"


async def test_expired_key_is_refused(emulator: Emulator) -> None:
    ek = await mint(emulator)
    emulator.keys.expire(ek)
    with pytest.raises(websockets.InvalidStatus) as info:
        async with websockets.connect(ws_url(emulator), additional_headers={"Authorization": f"Bearer {ek}"}):
            pass
    assert info.value.response.status_code == 401
    assert "expired" in json.loads(info.value.response.body)["error"]["message"]


async def test_beta_header_closes_with_4000(emulator: Emulator) -> None:
    async with websockets.connect(
        ws_url(emulator),
        additional_headers={"Authorization": f"Bearer {TEST_KEY}", "OpenAI-Beta": "realtime=v1"},
    ) as ws:
        with pytest.raises(websockets.ConnectionClosed) as info:
            await ws.recv()
    assert info.value.rcvd is not None
    assert info.value.rcvd.code == 4000
    assert "Beta API is no longer supported" in info.value.rcvd.reason


async def test_session_hits_its_maximum_duration() -> None:
    async with (
        Emulator(api_key=TEST_KEY, max_session_seconds=0.5) as emu,
        websockets.connect(ws_url(emu), additional_headers={"Authorization": f"Bearer {TEST_KEY}"}) as ws,
    ):
        assert json.loads(await ws.recv())["type"] == "session.created"
        error = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert error["error"]["code"] == "session_expired"
        with pytest.raises(websockets.ConnectionClosed) as info:
            await asyncio.wait_for(ws.recv(), 5)
    assert info.value.rcvd is not None and info.value.rcvd.code == 1001


WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city"],
    },
}


async def ask_with_tools(conn: Any, text: str, **response: Any) -> None:
    """A text session offering WEATHER, a user message, and a response asked for (with ``response`` params)."""
    await conn.recv()
    await conn.session.update(session={"type": "realtime", "output_modalities": ["text"], "tools": [WEATHER]})
    await until(conn, "session.updated")
    await conn.conversation.item.create(
        item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    )
    await conn.response.create(**({"response": response} if response else {}))


async def test_sdk_function_call_round_trip(emulator: Emulator) -> None:
    """The documented tool loop, with the official SDK: the text names the function, the "model" calls it with
    arguments that fit its schema, the client answers with a function_call_output, and the reply uses it."""
    client = AsyncOpenAI(base_url=emulator.base_url, api_key=await mint(emulator), max_retries=0)
    async with client.realtime.connect(model="gpt-realtime") as conn:
        await ask_with_tools(conn, "get weather, Paris")
        seen: list[str] = []
        args = await until(conn, "response.function_call_arguments.done", seen)
        done = await until(conn, "response.done", seen)
        call = done.response.output[0]
        assert call.type == "function_call" and call.name == "get_weather" and call.call_id == args.call_id
        assert json.loads(args.arguments) == {"city": "get weather, Paris", "unit": "celsius"}
        assert call.arguments == args.arguments and done.response.status == "completed"
        assert seen.index("response.output_item.added") < seen.index("response.function_call_arguments.delta")
        assert seen[-3:] == ["response.output_item.done", "conversation.item.done", "response.done"]

        await conn.conversation.item.create(
            item={"type": "function_call_output", "call_id": call.call_id, "output": '{"temperature": 21}'}
        )
        await conn.response.create()
        answer = await until(conn, "response.done")
    assert answer.response.output[0].type == "message"
    assert answer.response.output[0].content[0].text == 'The get_weather function returned {"temperature": 21}'


@pytest.mark.parametrize(
    ("tool_choice", "text", "called"),
    [
        ("auto", "hello there", None),  # the text does not name it: an ordinary reply
        ("required", "hello there", "get_weather"),
        ({"type": "function", "name": "get_weather"}, "hello there", "get_weather"),
        ("none", "get_weather please", None),
    ],
)
async def test_tool_choice_decides_whether_the_function_is_called(
    emulator: Emulator, tool_choice: Any, text: str, called: str | None
) -> None:
    client = AsyncOpenAI(base_url=emulator.base_url, api_key=await mint(emulator), max_retries=0)
    async with client.realtime.connect(model="gpt-realtime") as conn:
        await ask_with_tools(conn, text, tool_choice=tool_choice)
        done = await until(conn, "response.done")
    output = done.response.output[0]
    if called:
        assert output.type == "function_call" and output.name == called, output
    else:
        assert output.type == "message", output
