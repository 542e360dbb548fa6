"""Client events the engine must refuse, each with the service's exact error, on a connection that stays open."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
import websockets

from rtkit.audio.pcm import REALTIME_RATE, tone
from rtkit.emulator import Emulator
from tests.conftest import TEST_KEY
from tests.emulator.wire import Conn, append, open_conn, text_item


@pytest.fixture
async def conn(emulator: Emulator) -> AsyncIterator[Conn]:
    c = await open_conn(emulator)
    async with c.ws:
        yield c


async def test_beta_field_in_session_update_is_rejected_whole(conn: Conn) -> None:
    error = await conn.error_for(
        {"type": "session.update", "session": {"type": "realtime", "voice": "ash", "instructions": "x"}}
    )
    assert (error["type"], error["code"], error["param"]) == (
        "invalid_request_error",
        "unknown_parameter",
        "session.voice",
    )
    assert error["message"] == "Unknown parameter: 'session.voice'."
    await conn.send({"type": "session.update", "session": {"type": "realtime"}})
    assert (await conn.until("session.updated"))["session"]["instructions"] != "x"


async def test_agents_sdk_session_config_is_accepted(conn: Conn) -> None:
    await conn.send({"type": "session.update", "session": {"type": "realtime", "tracing": "auto"}})
    await conn.until("session.updated")
    await conn.send(
        {
            "type": "session.update",
            "session": {
                "type": "realtime",
                "model": "gpt-realtime",
                "output_modalities": ["audio"],
                "audio": {
                    "input": {
                        "format": {"type": "audio/pcm", "rate": 24000},
                        "transcription": {"model": "gpt-4o-mini-transcribe"},
                        "noise_reduction": None,
                        "turn_detection": {"type": "semantic_vad"},
                    },
                    "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "marin", "speed": 1},
                },
            },
        }
    )
    session = (await conn.until("session.updated"))["session"]
    assert session["audio"]["input"]["turn_detection"]["type"] == "semantic_vad"
    assert session["audio"]["input"]["transcription"]["model"] == "gpt-4o-mini-transcribe"


async def test_unknown_event_type_names_the_event(conn: Conn) -> None:
    error = await conn.error_for({"type": "session.explode"})
    assert (error["code"], error["param"]) == ("invalid_value", "type")


async def test_invalid_json_gets_an_error_and_the_connection_stays_open(conn: Conn) -> None:
    await conn.ws.send("{this is not json")
    assert (await conn.until("error"))["error"]["code"] == "invalid_json"
    await conn.send({"type": "input_audio_buffer.clear"})
    await conn.until("input_audio_buffer.cleared")


async def test_commit_with_too_little_audio(conn: Conn) -> None:
    await conn.send(
        {
            "type": "session.update",
            "session": {"type": "realtime", "audio": {"input": {"turn_detection": None}}},
        }
    )
    await conn.until("session.updated")
    await conn.send(append(tone(0.05)))
    error = await conn.error_for({"type": "input_audio_buffer.commit"})
    assert error["code"] == "input_audio_buffer_commit_empty"
    assert error["message"].endswith("but buffer only has 50.00ms of audio.")


async def test_push_to_talk_commit_then_response(conn: Conn) -> None:
    await conn.send(
        {
            "type": "session.update",
            "session": {"type": "realtime", "audio": {"input": {"turn_detection": None}}},
        }
    )
    await conn.until("session.updated")
    await conn.send(append(tone(0.4)))
    await conn.send({"type": "input_audio_buffer.commit"})
    committed = await conn.until("input_audio_buffer.committed")
    await conn.send({"type": "response.create"})
    done = await conn.until("response.done")
    assert done["response"]["status"] == "completed"
    assert committed["item_id"].startswith("item_")
    assert not any(e["type"] == "input_audio_buffer.speech_started" for e in conn.seen)


async def test_second_response_while_one_is_active(conn: Conn) -> None:
    await conn.send(text_item("a fairly long sentence so that the reply takes a while to generate"))
    await conn.send({"type": "response.create"})
    created = await conn.until("response.created")
    error = await conn.error_for({"type": "response.create"})
    assert error["code"] == "conversation_already_has_active_response"
    assert error["message"] == (
        f"Conversation already has an active response in progress: {created['response']['id']}. "
        "Wait until the response is finished before creating a new one."
    )


async def test_response_cancel_ends_the_response_as_cancelled(conn: Conn) -> None:
    await conn.send(text_item("a fairly long sentence so that the reply takes a while to generate"))
    await conn.send({"type": "response.create"})
    await conn.until("response.output_audio.delta")
    await conn.send({"type": "response.cancel"})
    done = await conn.until("response.done")
    assert done["response"]["status"] == "cancelled"
    assert done["response"]["status_details"] == {"type": "cancelled", "reason": "client_cancelled"}
    error = await conn.error_for({"type": "response.cancel"})
    assert error["code"] == "response_cancel_not_active"


async def test_truncate_errors_match_the_service(conn: Conn) -> None:
    await conn.send(text_item("hello"))
    user_item = (await conn.until("conversation.item.done"))["item"]["id"]
    error = await conn.error_for(
        {"type": "conversation.item.truncate", "item_id": user_item, "content_index": 0, "audio_end_ms": 10}
    )
    assert (error["code"], error["message"]) == (
        "unsupported_content_type",
        "Only model output audio messages can be truncated",
    )
    await conn.send({"type": "response.create"})
    done = await conn.until("response.done")
    reply = done["response"]["output"][0]["id"]
    error = await conn.error_for(
        {"type": "conversation.item.truncate", "item_id": reply, "content_index": 0, "audio_end_ms": 999_999}
    )
    assert error["code"] == "invalid_value"
    assert error["message"].startswith("Audio content of ") and error["message"].endswith(
        "ms is already shorter than 999999ms"
    )
    await conn.send({"type": "conversation.item.truncate", "item_id": reply, "content_index": 0, "audio_end_ms": 100})
    assert (await conn.until("conversation.item.truncated"))["audio_end_ms"] == 100


async def test_assistant_item_with_audio_only_is_rejected(conn: Conn) -> None:
    error = await conn.error_for(
        {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_audio", "audio": ""}],
            },
        }
    )
    assert (error["code"], error["param"]) == ("missing_required_parameter", "item.content[0].text")
    assert error["message"] == "Missing required parameter: 'item.content[0].text'."


async def test_items_can_be_retrieved_and_deleted(conn: Conn) -> None:
    await conn.send(text_item("remember me"))
    item_id = (await conn.until("conversation.item.done"))["item"]["id"]
    await conn.send({"type": "conversation.item.retrieve", "item_id": item_id})
    assert (await conn.until("conversation.item.retrieved"))["item"]["content"][0]["text"] == "remember me"
    await conn.send({"type": "conversation.item.delete", "item_id": item_id})
    assert (await conn.until("conversation.item.deleted"))["item_id"] == item_id
    error = await conn.error_for({"type": "conversation.item.retrieve", "item_id": item_id})
    assert error["code"] == "item_not_found"


async def test_transcription_events_are_answered_by_retrieve(conn: Conn) -> None:
    await conn.send(
        {
            "type": "session.update",
            "session": {
                "type": "realtime",
                "audio": {
                    "input": {
                        "transcription": {"model": "gpt-4o-mini-transcribe"},
                        "turn_detection": {"type": "server_vad", "create_response": False},
                    }
                },
            },
        }
    )
    await conn.until("session.updated")
    silence = np.zeros(REALTIME_RATE // 2, dtype=np.int16)
    await conn.send(append(np.concatenate([silence, tone(0.6), silence, silence])))
    completed = await conn.until("conversation.item.input_audio_transcription.completed")
    await conn.send({"type": "conversation.item.retrieve", "item_id": completed["item_id"]})
    item = (await conn.until("conversation.item.retrieved"))["item"]
    assert item["content"][0]["transcript"] == completed["transcript"]
    assert not any(e["type"] == "response.created" for e in conn.seen)  # create_response: false


async def test_unknown_model_fails_the_response_with_model_not_found(emulator: Emulator) -> None:
    async with websockets.connect(
        f"{emulator.websocket_url}/realtime?model=gpt-9-imaginary",
        additional_headers={"Authorization": f"Bearer {TEST_KEY}"},
    ) as ws:
        c = Conn(ws)
        await c.until("session.created")
        await c.send(text_item("hi"))
        await c.send({"type": "response.create"})
        done = await c.until("response.done")
    assert done["response"]["status"] == "failed"
    error = done["response"]["status_details"]["error"]
    assert error["code"] == "model_not_found"
    assert error["message"] == "The model `gpt-9-imaginary` does not exist or you do not have access to it."


async def test_barge_in_cancels_the_active_response(conn: Conn) -> None:
    silence = np.zeros(REALTIME_RATE, dtype=np.int16)
    await conn.send(
        {
            "type": "session.update",
            "session": {
                "type": "realtime",
                "audio": {"input": {"turn_detection": {"type": "server_vad", "silence_duration_ms": 300}}},
            },
        }
    )
    await conn.until("session.updated")
    await conn.send(append(np.concatenate([silence, tone(2.0), silence])))
    await conn.until("response.output_audio.delta")
    await conn.send(append(np.concatenate([tone(0.5), silence])))
    started = await conn.until("input_audio_buffer.speech_started")
    done = await conn.until("response.done")
    assert done["response"]["status"] == "cancelled"
    assert done["response"]["status_details"]["reason"] == "turn_detected"
    assert started["item_id"].startswith("item_")


def idle_vad(**fields: Any) -> dict[str, Any]:
    detection = {"type": "server_vad", "silence_duration_ms": 300, "idle_timeout_ms": 2000}
    return {
        "type": "session.update",
        "session": {"type": "realtime", **fields, "audio": {"input": {"turn_detection": detection}}},
    }


async def test_idle_timeout_prompts_a_response_after_silence_since_the_last_reply(conn: Conn) -> None:
    await conn.send(idle_vad(output_modalities=["text"]))
    await conn.until("session.updated")
    await conn.send(text_item("Hello?"))
    await conn.send({"type": "response.create"})
    await conn.until("response.done")  # a text reply, heard at once: the idle clock starts at input 0 ms
    await conn.send(append(np.zeros(int(1.5 * REALTIME_RATE), dtype=np.int16)))
    await conn.send(append(np.zeros(REALTIME_RATE, dtype=np.int16)))
    triggered = await conn.until("input_audio_buffer.timeout_triggered")
    assert not [e for e in conn.seen if e["type"] == "input_audio_buffer.speech_started"]
    assert triggered["audio_start_ms"] == 0 and 2000 <= triggered["audio_end_ms"] <= 2500, triggered
    committed = await conn.until("input_audio_buffer.committed")
    assert committed["item_id"] == triggered["item_id"]
    done = await conn.until("response.done")
    assert done["response"]["status"] == "completed"
    # Once is enough: the clock starts again only after this reply, and speech stops it.
    await conn.send(append(np.concatenate([np.zeros(REALTIME_RATE, dtype=np.int16), tone(0.5)])))
    await conn.send(append(np.zeros(int(0.5 * REALTIME_RATE), dtype=np.int16)))
    await conn.until("input_audio_buffer.speech_stopped")
    await conn.until("response.done")
    after = conn.seen[conn.seen.index(done) :]
    assert [e["type"] for e in after].count("input_audio_buffer.timeout_triggered") == 0


async def test_idle_timeout_counts_from_the_end_of_the_replys_playback(conn: Conn) -> None:
    """Over a WebSocket the client plays the reply after ``response.done``: silence counts from the end of it."""
    await conn.send(idle_vad())
    await conn.until("session.updated")
    await conn.send(text_item("Say something."))
    await conn.send({"type": "response.create"})
    done = await conn.until("response.done")
    reply_ms = sum(len(base64.b64decode(e["delta"])) for e in conn.seen if e["type"] == "response.output_audio.delta")
    reply_ms //= 2 * REALTIME_RATE // 1000
    assert reply_ms > 0, done
    await conn.send(append(np.zeros((reply_ms + 2500) * REALTIME_RATE // 1000, dtype=np.int16)))
    triggered = await conn.until("input_audio_buffer.timeout_triggered")
    assert abs(triggered["audio_start_ms"] - reply_ms) <= 1, (triggered, reply_ms)
    assert triggered["audio_end_ms"] - triggered["audio_start_ms"] >= 2000
