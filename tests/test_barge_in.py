"""Barge-in from the kernel's session against the real emulator: the user talks over a long reply, playback
stops, and the API is told what was *played* (not what arrived), so its transcript matches what was heard."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import numpy as np
import pytest

from rtkit.audio.pcm import PCM, REALTIME_RATE, tone
from rtkit.audio.sinks import RecorderSink
from rtkit.audio.sources import PcmSource
from rtkit.emulator import Emulator
from rtkit.emulator.responders import ToneResponder
from rtkit.keys import IssuerKeys
from rtkit.metrics import BargeIn
from rtkit.session import RealtimeSession
from rtkit.tokens import TokenIssuer
from tests.conftest import TEST_KEY, assert_valid_server_events

REPLY_S = 6.0
FRAME_MS = 20


def silence(seconds: float) -> PCM:
    return np.zeros(int(seconds * REALTIME_RATE), dtype=np.int16)


#: A question, a pause long enough for the VAD to end the turn and the reply to start, then the user talks
#: again about two seconds into a six-second reply.
TALK_OVER = np.concatenate([silence(0.3), tone(0.8, 300.0), silence(2.5), tone(1.0, 300.0), silence(3.0)])


@pytest.fixture
async def long_replies() -> AsyncIterator[Emulator]:
    """Every reply a steady tone of ``REPLY_S``, generated at twice real time (WebSocket audio arrives ahead)."""
    async with Emulator(api_key=TEST_KEY, responder=ToneResponder(seconds=REPLY_S)) as emu:
        yield emu
    assert_valid_server_events(list(emu.server_events))


def voiced_ms(pcm: PCM, rate: int) -> float:
    """Length of the reply's tone in a recording, from its first loud sample to its last."""
    loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > 1000)
    return 0.0 if loud.size == 0 else (loud[-1] - loud[0] + 1) * 1000 / rate


async def talk_over_a_reply(
    emu: Emulator,
    transport: Any,
    sink: RecorderSink,
    interrupt_response: bool,
    inside: Callable[[RealtimeSession], Awaitable[None]] | None = None,
) -> tuple[RealtimeSession, list[dict[str, Any]], BargeIn]:
    """``inside`` runs once the truncation is done, while the session is still connected."""
    async with TokenIssuer(TEST_KEY, base_url=emu.base_url) as issuer:
        config = {
            "audio": {
                "input": {
                    "turn_detection": {
                        "type": "server_vad",
                        "silence_duration_ms": 500,
                        "interrupt_response": interrupt_response,
                    }
                }
            }
        }
        session = RealtimeSession(
            IssuerKeys(issuer),
            config,
            base_url=emu.base_url,
            source=PcmSource(TALK_OVER, REALTIME_RATE),
            sink=sink,
            transport=transport,
        )
        seen: list[dict[str, Any]] = []
        session.events.on(seen.append)
        async with session:
            truncated = await session.wait_for("conversation.item.truncated", timeout=20)
            if not any(e["type"] == "response.done" for e in seen):
                await session.wait_for("response.done", timeout=10)
            await asyncio.sleep(0.5)  # any error the server would send about the client's events comes by now
            if inside is not None:
                await inside(session)
        (barge_in,) = session.metrics.barge_ins
        assert truncated["item_id"] == barge_in.item_id and truncated["audio_end_ms"] == barge_in.played_ms
        return session, seen, barge_in


@pytest.mark.parametrize("transport", ["webrtc", "websocket"])
async def test_talking_over_a_reply_truncates_it_to_what_the_sink_played(
    long_replies: Emulator, transport: Any
) -> None:
    # Over the WebSocket the sink plays in real time, as a speaker would, while the reply arrives twice as fast.
    sink = RecorderSink(REALTIME_RATE, realtime=transport == "websocket")
    session, seen, barge_in = await talk_over_a_reply(long_replies, transport, sink, interrupt_response=True)
    types = [e["type"] for e in seen]
    assert "error" not in types, [e for e in seen if e["type"] == "error"]
    assert barge_in.truncated and not barge_in.cancelled, barge_in
    heard = voiced_ms(sink.pcm, sink.sample_rate)
    # The emulator pads a reply to whole 20 ms frames on the track: one frame of its framing, one of ours.
    tolerance = FRAME_MS + (FRAME_MS if transport == "webrtc" else 0)
    assert abs(barge_in.played_ms - heard) <= tolerance, (barge_in, heard)
    assert 1000 < barge_in.played_ms < REPLY_S * 1000 - 1000, barge_in
    if transport == "websocket":
        assert barge_in.produced_ms is not None and barge_in.played_ms < barge_in.produced_ms - 500, barge_in
    else:
        assert "output_audio_buffer.cleared" in types
    done = next(e for e in seen if e["type"] == "response.done")
    assert done["response"]["status"] == "cancelled"
    assert done["response"]["status_details"]["reason"] == "turn_detected"
    notice = next(e for e in seen if e["type"] == "rtkit.barge_in")
    assert notice["item_id"] == barge_in.item_id and notice["played_ms"] == barge_in.played_ms
    turn = session.metrics.turns[0]
    assert turn.heard_ms == barge_in.played_ms, turn


@pytest.mark.parametrize("transport", ["webrtc", "websocket"])
async def test_without_interrupt_response_the_client_cancels_the_reply_itself(
    long_replies: Emulator, transport: Any
) -> None:
    sink = RecorderSink(REALTIME_RATE, realtime=transport == "websocket")
    _, seen, barge_in = await talk_over_a_reply(long_replies, transport, sink, interrupt_response=False)
    assert "error" not in [e["type"] for e in seen], [e for e in seen if e["type"] == "error"]
    assert barge_in.truncated and barge_in.cancelled, barge_in
    done = next(e for e in seen if e["type"] == "response.done")
    assert done["response"]["status"] == "cancelled"
    assert done["response"]["status_details"]["reason"] == "client_cancelled"
    assert abs(barge_in.played_ms - voiced_ms(sink.pcm, sink.sample_rate)) <= 2 * FRAME_MS, barge_in


async def test_speech_after_the_reply_was_heard_in_full_sends_nothing() -> None:
    """Nothing is playing, so there is nothing to stop or truncate: no client event that could earn an error."""
    short = Emulator(api_key=TEST_KEY, responder=ToneResponder(seconds=0.5))
    async with short:
        sink = RecorderSink(REALTIME_RATE)
        async with TokenIssuer(TEST_KEY, base_url=short.base_url) as issuer:
            session = RealtimeSession(
                IssuerKeys(issuer),
                base_url=short.base_url,
                source=PcmSource(TALK_OVER, REALTIME_RATE),
                sink=sink,
                transport="websocket",
            )
            seen: list[dict[str, Any]] = []
            session.events.on(seen.append)
            async with session:
                await session.wait_for("input_audio_buffer.speech_started", timeout=10)
                await session.wait_for("input_audio_buffer.speech_started", timeout=10)
                await asyncio.sleep(0.5)
    types = [e["type"] for e in seen]
    assert "error" not in types and "rtkit.barge_in" not in types and not session.metrics.barge_ins, types


async def test_a_truncated_reply_keeps_only_what_was_heard_on_both_sides(long_replies: Emulator) -> None:
    """The server deletes the unheard transcript (as the API does); the call's history keeps the heard part,
    which is what a resumption restores."""
    kept: dict[str, Any] = {}

    async def retrieve(session: RealtimeSession) -> None:
        (reply,) = [t for t in session.conversation.turns if t.role == "assistant"]
        session.send({"type": "conversation.item.retrieve", "item_id": reply.item_ids[reply.session_id]})
        kept.update((await session.wait_for("conversation.item.retrieved", timeout=10))["item"])

    sink = RecorderSink(REALTIME_RATE)
    session, _, barge_in = await talk_over_a_reply(long_replies, "webrtc", sink, True, inside=retrieve)
    assert kept["content"][0]["transcript"] is None, kept
    (reply,) = [t for t in session.conversation.turns if t.role == "assistant"]
    assert reply.truncated_ms == barge_in.played_ms and reply.audio_ms and reply.text, reply
    # The whole reply is billed (one audio token per 50 ms) though only a part was played.
    assert reply.audio_ms > reply.truncated_ms
    heard = reply.heard_text
    assert heard is not None and reply.text.startswith(heard) and len(heard) < len(reply.text), (heard, reply.text)
    assert reply.as_item("item_restored")["content"][0]["text"] == heard
    # The record says so too: interrupted, where, and what was heard.
    assert reply.interrupted and reply.ended_at is not None and reply.ended_at >= reply.at
    notes = session.conversation.to_markdown()
    assert f"*cut at {reply.truncated_ms} ms of {reply.audio_ms} ms; heard:* {heard}" in notes, notes
    from rtkit.widgets.transcript import Transcript

    shown = Transcript(session).html()
    assert f"✂ cut at {reply.truncated_ms} ms of {reply.audio_ms} ms; heard: “{heard}”" in shown, shown
