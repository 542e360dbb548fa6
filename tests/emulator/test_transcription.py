"""Transcription, as the service runs it: transcription sessions (``?intent=transcription`` or a key minted with
``session.type: "transcription"``) that never create responses, and the real event stream of input audio
transcription (deltas from the streaming models, ``.completed`` with usage, logprobs when asked) around the
emulator's placeholder transcript. Raw WebSockets against one emulator on 127.0.0.1; every event received is
validated with the SDK's ``RealtimeServerEvent``."""

from __future__ import annotations

import json
from typing import Any

import httpx
import numpy as np
import pytest
import websockets
from openai.types.realtime import RealtimeTranscriptionSessionCreateRequest, SessionCreatedEvent

from rtkit.audio.pcm import REALTIME_RATE, tone
from rtkit.emulator import Emulator
from tests.conftest import TEST_KEY, assert_valid_server_events
from tests.emulator.wire import Conn, append, shared_emulator

shared_loop = pytest.mark.asyncio(loop_scope="module")
pytestmark = shared_loop

DELTA = "conversation.item.input_audio_transcription.delta"
COMPLETED = "conversation.item.input_audio_transcription.completed"


emulator = shared_emulator()


async def connect(emulator: Emulator, query: str, key: str = TEST_KEY) -> Any:
    return websockets.connect(
        f"{emulator.websocket_url}/realtime?{query}", additional_headers={"Authorization": f"Bearer {key}"}
    )


def transcribe_with(model: str, include: list[str] | None = None) -> dict[str, Any]:
    """A transcription session's update: this model, push-to-talk (the client commits)."""
    session: dict[str, Any] = {
        "type": "transcription",
        "audio": {"input": {"transcription": {"model": model}, "turn_detection": None}},
    }
    if include is not None:
        session["include"] = include
    return {"type": "session.update", "session": session}


async def speak_and_commit(conn: Conn, seconds: float = 0.5) -> list[dict[str, Any]]:
    """Append ``seconds`` of a tone, commit, and return the transcription events up to ``.completed``."""
    await conn.send(append(tone(seconds)))
    await conn.send({"type": "input_audio_buffer.commit"})
    start = len(conn.seen)
    await conn.until(COMPLETED)
    return [e for e in conn.seen[start:] if e["type"] in (DELTA, COMPLETED)]


async def test_intent_transcription_opens_a_transcription_session_that_transcribes_speech_and_never_responds(
    emulator: Emulator,
) -> None:
    async with await connect(emulator, "intent=transcription") as ws:
        conn = Conn(ws)
        created = await conn.until("session.created")
        session = SessionCreatedEvent.model_validate(created).session
        assert isinstance(session, RealtimeTranscriptionSessionCreateRequest)
        assert created["session"]["object"] == "realtime.transcription_session"
        assert created["session"]["id"].startswith("sess_") and "model" not in created["session"]
        await conn.send(
            {
                "type": "session.update",
                "session": {
                    "type": "transcription",
                    "audio": {"input": {"transcription": {"model": "gpt-4o-transcribe"}}},
                },
            }
        )
        assert (await conn.until("session.updated"))["session"]["type"] == "transcription"
        # Server VAD (the default) commits the speech; the transcript follows, and no response is made.
        silence = np.zeros(REALTIME_RATE // 2, dtype=np.int16)
        await conn.send(append(np.concatenate([silence, tone(0.6), silence, silence])))
        committed = await conn.until("input_audio_buffer.committed")
        completed = await conn.until(COMPLETED)
        assert completed["item_id"] == committed["item_id"]
        assert completed["transcript"].startswith("[speech, ")
        await conn.send({"type": "input_audio_buffer.clear"})
        await conn.until("input_audio_buffer.cleared")
    assert not any(e["type"].startswith("response.") for e in conn.seen)
    assert_valid_server_events(conn.seen)


async def test_response_create_in_a_transcription_session_is_refused_and_the_session_goes_on(
    emulator: Emulator,
) -> None:
    async with httpx.AsyncClient() as http:
        minted = await http.post(
            f"{emulator.base_url}/realtime/client_secrets",
            headers={"Authorization": f"Bearer {TEST_KEY}"},
            json={"session": {"type": "transcription", "audio": {"input": {"transcription": {"model": "whisper-1"}}}}},
        )
    key = minted.json()["value"]
    async with await connect(emulator, "intent=transcription", key) as ws:
        conn = Conn(ws)
        assert (await conn.until("session.created"))["session"]["type"] == "transcription"
        error = await conn.error_for({"type": "response.create"})
        assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", "invalid_parameter", "type")
        assert error["message"].startswith("Passing a response.create event to a transcription session is not")
        await conn.send(
            {
                "type": "session.update",
                "session": {"type": "transcription", "audio": {"input": {"turn_detection": None}}},
            }
        )
        await conn.until("session.updated")
        events = await speak_and_commit(conn)
    assert [e["type"] for e in events] == [COMPLETED]  # the minted whisper-1 config holds
    assert not any(e["type"].startswith("response.") for e in conn.seen)
    assert_valid_server_events(conn.seen)


async def test_streaming_models_send_deltas_before_completed_and_whisper_1_sends_only_completed(
    emulator: Emulator,
) -> None:
    async with await connect(emulator, "intent=transcription") as ws:
        conn = Conn(ws)
        await conn.until("session.created")
        seen: dict[str, list[dict[str, Any]]] = {}
        for model in ("gpt-4o-transcribe", "gpt-4o-mini-transcribe", "gpt-transcribe", "whisper-1"):
            await conn.send(transcribe_with(model))
            await conn.until("session.updated")
            seen[model] = await speak_and_commit(conn, 0.5)
    for model in ("gpt-4o-transcribe", "gpt-4o-mini-transcribe", "gpt-transcribe"):
        *deltas, completed = seen[model]
        assert len(deltas) >= 2 and {d["type"] for d in deltas} == {DELTA}, model
        assert "".join(d["delta"] for d in deltas) == completed["transcript"] == "[speech, 0.50 s]"
        assert all(d["item_id"] == completed["item_id"] and d["content_index"] == 0 for d in deltas)
        usage = completed["usage"]  # billed by tokens: 1 per 100 ms of audio
        assert usage["type"] == "tokens" and usage["input_token_details"]["audio_tokens"] == 5
        assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
        assert "logprobs" not in completed  # not asked for
    assert [e["type"] for e in seen["whisper-1"]] == [COMPLETED]
    assert seen["whisper-1"][0]["usage"] == {"type": "duration", "seconds": 0.5}
    assert_valid_server_events(conn.seen)


async def test_include_logprobs_puts_logprobs_on_every_delta_and_on_completed(emulator: Emulator) -> None:
    async with await connect(emulator, "intent=transcription") as ws:
        conn = Conn(ws)
        await conn.until("session.created")
        await conn.send(transcribe_with("gpt-4o-mini-transcribe", ["item.input_audio_transcription.logprobs"]))
        updated = await conn.until("session.updated")
        assert updated["session"]["include"] == ["item.input_audio_transcription.logprobs"]
        *deltas, completed = await speak_and_commit(conn)
    for delta in deltas:
        [logprob] = delta["logprobs"]
        assert logprob["token"] == delta["delta"] and bytes(logprob["bytes"]) == delta["delta"].encode()
        assert logprob["logprob"] <= 0.0
    assert [p["token"] for p in completed["logprobs"]] == [d["delta"] for d in deltas]
    assert_valid_server_events(conn.seen)


async def test_a_realtime_session_transcribes_with_the_streaming_event_stream_too(emulator: Emulator) -> None:
    async with await connect(emulator, "model=gpt-realtime") as ws:
        conn = Conn(ws)
        assert (await conn.until("session.created"))["session"]["type"] == "realtime"
        await conn.send(
            {
                "type": "session.update",
                "session": {
                    "type": "realtime",
                    "include": ["item.input_audio_transcription.logprobs"],
                    "audio": {"input": {"transcription": {"model": "gpt-4o-transcribe"}, "turn_detection": None}},
                },
            }
        )
        await conn.until("session.updated")
        *deltas, completed = await speak_and_commit(conn)
        await conn.send({"type": "conversation.item.retrieve", "item_id": completed["item_id"]})
        item = (await conn.until("conversation.item.retrieved"))["item"]
    assert deltas and all(d["logprobs"] for d in deltas)
    assert item["content"][0]["transcript"] == completed["transcript"]
    assert_valid_server_events(conn.seen)


async def test_a_model_in_the_url_of_a_transcription_session_is_refused_with_the_services_words(
    emulator: Emulator,
) -> None:
    async with await connect(emulator, "intent=transcription&model=gpt-realtime") as ws:
        event = json.loads(await ws.recv())
        with pytest.raises(websockets.ConnectionClosed):
            await ws.recv()
    assert event["type"] == "error"
    assert event["error"]["message"] == "You must not provide a model parameter for transcription sessions."
    assert ws.close_code == 1008
    assert_valid_server_events([event])


async def test_a_transcription_update_on_a_realtime_session_is_refused_with_the_services_words(
    emulator: Emulator,
) -> None:
    async with await connect(emulator, "model=gpt-realtime") as ws:
        conn = Conn(ws)
        await conn.until("session.created")
        error = await conn.error_for(transcribe_with("gpt-4o-transcribe"))
    assert error["message"] == "Passing a transcription session update to a realtime session is not allowed."
    assert (error["code"], error["param"]) == ("invalid_parameter", "session.type")
    assert_valid_server_events(conn.seen)
