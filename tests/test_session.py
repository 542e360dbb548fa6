"""RealtimeSession against the real emulator: both transports, fallback, reconnection, and every failure."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from rtkit.audio.meter import Level
from rtkit.audio.pcm import PCM, REALTIME_RATE
from rtkit.audio.sinks import RecorderSink
from rtkit.audio.sources import PcmSource
from rtkit.emulator import Emulator
from rtkit.errors import (
    InvalidRequestError,
    NetworkLostError,
    RateLimitedError,
    TokenExpiredError,
    UpstreamError,
    WebRTCUnavailableError,
)
from rtkit.keys import IssuerKeys, StaticKey
from rtkit.schema import RealtimeSessionConfig
from rtkit.session import RealtimeSession, ReconnectPolicy, StateChange
from rtkit.tokens import EphemeralKey, TokenIssuer
from tests.conftest import TEST_KEY

FAST_RECONNECT = ReconnectPolicy(max_attempts=3, initial_delay=0.05, max_delay=0.2)


@pytest.fixture
async def issuer(emulator: Emulator) -> AsyncIterator[TokenIssuer]:
    async with TokenIssuer(TEST_KEY, base_url=emulator.base_url, backoff_initial=0.01) as tokens:
        yield tokens


def record_states(session: RealtimeSession) -> list[StateChange]:
    seen: list[StateChange] = []
    session.states.on(seen.append)
    return seen


def record_levels(session: RealtimeSession) -> tuple[list[Level], list[Level]]:
    ins: list[Level] = []
    outs: list[Level] = []
    session.levels.on(ins.append)
    session.output_levels.on(outs.append)
    return ins, outs


@pytest.mark.parametrize("transport", ["webrtc", "websocket"])
async def test_a_spoken_turn_end_to_end(emulator: Emulator, issuer: TokenIssuer, speech: PCM, transport: Any) -> None:
    sink = RecorderSink(24_000)
    session = RealtimeSession(
        IssuerKeys(issuer),
        RealtimeSessionConfig(type="realtime", instructions="Echo me."),
        base_url=emulator.base_url,
        source=PcmSource(speech, REALTIME_RATE, lead_seconds=0.5),
        sink=sink,
        transport=transport,
    )
    states = record_states(session)
    ins, outs = record_levels(session)
    async with session:
        assert session.state == "connected"
        done = await session.wait_for("response.done", timeout=30)
        if transport == "webrtc":
            await session.wait_for("output_audio_buffer.stopped", timeout=30)
        else:
            await asyncio.sleep(0.2)
    assert [s.state for s in states] == ["connecting", "connected", "disconnected"]
    assert done["response"]["status"] == "completed"
    spoken = speech.size / REALTIME_RATE
    assert sink.seconds > spoken * 0.8
    assert max(level.rms_dbfs for level in ins) > -30 and max(level.rms_dbfs for level in outs) > -30
    (connect,) = session.metrics.connects
    assert connect.ok and connect.transport == transport and connect.session_created_ms is not None
    (turn,) = session.metrics.turns
    assert turn.status == "completed"
    # speech_stopped and response.created can arrive in one read of the socket: equal times are fine
    assert 0 < turn.speech_stopped_ms <= turn.response_created_ms < turn.first_audio_ms < turn.reply_end_ms
    assert turn.reply_seconds == pytest.approx(spoken, rel=0.3)  # the echo of what was said
    rows = session.metrics.to_records()
    assert [r["kind"] for r in rows] == ["connect", "turn"]


async def test_text_turn_and_event_iteration(emulator: Emulator, issuer: TokenIssuer) -> None:
    async with RealtimeSession(
        IssuerKeys(issuer), {"output_modalities": ["text"]}, base_url=emulator.base_url, transport="webrtc"
    ) as session:
        seen: list[str] = []

        async def collect() -> dict[str, Any]:
            async for event in session:
                seen.append(event["type"])
                if event["type"] == "response.done":
                    return event
            raise AssertionError("stream ended")

        task = asyncio.create_task(collect())
        await asyncio.sleep(0)
        session.send_text("what a lovely day")
        done = await asyncio.wait_for(task, 10)
    assert done["response"]["output"][0]["content"][0]["text"] == "what a lovely day"
    assert "response.output_text.delta" in seen


@pytest.mark.parametrize("transport", ["webrtc", "websocket"])
async def test_a_function_call_is_answered_with_send_function_output(
    emulator: Emulator, issuer: TokenIssuer, transport: Any
) -> None:
    tool = {"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {}}}
    config = {"output_modalities": ["text"], "tools": [tool]}
    async with RealtimeSession(IssuerKeys(issuer), config, base_url=emulator.base_url, transport=transport) as session:
        called = asyncio.ensure_future(session.wait_for("response.function_call_arguments.done"))
        call_done = asyncio.ensure_future(session.wait_for("response.done"))
        session.send_text("please lookup the answer")
        call, first = await called, await call_done
        answered = asyncio.ensure_future(session.wait_for("response.done"))
        session.send_function_output(call["call_id"], {"answer": 42})
        done = await answered
    assert call["name"] == "lookup" and call["arguments"] == "{}"
    assert first["response"]["output"][0]["type"] == "function_call"
    assert done["response"]["output"][0]["content"][0]["text"] == 'The lookup function returned {"answer": 42}'


async def test_auto_falls_back_to_websocket_when_webrtc_cannot_connect(emulator: Emulator, issuer: TokenIssuer) -> None:
    emulator.faults.block_media = True
    session = RealtimeSession(IssuerKeys(issuer), base_url=emulator.base_url, transport="auto", connect_timeout=2.0)
    notices: list[dict[str, Any]] = []
    session.events.on(lambda e: notices.append(e) if e["type"].startswith("rtkit.") else None)
    async with session:
        assert session.transport is not None and session.transport.name == "websocket"
        session.send_text("still here")
        assert (await session.wait_for("response.done", 10))["response"]["status"] == "completed"
    assert notices[0]["type"] == "rtkit.transport_fallback"
    assert notices[0]["from_transport"] == "webrtc" and "within 2 s" in notices[0]["reason"]


async def test_webrtc_only_reports_webrtc_unavailable(emulator: Emulator, issuer: TokenIssuer) -> None:
    emulator.faults.block_media = True
    session = RealtimeSession(IssuerKeys(issuer), base_url=emulator.base_url, transport="webrtc", connect_timeout=1.0)
    with pytest.raises(WebRTCUnavailableError):
        await session.connect()
    assert session.state == "failed"
    await session.close()


@pytest.mark.parametrize("transport", ["webrtc", "websocket"])
async def test_expired_fixed_key_fails_with_token_expired(
    emulator: Emulator, issuer: TokenIssuer, transport: Any
) -> None:
    key = await issuer.issue()
    emulator.keys.expire(key.value)
    session = RealtimeSession(StaticKey(key.value), base_url=emulator.base_url, transport=transport)
    states = record_states(session)
    with pytest.raises(TokenExpiredError) as info:
        await session.connect()
    assert "fixed key cannot reconnect" in str(info.value)
    assert [s.state for s in states] == ["connecting", "failed"]
    assert states[-1].error is info.value


async def test_an_expired_key_costs_exactly_one_fresh_mint(emulator: Emulator, issuer: TokenIssuer) -> None:
    calls = 0

    async def first_one_expired() -> EphemeralKey:
        nonlocal calls
        calls += 1
        key = await issuer.issue()
        if calls == 1:
            emulator.keys.expire(key.value)
        return key

    async with RealtimeSession(first_one_expired, base_url=emulator.base_url, transport="webrtc") as session:
        assert session.state == "connected"
    assert calls == 2


async def test_dropped_call_reconnects_with_a_fresh_key_and_the_same_config(
    emulator: Emulator, issuer: TokenIssuer
) -> None:
    session = RealtimeSession(
        IssuerKeys(issuer),
        {"instructions": "Keep this."},
        base_url=emulator.base_url,
        transport="webrtc",
        reconnect=FAST_RECONNECT,
    )
    states = record_states(session)
    async with session:
        first_key = session.key
        await emulator.drop_call()
        change = await session.wait_for_state("connected", timeout=15)
        assert change.attempt >= 1
        assert session.key is not None and first_key is not None and session.key.value != first_key.value
        assert [c.engine.session.instructions for c in emulator.calls.values()] == ["Keep this."]
    assert [s.state for s in states][:4] == ["connecting", "connected", "disconnected", "connecting"]
    assert emulator.keys.issued == 2
    assert [r.attempt for r in session.metrics.connects] == [1, change.attempt + 1]


async def test_reconnection_gives_up_after_the_limit() -> None:
    emu = await Emulator(api_key=TEST_KEY).start()
    async with TokenIssuer(TEST_KEY, base_url=emu.base_url, max_attempts=1) as tokens:
        session = RealtimeSession(
            IssuerKeys(tokens), base_url=emu.base_url, transport="websocket", reconnect=FAST_RECONNECT
        )
        await session.connect()
        await emu.stop()  # the whole service goes away mid-call
        failed = await session.wait_for_state("failed", timeout=15)
    assert isinstance(failed.error, NetworkLostError)
    assert "Unable to reconnect after 3 attempts" in str(failed.error)
    assert failed.attempt == 3
    await session.close()


async def test_upstream_down_at_mint_is_an_upstream_error(emulator: Emulator, issuer: TokenIssuer) -> None:
    emulator.faults.fail_next_mints(10, status=503, retry_after=0)
    issuer.max_attempts = 2
    session = RealtimeSession(IssuerKeys(issuer), base_url=emulator.base_url)
    with pytest.raises(UpstreamError):
        await session.connect()
    assert session.state == "failed"


@pytest.mark.parametrize("transport", ["webrtc", "websocket"])
async def test_rate_limited_call_is_reported_as_such_not_as_bad_sdp(
    emulator: Emulator, issuer: TokenIssuer, transport: Any
) -> None:
    emulator.faults.reject_next_calls(1, status=429, retry_after=2)
    session = RealtimeSession(IssuerKeys(issuer), base_url=emulator.base_url, transport=transport)
    with pytest.raises(RateLimitedError) as info:
        await session.connect()
    assert info.value.retry_after == 2


async def test_a_refused_session_config_is_an_invalid_request(emulator: Emulator, issuer: TokenIssuer) -> None:
    session = RealtimeSession(IssuerKeys(issuer), {"voice": "marin"}, base_url=emulator.base_url, transport="websocket")
    with pytest.raises(InvalidRequestError, match=r"session\.voice"):
        await session.connect()


async def test_barge_in_by_hand_clears_the_models_voice(emulator: Emulator, issuer: TokenIssuer) -> None:
    async with RealtimeSession(IssuerKeys(issuer), base_url=emulator.base_url, transport="webrtc") as session:
        session.send_text("a long sentence that takes the emulator a few seconds to say out loud in full")
        await session.wait_for("output_audio_buffer.started", timeout=10)
        session.cancel_response()
        session.clear_output_audio()
        done = await session.wait_for("response.done", timeout=10)
        await session.wait_for("output_audio_buffer.cleared", timeout=10)
    assert done["response"]["status"] == "cancelled"


async def test_server_errors_are_published_without_failing_the_session(emulator: Emulator, issuer: TokenIssuer) -> None:
    async with RealtimeSession(IssuerKeys(issuer), base_url=emulator.base_url, transport="websocket") as session:
        errors: list[Any] = []
        session.errors.on(errors.append)
        session.send({"type": "response.cancel", "event_id": "evt_x"})
        await session.wait_for("error", timeout=5)
        assert session.state == "connected"
    assert errors[0].api_code == "response_cancel_not_active" and errors[0].event_id == "evt_x"


async def test_no_microphone_is_a_typed_error_before_anything_is_minted(
    emulator: Emulator, issuer: TokenIssuer
) -> None:
    from rtkit.audio.sources import MicrophoneSource
    from rtkit.errors import MicrophoneUnavailableError

    session = RealtimeSession(IssuerKeys(issuer), base_url=emulator.base_url, source=MicrophoneSource())
    with pytest.raises(MicrophoneUnavailableError) as info:
        await session.connect()
    assert info.value.hint
    assert emulator.keys.issued == 0


async def test_a_reconnection_the_api_refuses_with_429_waits_its_retry_after_exactly(
    emulator: Emulator, issuer: TokenIssuer
) -> None:
    """One rule for every retry (``rtkit.errors.retry_wait``): the server's Retry-After, not our own backoff."""
    session = RealtimeSession(
        IssuerKeys(issuer), base_url=emulator.base_url, transport="webrtc", reconnect=FAST_RECONNECT
    )
    attempts: list[tuple[float, str]] = []
    session.states.on(lambda change: attempts.append((time.monotonic(), change.state)))
    async with session:
        emulator.faults.reject_next_calls(1, status=429, retry_after=1)
        await emulator.drop_call()
        await session.wait_for_state("connected", timeout=15)
    connecting = [t for t, state in attempts if state == "connecting"]
    refused, retried = connecting[1], connecting[2]  # the first reconnection (429), then the next one
    assert retried - refused >= 0.95, attempts  # FAST_RECONNECT alone would wait well under a second
