"""The emulator's sans-I/O protocol core (``rtkit.emulator.core.Core``), driven with a fake clock: no sockets,
no tasks, no sleeps. Time moves only when a test says so, so VAD positions, the idle timeout, barge-in, the
session's maximum duration, truncation, cancellation and ``max_output_tokens`` are checked exactly, in
milliseconds. Every server event the core emits is validated with the SDK's ``RealtimeServerEvent``."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pytest

from rtkit.audio.pcm import PCM, REALTIME_RATE, tone
from rtkit.emulator.core import (
    Cancel,
    ClearPlay,
    Core,
    Expire,
    FinishPlay,
    Output,
    Play,
    Respond,
)
from rtkit.emulator.responders import Reply
from rtkit.emulator.sessions import SessionState
from tests.conftest import assert_valid_server_events

WALL = 1_800_000_000.0


def silence(ms: int) -> PCM:
    return np.zeros(ms * REALTIME_RATE // 1000, dtype=np.int16)


def speech(ms: int) -> PCM:
    return tone(ms / 1000, 440.0, amplitude=0.3)


class Clocked:
    """A ``Core`` and a fake monotonic clock: what it emitted (with the time it did), and the effects it asked."""

    def __init__(self, session: dict[str, Any] | None = None, **options: Any) -> None:
        self.now = 0.0
        self.core = Core(
            SessionState.from_client({"type": "realtime", **(session or {})}), now=0.0, wall=WALL, **options
        )
        self.events: list[dict[str, Any]] = []
        self.times: list[float] = []
        self.effects: list[Output] = []
        self.core.start(self.now)
        self.collect()

    def collect(self) -> Sequence[Output]:
        out = self.core.take()
        for item in out:
            if isinstance(item, dict):
                self.events.append(item)
                self.times.append(self.now)
            else:
                self.effects.append(item)
        return out

    def send(self, type: str, **fields: Any) -> list[dict[str, Any]]:
        self.core.receive_event({"type": type, **fields}, self.now)
        return [o for o in self.collect() if isinstance(o, dict)]

    def feed(self, pcm: PCM, step_ms: int = 20) -> list[dict[str, Any]]:
        """Input audio as a microphone sends it: ``step_ms`` at a time, the clock moving with it."""
        events: list[dict[str, Any]] = []
        step = step_ms * REALTIME_RATE // 1000
        for start in range(0, pcm.size, step):
            self.core.receive_audio(pcm[start : start + step], self.now)
            events += [o for o in self.collect() if isinstance(o, dict)]
            self.run_until(self.now + step_ms / 1000)
        return events

    def run_until(self, t: float) -> None:
        """Move the clock to ``t``, waking the core at each deadline on the way, as the driver's timer does."""
        while (due := self.core.deadline) is not None and due <= t:
            self.now = max(self.now, due)
            self.core.advance(self.now)
            self.collect()
        self.now = max(self.now, t)

    def respond(self, reply: Reply) -> None:
        """Answer the core's pending ``Respond`` effect, as the driver does with the responder's reply."""
        asks = [e for e in self.effects if isinstance(e, Respond)]
        assert asks, "the core asked for no reply"
        self.core.replied(asks[-1].key, reply, self.now)
        self.collect()

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == kind]

    def types(self) -> list[str]:
        return [e["type"] for e in self.events]


@pytest.fixture
def clocked() -> Iterator[list[Clocked]]:
    """Cores made by a test; every event each one emitted is checked against the SDK at the end."""
    made: list[Clocked] = []
    yield made
    for c in made:
        assert_valid_server_events(c.events)


def new(made: list[Clocked], session: dict[str, Any] | None = None, **options: Any) -> Clocked:
    c = Clocked(session, **options)
    made.append(c)
    return c


TEXT_ONLY = {"output_modalities": ["text"]}
NO_VAD = {"audio": {"input": {"turn_detection": None}}}


def test_vad_reports_speech_at_input_positions_and_commits_the_turn(clocked: list[Clocked]) -> None:
    c = new(clocked)
    c.feed(silence(500))
    c.feed(speech(600))
    assert not c.of("input_audio_buffer.speech_stopped")
    c.feed(silence(700))
    (started,) = c.of("input_audio_buffer.speech_started")
    (stopped,) = c.of("input_audio_buffer.speech_stopped")
    # Speech began at 500 ms; the default prefix_padding_ms (300) keeps what precedes it.
    assert started["audio_start_ms"] == 200
    # The last voiced window ended at 1100 ms; silence_duration_ms (500) later the turn ends.
    assert stopped["audio_end_ms"] == 1600
    (committed,) = c.of("input_audio_buffer.committed")
    assert committed["item_id"] == started["item_id"] == stopped["item_id"]
    assert c.core.items.audio[committed["item_id"]].size == 1400 * REALTIME_RATE // 1000
    # create_response: the turn gets a reply, whose start is due at once.
    assert c.types()[-1] == "response.created"
    c.run_until(c.now)
    assert isinstance(c.effects[-1], Respond) and c.effects[-1].turn.user_audio is not None


def test_vad_gives_the_same_positions_for_audio_in_one_burst(clocked: list[Clocked]) -> None:
    c = new(clocked)
    c.feed(np.concatenate([silence(500), speech(600), silence(700)]), step_ms=1800)
    assert c.of("input_audio_buffer.speech_started")[0]["audio_start_ms"] == 200
    assert c.of("input_audio_buffer.speech_stopped")[0]["audio_end_ms"] == 1600


def test_idle_timeout_triggers_after_that_much_silence_since_the_reply_ended(clocked: list[Clocked]) -> None:
    c = new(clocked, {"audio": {"input": {"turn_detection": {"type": "server_vad", "idle_timeout_ms": 5000}}}})
    c.feed(silence(6000))
    assert not c.of("input_audio_buffer.timeout_triggered"), "no reply yet: nothing to wait after"
    c.send("response.create")
    c.run_until(c.now)
    c.respond(Reply("one two", tone(0.5)))
    c.run_until(c.now + 1)
    (done,) = c.of("response.done")
    assert done["response"]["status"] == "completed"
    # Over WebSocket the client plays the 500 ms reply from response.done: silence counts from its end.
    heard_from = 6000 + 500
    c.feed(silence(heard_from + 5000 - 20 - 6000))
    assert not c.of("input_audio_buffer.timeout_triggered")
    c.feed(silence(20))
    (timeout,) = c.of("input_audio_buffer.timeout_triggered")
    assert (timeout["audio_start_ms"], timeout["audio_end_ms"]) == (heard_from, heard_from + 5000)
    assert c.types()[-3:] == ["conversation.item.added", "conversation.item.done", "response.created"]
    assert c.of("input_audio_buffer.committed")[-1]["item_id"] == timeout["item_id"]


def test_reply_audio_is_paced_in_100ms_chunks_at_generation_speed(clocked: list[Clocked]) -> None:
    c = new(clocked, NO_VAD, generation_speed=2.0)
    c.send("response.create")
    c.run_until(1.0)
    c.respond(Reply("a b c d e", tone(0.5)))
    c.run_until(2.0)
    deltas = [t for e, t in zip(c.events, c.times, strict=True) if e["type"] == "response.output_audio.delta"]
    assert deltas == pytest.approx([1.0, 1.05, 1.1, 1.15, 1.2])
    assert c.of("response.done")[0]["response"]["usage"]["output_token_details"]["audio_tokens"] == 10


def test_speech_over_a_reply_cancels_it_with_turn_detected(clocked: list[Clocked]) -> None:
    c = new(clocked)
    c.send("response.create")
    c.run_until(0)
    c.respond(Reply("a long reply", tone(2.0)))
    c.run_until(0.2)
    c.feed(speech(200))
    (done,) = c.of("response.done")
    assert done["response"]["status_details"] == {"type": "cancelled", "reason": "turn_detected"}
    assert done["response"]["output"][0]["status"] == "incomplete"
    assert not c.of("output_audio_buffer.cleared"), "over WebSocket the client owns the audio it received"
    types = c.types()
    assert types.index("input_audio_buffer.speech_started") < types.index("response.done")


def test_speech_over_a_played_reply_clears_the_track_first(clocked: list[Clocked]) -> None:
    c = new(clocked, playback=True)
    c.send("response.create")
    c.run_until(0)
    c.respond(Reply("a long reply", tone(2.0)))
    c.run_until(0.2)
    rid = c.of("response.created")[0]["response"]["id"]
    plays = [e for e in c.effects if isinstance(e, Play)]
    assert plays and all(p.response_id == rid for p in plays)
    assert not c.of("response.output_audio.delta"), "over WebRTC the audio rides the track"
    c.core.playback_started(rid, c.now)
    c.collect()
    c.feed(speech(200))
    (cleared,) = c.of("output_audio_buffer.cleared")
    assert cleared["response_id"] == rid
    types = c.types()
    assert types.index("output_audio_buffer.cleared") < types.index("response.done")
    assert c.of("response.done")[0]["response"]["status_details"]["reason"] == "turn_detected"
    after_clear = c.effects[c.effects.index(ClearPlay()) :]
    assert FinishPlay(rid) in after_clear and not [e for e in after_clear if isinstance(e, Play)]


def test_session_ends_at_its_maximum_duration_with_the_services_words(clocked: list[Clocked]) -> None:
    c = new(clocked, max_session_seconds=90.0)
    assert c.core.expires_at == int(WALL + 90)
    assert c.of("session.created")[0]["session"]["expires_at"] == int(WALL + 90)
    c.run_until(89.99)
    assert not c.of("error") and not [e for e in c.effects if isinstance(e, Expire)]
    c.run_until(90.0)
    (error,) = c.of("error")
    assert error["error"]["code"] == "session_expired"
    assert error["error"]["message"] == "Your session hit the maximum duration of 1 minute 30 seconds."
    assert c.effects[-1] == Expire("Your session hit the maximum duration of 1 minute 30 seconds.")
    assert c.times[-1] == 90.0
    c.run_until(200)
    assert len(c.of("error")) == 1


def test_truncate_refuses_past_the_audio_produced_so_far(clocked: list[Clocked]) -> None:
    c = new(clocked, NO_VAD)
    c.send("response.create")
    c.run_until(0)
    c.respond(Reply("one two three", tone(1.0)))
    c.run_until(0.1)  # three of ten chunks: 300 ms produced
    item_id = c.of("response.output_item.added")[0]["item"]["id"]
    (error,) = c.send("conversation.item.truncate", item_id=item_id, content_index=0, audio_end_ms=500)
    assert error["error"]["message"] == "Audio content of 300ms is already shorter than 500ms"
    c.run_until(1.0)
    (error,) = c.send("conversation.item.truncate", item_id=item_id, content_index=0, audio_end_ms=1500)
    assert error["error"]["message"] == "Audio content of 1000ms is already shorter than 1500ms"
    (truncated,) = c.send("conversation.item.truncate", item_id=item_id, content_index=0, audio_end_ms=400)
    assert truncated["type"] == "conversation.item.truncated" and truncated["audio_end_ms"] == 400
    (error,) = c.send("conversation.item.truncate", item_id=item_id, content_index=0, audio_end_ms=600)
    assert error["error"]["message"] == "Audio content of 400ms is already shorter than 600ms"
    (retrieved,) = c.send("conversation.item.retrieve", item_id=item_id)
    assert retrieved["item"]["content"][0]["transcript"] is None


def test_cancel_right_behind_create_ends_the_response_with_nothing_announced(clocked: list[Clocked]) -> None:
    c = new(clocked, NO_VAD)
    c.send("response.create")
    c.send("response.cancel")
    (done,) = c.of("response.done")
    assert done["response"]["status"] == "cancelled" and done["response"]["output"] == []
    assert c.core.deadline == 3600.0, "nothing left to step but the session's cap"
    assert not [e for e in c.effects if isinstance(e, Respond)]


def test_cancel_while_the_reply_is_generated_cancels_the_responder(clocked: list[Clocked]) -> None:
    c = new(clocked, NO_VAD)
    c.send("response.create")
    c.run_until(0)
    ask = c.effects[-1]
    assert isinstance(ask, Respond)
    c.send("response.cancel")
    assert c.effects[-1] == Cancel(ask.key)
    assert c.of("response.done")[0]["response"]["output"] == []
    c.respond(Reply("too late", tone(0.3)))
    assert not c.of("response.output_item.added"), "a reply for a cancelled response is dropped"


def test_cancel_mid_stream_closes_what_was_announced(clocked: list[Clocked]) -> None:
    c = new(clocked, NO_VAD)
    c.send("response.create")
    c.run_until(0)
    c.respond(Reply("one two three four", tone(1.0)))
    c.run_until(0.12)
    assert [e["type"] for e in c.send("response.cancel")] == [
        "response.output_audio.done",
        "response.output_audio_transcript.done",
        "response.content_part.done",
        "response.output_item.done",
        "conversation.item.done",
        "response.done",
        "rate_limits.updated",
    ]
    (done,) = c.of("response.done")
    assert done["response"]["status_details"] == {"type": "cancelled", "reason": "client_cancelled"}
    assert done["response"]["output"][0]["status"] == "incomplete"
    assert done["response"]["usage"]["output_token_details"]["audio_tokens"] == 300 // 50
    c.run_until(5)
    assert len(c.of("response.output_audio.delta")) == 3, "nothing is generated after the cancel"
    (error,) = c.send("response.cancel")
    assert error["error"]["code"] == "response_cancel_not_active"


def test_cancel_mid_function_call_leaves_it_incomplete_and_not_to_run(clocked: list[Clocked]) -> None:
    lookup = {
        "type": "function",
        "name": "lookup",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
    }
    c = new(clocked, {**NO_VAD, "tools": [lookup]})
    c.send("conversation.item.create", item=_text("please lookup " + "many things " * 20))
    c.send("response.create")
    c.run_until(0.01)  # the arguments stream 16 characters every 5 ms: three deltas so far
    assert len(c.of("response.function_call_arguments.delta")) == 3
    c.send("response.cancel")
    assert not c.of("response.function_call_arguments.done")
    (item_done,) = c.of("response.output_item.done")
    assert item_done["item"]["status"] == "incomplete"
    assert c.of("response.done")[0]["response"]["status"] == "cancelled"


def test_max_output_tokens_cuts_a_text_reply_short(clocked: list[Clocked]) -> None:
    c = new(clocked, {**NO_VAD, **TEXT_ONLY})
    c.send("response.create", response={"max_output_tokens": 3})
    c.run_until(0)
    c.respond(Reply("one two three four five six seven eight nine ten", None))
    c.run_until(1)
    (done,) = c.of("response.done")
    assert done["response"]["status"] == "incomplete"
    assert done["response"]["status_details"] == {"type": "incomplete", "reason": "max_output_tokens"}
    text = done["response"]["output"][0]["content"][0]["text"]
    assert text and "one two three four five six seven eight nine ten".startswith(text) and len(text) < 16
    assert done["response"]["usage"]["output_tokens"] <= 3


def test_max_output_tokens_cuts_reply_audio_in_whole_tokens(clocked: list[Clocked]) -> None:
    c = new(clocked, NO_VAD)
    c.send("response.create", response={"max_output_tokens": 5})
    c.run_until(0)
    c.respond(Reply("hi", tone(1.0)))
    c.run_until(1)
    (done,) = c.of("response.done")
    assert done["response"]["status_details"] == {"type": "incomplete", "reason": "max_output_tokens"}
    assert done["response"]["usage"]["output_tokens"] <= 5
    assert c.core.items.audio_ms[done["response"]["output"][0]["id"]] % 50 == 0


def _text(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
