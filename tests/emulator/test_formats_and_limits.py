"""What the emulator carries out of what it accepts: G.711 audio both ways (``audio/pcmu``, ``audio/pcma``, 8 kHz,
one byte a sample), truncation counted on each format's own clock, ``conversation.item.truncate``'s
``content_index``, the 15 MiB append and the session's maximum duration. Raw WebSockets against one emulator on
127.0.0.1; every event received is validated with the SDK's ``RealtimeServerEvent``.

G.711 is coded here with the standard library's ``audioop`` directly, not with rtkit's own codec, so the two
ends agree on the standard rather than on one implementation.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import warnings
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
import websockets
from websockets.exceptions import ConnectionClosed

from rtkit.audio.media import resample
from rtkit.audio.pcm import PCM, REALTIME_RATE
from rtkit.emulator import Emulator
from rtkit.emulator.limits import MAX_APPEND_AUDIO_BYTES, session_expired
from rtkit.emulator.responders import voice_text
from tests.conftest import TEST_KEY, assert_valid_server_events
from tests.emulator.wire import Conn, open_conn, shared_emulator, text_item

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

shared_loop = pytest.mark.asyncio(loop_scope="module")
pytestmark = shared_loop

G711 = ["audio/pcmu", "audio/pcma"]
REPLY_TEXT = "Hello in eight kilohertz."


emulator = shared_emulator()


async def close(conn: Conn) -> None:
    await conn.ws.close()
    assert_valid_server_events(conn.seen)


def wire_format(kind: str) -> dict[str, Any]:
    return {"type": "audio/pcm", "rate": 24000} if kind == "audio/pcm" else {"type": kind}


def encode(pcm: PCM, kind: str) -> bytes:
    """24 kHz PCM in ``kind``, by the standard (the test's own encoder)."""
    if kind == "audio/pcm":
        return pcm.astype("<i2").tobytes()
    narrow = resample(pcm, REALTIME_RATE, 8000).astype("<i2").tobytes()
    return audioop.lin2ulaw(narrow, 2) if kind == "audio/pcmu" else audioop.lin2alaw(narrow, 2)


def decode_8k(data: bytes, kind: str) -> PCM:
    linear = audioop.ulaw2lin(data, 2) if kind == "audio/pcmu" else audioop.alaw2lin(data, 2)
    return np.frombuffer(linear, dtype="<i2").astype(np.int16)


def reply_bytes(events: list[dict[str, Any]]) -> bytes:
    return b"".join(base64.b64decode(e["delta"]) for e in events if e["type"] == "response.output_audio.delta")


def best_correlation(a: PCM, b: PCM, max_lag: int) -> float:
    """The normalised cross-correlation of two signals at their best alignment within ``max_lag`` samples."""
    x, y = a.astype(np.float64), b.astype(np.float64)
    best = 0.0
    for lag in range(-max_lag, max_lag + 1):
        xs, ys = (x[lag:], y) if lag >= 0 else (x, y[-lag:])
        n = min(xs.size, ys.size)
        xs, ys = xs[:n] - xs[:n].mean(), ys[:n] - ys[:n].mean()
        best = max(best, float(np.dot(xs, ys) / (np.linalg.norm(xs) * np.linalg.norm(ys) + 1e-9)))
    return best


async def configure(conn: Conn, kind: str, **audio_input: Any) -> dict[str, Any]:
    await conn.send(
        {
            "type": "session.update",
            "session": {
                "type": "realtime",
                "audio": {
                    "input": {"format": wire_format(kind), **audio_input},
                    "output": {"format": wire_format(kind)},
                },
            },
        }
    )
    return dict((await conn.until("session.updated"))["session"])


# -- G.711 in and out ---------------------------------------------------------------------------------------
@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def utterance() -> PCM:
    """A short spoken sentence between silences, 24 kHz."""
    speech = await voice_text("Hello there, how are you?")
    silence = np.zeros(int(0.4 * REALTIME_RATE), dtype=np.int16)
    return np.concatenate([silence, speech, silence, silence, silence])


async def spoken_turn(emulator: Emulator, kind: str, utterance: PCM) -> list[dict[str, Any]]:
    """The utterance appended in ``kind`` (in odd-sized chunks) with server VAD and transcription on, the reply
    in ``kind`` too: every event up to ``response.done``."""
    conn = await open_conn(emulator)
    session = await configure(conn, kind, transcription={"model": "whisper-1"}, turn_detection={"type": "server_vad"})
    assert session["audio"]["input"]["format"]["type"] == kind
    assert session["audio"]["output"]["format"]["type"] == kind
    data = encode(utterance, kind)
    for start in range(0, len(data), 1601):
        await conn.send(
            {"type": "input_audio_buffer.append", "audio": base64.b64encode(data[start : start + 1601]).decode()}
        )
    await conn.until("response.done")
    await close(conn)
    return conn.seen


def one(events: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [e for e in events if e["type"] == kind]
    assert len(found) == 1, f"{kind}: {len(found)}"
    return found[0]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pcm_turn(emulator: Emulator, utterance: PCM) -> list[dict[str, Any]]:
    return await spoken_turn(emulator, "audio/pcm", utterance)


@pytest.mark.parametrize("kind", G711)
async def test_speech_appended_as_g711_is_heard_where_the_same_pcm_is_and_the_echo_comes_back_in_g711(
    emulator: Emulator, utterance: PCM, pcm_turn: list[dict[str, Any]], kind: str
) -> None:
    events = await spoken_turn(emulator, kind, utterance)
    # The VAD hears the decoded speech at the same input positions (ms) as the same speech sent as PCM.
    for event_type, field in (
        ("input_audio_buffer.speech_started", "audio_start_ms"),
        ("input_audio_buffer.speech_stopped", "audio_end_ms"),
    ):
        assert abs(one(events, event_type)[field] - one(pcm_turn, event_type)[field]) <= 20
    heard = one(events, "conversation.item.input_audio_transcription.completed")["usage"]["seconds"]
    assert (
        abs(heard - one(pcm_turn, "conversation.item.input_audio_transcription.completed")["usage"]["seconds"]) <= 0.04
    )
    done = one(events, "response.done")["response"]
    assert done["status"] == "completed"
    assert one(events, "response.created")["response"]["audio"]["output"]["format"] == {"type": kind}
    assert done["audio"]["output"]["format"] == {"type": kind}
    # The echo is the user's audio: 8000 bytes a second of it, one byte a sample ...
    wire = reply_bytes(events)
    assert abs(len(wire) - heard * 8000) <= 8
    assert done["usage"]["output_token_details"]["audio_tokens"] == len(wire) // 8 // 50
    # ... and it is recognisably what the PCM session echoed.
    pcm_echo = np.frombuffer(reply_bytes(pcm_turn), dtype="<i2").astype(np.int16)
    assert best_correlation(decode_8k(wire, kind), resample(pcm_echo, REALTIME_RATE, 8000), max_lag=240) > 0.9


async def text_reply(conn: Conn, text: str = REPLY_TEXT) -> tuple[str, list[dict[str, Any]]]:
    """Ask for a spoken reply to a text turn: (the reply item's id, the response's events)."""
    start = len(conn.seen)
    await conn.send(text_item(text))
    await conn.send({"type": "response.create"})
    done = await conn.until("response.done")
    assert done["response"]["status"] == "completed"
    return done["response"]["output"][0]["id"], conn.seen[start:]


@pytest.mark.parametrize("kind", G711)
async def test_reply_audio_is_g711_at_8khz_one_byte_a_sample_of_the_spoken_reply(emulator: Emulator, kind: str) -> None:
    conn = await open_conn(emulator)
    await configure(conn, kind, turn_detection=None)
    _, events = await text_reply(conn)
    await close(conn)
    spoken = await voice_text(REPLY_TEXT)  # what the emulator says for this text, at 24 kHz
    wire = reply_bytes(events)
    assert len(wire) == spoken.size // 3  # duration * 8000 bytes
    decoded = decode_8k(wire, kind)
    assert best_correlation(decoded, resample(spoken, REALTIME_RATE, 8000), max_lag=8) > 0.95


@pytest.mark.parametrize("kind", ["audio/pcm", *G711])
async def test_truncate_counts_ms_on_the_formats_own_clock_and_deletes_the_unheard_transcript(
    emulator: Emulator, kind: str
) -> None:
    conn = await open_conn(emulator)
    await configure(conn, kind, turn_detection=None)
    item_id, events = await text_reply(conn)
    bytes_per_ms = 48 if kind == "audio/pcm" else 8
    produced_ms = len(reply_bytes(events)) // bytes_per_ms
    error = await conn.error_for(
        {"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0, "audio_end_ms": produced_ms + 1}
    )
    assert (error["code"], error["param"]) == ("invalid_value", "audio_end_ms")
    assert error["message"] == f"Audio content of {produced_ms}ms is already shorter than {produced_ms + 1}ms"
    heard = produced_ms // 2
    await conn.send(
        {"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0, "audio_end_ms": heard}
    )
    truncated = await conn.until("conversation.item.truncated")
    assert (truncated["item_id"], truncated["content_index"], truncated["audio_end_ms"]) == (item_id, 0, heard)
    await conn.send({"type": "conversation.item.retrieve", "item_id": item_id})
    item = (await conn.until("conversation.item.retrieved"))["item"]
    assert item["content"] == [{"type": "output_audio", "transcript": None}]
    await close(conn)


async def test_truncate_refuses_a_content_index_the_item_does_not_have(emulator: Emulator) -> None:
    conn = await open_conn(emulator)
    await configure(conn, "audio/pcm", turn_detection=None)
    item_id, _ = await text_reply(conn, "Short.")
    cases: list[tuple[Any, str]] = [
        (1, "invalid_value"),
        (-1, "integer_below_min_value"),
        ("0", "invalid_type"),
        (None, "missing_required_parameter"),
    ]
    for index, code in cases:
        event: dict[str, Any] = {"type": "conversation.item.truncate", "item_id": item_id, "audio_end_ms": 10}
        if index is not None:
            event["content_index"] = index
        error = await conn.error_for(event)
        assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", code, "content_index")
    assert error["message"] == "Missing required parameter: 'content_index'."
    await conn.send({"type": "conversation.item.retrieve", "item_id": item_id})
    assert (await conn.until("conversation.item.retrieved"))["item"]["content"][0]["transcript"] == "Short."
    await close(conn)


# -- limits -------------------------------------------------------------------------------------------------
async def test_an_append_of_15_mib_is_taken_and_a_bigger_one_is_an_error_on_a_connection_that_stays(
    emulator: Emulator,
) -> None:
    conn = await open_conn(emulator, compression=None, max_size=None)
    await configure(conn, "audio/pcm", turn_detection=None, transcription={"model": "whisper-1"})
    audio = np.zeros(MAX_APPEND_AUDIO_BYTES // 2, dtype=np.int16)
    audio[::50] = 1000
    await conn.ws.send(
        json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(audio.tobytes()).decode()})
    )
    await conn.send({"type": "input_audio_buffer.commit"})
    completed = await conn.until("conversation.item.input_audio_transcription.completed", timeout=30)
    assert completed["usage"]["seconds"] == MAX_APPEND_AUDIO_BYTES / 48_000  # every byte of it, as 24 kHz PCM16
    assert not any(e["type"] == "error" for e in conn.seen)
    too_big = base64.b64encode(np.zeros(MAX_APPEND_AUDIO_BYTES // 2 + 1, dtype=np.int16).tobytes()).decode()
    error = await conn.error_for({"type": "input_audio_buffer.append", "audio": too_big})
    assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", "invalid_value", "audio")
    assert f"{MAX_APPEND_AUDIO_BYTES + 2} bytes" in error["message"] and "15 MiB" in error["message"]
    await conn.send({"type": "input_audio_buffer.clear"})
    await conn.until("input_audio_buffer.cleared")
    await close(conn)


async def test_session_ends_at_its_cap_with_expires_at_announced_and_the_duration_stated() -> None:
    assert session_expired(3600).message == "Your session hit the maximum duration of 60 minutes."
    async with Emulator(api_key=TEST_KEY, max_session_seconds=1.5) as emu:
        opened = time.time()
        async with websockets.connect(
            f"{emu.websocket_url}/realtime?model=gpt-realtime",
            additional_headers={"Authorization": f"Bearer {TEST_KEY}"},
        ) as ws:
            conn = Conn(ws)
            created = await conn.until("session.created")
            assert opened - 1 <= created["session"]["expires_at"] <= opened + 1.5
            await conn.send({"type": "session.update", "session": {"type": "realtime", "instructions": "Brief."}})
            updated = await conn.until("session.updated")
            assert updated["session"]["expires_at"] == created["session"]["expires_at"]
            error = (await conn.until("error", timeout=5))["error"]
            reason = "Your session hit the maximum duration of 1.5 seconds."
            assert (error["code"], error["message"]) == ("session_expired", reason)
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 5)
            assert closed.value.rcvd is not None
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1001, reason)
        assert_valid_server_events(conn.seen)
