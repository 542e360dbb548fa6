"""Cassettes: a session recorded against the emulator, replayed by another emulator to an identical client; a
hand-written cassette driving function calling; secrets scrubbed; the diff finding where two recordings part."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import rtkit.emulator
from rtkit.audio.pcm import PCM, REALTIME_RATE
from rtkit.audio.sources import PcmSource
from rtkit.cassette import Cassette, diff, record, render_diff, scan
from rtkit.cli import main
from rtkit.emulator import Emulator
from rtkit.emulator.config import DEFAULT_API_KEY
from rtkit.emulator.responders import Reply
from rtkit.emulator.tools import ToolCall
from rtkit.events import next_value
from rtkit.keys import IssuerKeys
from rtkit.session import RealtimeSession, TransportChoice
from rtkit.tokens import TokenIssuer
from tests.conftest import TEST_KEY, assert_valid_server_events, free_port
from tests.emulator.test_core import Clocked

WEATHER = Path(rtkit.emulator.__file__).parent / "data" / "cassettes" / "weather.json"
TEXT_LOOKUP = {"type": "input_text", "text": "please lookup the answer"}
GET_WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


async def say(session: RealtimeSession, text: str) -> dict[str, Any]:
    """One user turn in text; the ``response.done`` that answers it."""
    done = asyncio.ensure_future(session.wait_for("response.done", timeout=30))
    session.send_text(text)
    return await done


def played_out(event: dict[str, Any], response_id: str) -> bool:
    return event.get("type") == "output_audio_buffer.stopped" and event.get("response_id") == response_id


async def run_script(base_url: str, transport: TransportChoice, path: Path) -> Cassette:
    """The client code under test: two spoken-back turns, recorded to ``path``."""
    async with TokenIssuer(TEST_KEY, base_url=base_url) as issuer:
        session = RealtimeSession(
            IssuerKeys(issuer), {"instructions": "Answer briefly."}, base_url=base_url, transport=transport
        )
        recorder = record(session)
        async with session:
            await say(session, "What is the weather like in Paris?")
            last = (await say(session, "Thank you, goodbye."))["response"]["id"]
            if transport == "webrtc":  # the reply plays on for a while after response.done
                await next_value(session.events, lambda e: played_out(e, last), 30)
            await asyncio.sleep(0.1)
        recorder.save(path)
    return Cassette.load(path)


async def test_a_websocket_recording_replays_the_same_events_and_reply_audio(tmp_path: Path) -> None:
    async with Emulator(api_key=TEST_KEY) as live:
        original = await run_script(live.base_url, "websocket", tmp_path / "live.json")
    assert [t.say for t in original.turns] == ["What is the weather like in Paris?", "Thank you, goodbye."]
    assert all(t.audio is not None and t.usage is not None for t in original.turns)

    async with Emulator(api_key=TEST_KEY, cassette=tmp_path / "live.json", cassette_speed=10) as replay:
        replayed = await run_script(replay.base_url, "websocket", tmp_path / "replayed.json")
    assert_valid_server_events(list(replay.server_events))
    assert diff(original, replayed, collapse=False) == []  # every event, every delta, in the same order
    assert [t.say for t in replayed.turns] == [t.say for t in original.turns]
    assert [t.audio for t in replayed.turns] == [t.audio for t in original.turns]  # the same samples, exactly
    assert [t.usage for t in replayed.turns] == [t.usage for t in original.turns]  # billed as recorded


async def test_a_webrtc_recording_replays_the_same_event_types_and_words(tmp_path: Path) -> None:
    async with Emulator(api_key=TEST_KEY) as live:
        original = await run_script(live.base_url, "webrtc", tmp_path / "live.json")
    assert original.meta["transport"] == "webrtc"
    # The voice rode the media track, not the events: the recorder heard it at the session's sink.
    assert all(t.audio is not None and t.audio.pcm().size > 0.5 * REALTIME_RATE for t in original.turns)

    async with Emulator(api_key=TEST_KEY, cassette=tmp_path / "live.json", cassette_speed=10) as replay:
        replayed = await run_script(replay.base_url, "webrtc", tmp_path / "replayed.json")
    # When the track starts and stops playing relative to the events is the network's doing, not the model's.
    playback = ("rtkit.", "output_audio_buffer.")
    assert diff(original, replayed, ignore=playback) == []
    assert [t.say for t in replayed.turns] == [t.say for t in original.turns]
    assert [t.usage for t in replayed.turns] == [t.usage for t in original.turns]
    for before, after in zip(original.turns, replayed.turns, strict=True):
        assert before.audio is not None and after.audio is not None
        # Opus both ways, silent edges trimmed: the same reply, within a few 20 ms frames.
        assert abs(before.audio.pcm().size - after.audio.pcm().size) < 0.1 * REALTIME_RATE


async def test_the_packaged_weather_cassette_drives_a_function_call_end_to_end_then_says_it_ran_out() -> None:
    async with (
        Emulator(api_key=TEST_KEY, cassette=WEATHER) as emu,
        TokenIssuer(TEST_KEY, base_url=emu.base_url) as issuer,
    ):
        config = {"tools": [GET_WEATHER], "tool_choice": "auto"}
        session = RealtimeSession(IssuerKeys(issuer), config, base_url=emu.base_url, transport="websocket")
        async with session:
            hello = await say(session, "Hi there")
            called = asyncio.ensure_future(session.wait_for("response.function_call_arguments.done"))
            await say(session, "How warm is it?")  # no tool named: the cassette calls it all the same
            call = await called
            answered = asyncio.ensure_future(session.wait_for("response.done"))
            session.send_function_output(call["call_id"], {"celsius": 21, "sky": "sunny"})
            answer = await answered
            failed = asyncio.ensure_future(session.wait_for("error"))
            beyond = await say(session, "And tomorrow?")
            error = await failed
    assert hello["response"]["output"][0]["content"][0]["transcript"].startswith("Hello! I can tell you")
    assert (call["name"], json.loads(call["arguments"])) == ("get_weather", {"city": "Paris"})
    assert answer["response"]["output"][0]["content"][0]["transcript"] == "It is 21 degrees and sunny in Paris."
    assert error["error"]["code"] == "cassette_exhausted" and "no more turns" in error["error"]["message"]
    assert beyond["response"]["status"] == "failed"
    assert_valid_server_events(list(emu.server_events))


async def test_a_recorded_cassette_holds_no_key_even_when_the_conversation_spoke_one(tmp_path: Path) -> None:
    path = tmp_path / "secret.json"
    async with Emulator(api_key=TEST_KEY) as emu, TokenIssuer(TEST_KEY, base_url=emu.base_url) as issuer:
        text_only = {"output_modalities": ["text"]}  # the echo streams the keys back word by word
        session = RealtimeSession(IssuerKeys(issuer), text_only, base_url=emu.base_url, transport="websocket")
        recorder = record(session)
        async with session:
            assert session.key is not None
            ephemeral = session.key.value
            await say(session, f"My keys are {ephemeral} and {TEST_KEY}, Authorization: Bearer abcdef123456")
        recorder.save(path)
    text = path.read_text()
    assert ephemeral not in text and TEST_KEY not in text and "abcdef123456" not in text
    assert "[scrubbed]" in text
    assert scan(path, secrets=[ephemeral, TEST_KEY]) == []
    assert main(["cassette", "scan", str(path)]) == 0


def test_scan_finds_keys_and_secret_fields_left_in_a_cassette() -> None:
    leaky = {"turns": [{"say": "use sk-proj-abcdef123"}], "meta": {"Authorization": "x", "note": "ek_12345678"}}
    assert {f.where for f in scan(leaky)} == {"turns.0.say", "meta.Authorization", "meta.note"}


async def test_diff_says_where_an_event_type_is_missing_or_inserted(tmp_path: Path) -> None:
    async with Emulator(api_key=TEST_KEY) as live:
        original = await run_script(live.base_url, "websocket", tmp_path / "a.json")
    events = list(original.events)
    # B: the first turn's conversation.item.done lost, and an extra event in the second turn.
    second = max(i for i, e in enumerate(events) if e.event["type"] == "response.created")
    dropped = next(i for i, e in enumerate(events) if e.event["type"] == "conversation.item.done")
    changed = [*events[:second], events[second].model_copy(update={"event": {"type": "input_audio_buffer.cleared"}})]
    changed += events[second:]
    del changed[dropped]
    edited = original.model_copy(update={"events": changed})
    edited.save(tmp_path / "b.json")

    differences = diff(tmp_path / "a.json", tmp_path / "b.json")
    assert [(d.kind, d.a_types, d.b_types, d.turn) for d in differences] == [
        ("missing", ("conversation.item.done",), (), 0),
        ("extra", (), ("input_audio_buffer.cleared",), 1),
    ]
    assert "B lacks conversation.item.done" in render_diff(differences)
    assert main(["cassette", "diff", str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 1
    assert main(["cassette", "diff", str(tmp_path / "a.json"), str(tmp_path / "a.json")]) == 0


def test_a_hand_written_cassette_that_is_not_one_is_refused_with_the_reason(tmp_path: Path) -> None:
    from rtkit.errors import ConfigurationError

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"rtkit_cassette": 1, "turns": [{"say": "hi", "call": "f"}]}))
    with pytest.raises(ConfigurationError, match="either says something"):
        Cassette.load(bad)


def test_a_scripted_core_calls_the_replys_function_and_bills_the_recorded_usage() -> None:
    tool = {"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {}}}
    core = Clocked({"output_modalities": ["text"], "tools": [tool]}, scripted=True)
    core.send("conversation.item.create", item={"type": "message", "role": "user", "content": [TEXT_LOOKUP]})
    core.send("response.create")
    core.run_until(0.01)
    usage = {"total_tokens": 7, "input_tokens": 5, "output_tokens": 2}
    core.respond(Reply("", None, call=ToolCall("get_weather", '{"city": "Paris"}'), usage=usage))
    core.run_until(1.0)
    (called,) = core.of("response.function_call_arguments.done")
    assert (called["name"], called["arguments"]) == ("get_weather", '{"city": "Paris"}')  # not choose_tool's lookup
    assert core.of("response.done")[0]["response"]["usage"] == usage


def test_the_emulator_command_replays_a_cassette_and_refuses_a_missing_one(tmp_path: Path) -> None:
    missing = subprocess.run(
        [sys.executable, "-m", "rtkit", "emulator", "--port", "0", "--cassette", str(tmp_path / "none.json")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert missing.returncode == 2 and "Cannot read the cassette" in missing.stderr
    assert "Traceback" not in missing.stderr

    port = free_port()
    command = ["emulator", "--port", str(port), "--cassette", str(WEATHER), "--cassette-speed", "4"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "rtkit", *command], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        while not any("admin token" in line for line in lines) and len(lines) < 20:
            lines.append(proc.stdout.readline())
        assert f"replays the cassette {WEATHER}" in "".join(lines)

        async def greeting() -> dict[str, Any]:
            base_url = f"http://127.0.0.1:{port}/v1"
            async with (
                TokenIssuer(DEFAULT_API_KEY, base_url=base_url) as issuer,
                RealtimeSession(
                    IssuerKeys(issuer), {"output_modalities": ["text"]}, base_url=base_url, transport="websocket"
                ) as session,
            ):
                return await say(session, "Hello?")

        done = asyncio.run(greeting())
        assert done["response"]["output"][0]["content"][0]["text"].startswith("Hello! I can tell you the weather.")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(10)


async def test_a_spoken_turn_records_the_users_audio_as_sent_and_the_echo_as_heard(speech: PCM) -> None:
    fast = Emulator(api_key=TEST_KEY, generation_speed=20)
    async with fast as emu, TokenIssuer(TEST_KEY, base_url=emu.base_url) as issuer:
        source = PcmSource(speech, REALTIME_RATE, lead_seconds=0.5)
        session = RealtimeSession(IssuerKeys(issuer), base_url=emu.base_url, source=source, transport="websocket")
        recorder = record(session)
        async with session:
            await session.wait_for("response.done", timeout=30)
        recorder.stop()
        cassette = recorder.cassette()
    assert session.source is source  # the recorder's taps are gone once it stops
    assert cassette.user_audio is not None
    sent = cassette.user_audio.pcm()
    lead = int(0.5 * REALTIME_RATE)
    assert np.array_equal(sent[lead : lead + speech.size], speech)  # the utterance, sample for sample
    (turn,) = cassette.turns
    assert turn.audio is not None
    # The echo is the committed stretch of what was sent, from where the VAD placed the utterance.
    (started,) = [e.event for e in cassette.events if e.event["type"] == "input_audio_buffer.speech_started"]
    start, echo = started["audio_start_ms"] * REALTIME_RATE // 1000, turn.audio.pcm()
    assert echo.size > speech.size and np.array_equal(echo, sent[start : start + echo.size])
