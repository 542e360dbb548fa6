"""Resume with context: after the cap, a drop or a planned move, the new physical session holds the earlier
turns, checked by asking the new session itself (``conversation.item.retrieve``) on the real emulator."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import TypeAdapter

from rtkit.conversation import Conversation, Turn
from rtkit.emulator import Emulator
from rtkit.emulator.responders import ToneResponder
from rtkit.errors import ConfigurationError, RealtimeAPIError
from rtkit.keys import IssuerKeys
from rtkit.metrics import ResumeRecord
from rtkit.resume import ResumePolicy
from rtkit.session import RealtimeSession, ReconnectPolicy, StateChange
from rtkit.tokens import TokenIssuer
from tests.conftest import TEST_KEY, assert_valid_server_events

FAST = ReconnectPolicy(max_attempts=4, initial_delay=0.05, max_delay=0.2)
#: Waits for the server's cut: no move before it.
AT_THE_CAP = ResumePolicy(proactive_margin_s=None)
TEXT = {"output_modalities": ["text"]}


@pytest.fixture
async def capped() -> AsyncIterator[Emulator]:
    """An emulator whose sessions end after 6 s, as the real service's end after 60 minutes."""
    async with Emulator(api_key=TEST_KEY, max_session_seconds=6) as emu:
        yield emu
    assert_valid_server_events(list(emu.server_events))


@pytest.fixture
async def issuer(capped: Emulator) -> AsyncIterator[TokenIssuer]:
    async with TokenIssuer(TEST_KEY, base_url=capped.base_url, backoff_initial=0.01) as tokens:
        yield tokens


async def text_turn(session: RealtimeSession, text: str) -> dict[str, Any]:
    done = asyncio.ensure_future(session.wait_for("response.done", timeout=15))
    session.send_text(text)
    event = await done
    assert event["response"]["status"] == "completed", event
    return event


async def next_resumption(session: RealtimeSession, timeout: float = 20) -> ResumeRecord:
    record = await session.conversation.next_resumption(timeout)
    if session.state != "connected":
        await session.wait_for_state("connected", timeout=timeout)
    return record


async def retrieve(session: RealtimeSession, item_id: str) -> dict[str, Any]:
    """The item as the session now connected holds it (the server's own copy)."""
    got = asyncio.ensure_future(session.wait_for("conversation.item.retrieved", timeout=10))
    session.send({"type": "conversation.item.retrieve", "item_id": item_id})
    item: dict[str, Any] = (await got)["item"]
    assert item["id"] == item_id
    return item


def text_of(item: dict[str, Any]) -> str:
    return " ".join(part.get("text") or part.get("transcript") or "" for part in item.get("content", []))


async def assert_held_by_the_new_session(session: RealtimeSession, turns: list[Turn]) -> None:
    new = session.conversation.session_id
    assert new is not None
    for turn in turns:
        item = await retrieve(session, turn.item_ids[new])
        assert item["type"] == turn.kind
        if turn.kind == "message":
            assert item["role"] == turn.role and text_of(item) == turn.text, (item, turn)
        else:
            assert item["call_id"] == turn.call_id


def assert_valid_client_items(turns: list[Turn]) -> None:
    """What restoration sends parses as the official SDK's client event."""
    from openai.types.realtime import RealtimeClientEvent

    adapter: TypeAdapter[Any] = TypeAdapter(RealtimeClientEvent)
    for turn in turns:
        event = {"type": "conversation.item.create", "event_id": "rtkit_restore_x", "item": turn.as_item("item_x")}
        assert adapter.validate_python(event).type == "conversation.item.create"


@pytest.mark.parametrize("transport", ["webrtc", "websocket"])
async def test_after_the_cap_a_fresh_session_holds_the_earlier_turns_and_the_conversation_goes_on(
    capped: Emulator, issuer: TokenIssuer, transport: Any
) -> None:
    session = RealtimeSession(
        IssuerKeys(issuer), TEXT, base_url=capped.base_url, transport=transport, reconnect=FAST, resume=AT_THE_CAP
    )
    errors: list[RealtimeAPIError] = []
    session.errors.on(errors.append)
    async with session:
        first_key = session.key
        old = session.conversation.session_id
        await text_turn(session, "my name is Ada")
        await text_turn(session, "I live in Paris")
        record = await next_resumption(session)
        assert record.reason == "session_expired" and [e.api_code for e in errors] == ["session_expired"]
        assert session.key is not None and first_key is not None and session.key.value != first_key.value
        new = session.conversation.session_id
        assert record.old_session == old and record.new_session == new and old != new
        assert record.items_restored == 4 and record.ok and record.left_out == 0
        earlier = list(session.conversation.turns)
        await assert_held_by_the_new_session(session, earlier)
        third = await text_turn(session, "what is my name")
        assert third["response"]["output"][0]["content"][0]["text"] == "what is my name"

    conversation = session.conversation
    assert [(t.role, t.text) for t in conversation.turns] == [
        ("user", "my name is Ada"),
        ("assistant", "my name is Ada"),
        ("user", "I live in Paris"),
        ("assistant", "I live in Paris"),
        ("user", "what is my name"),
        ("assistant", "what is my name"),
    ]
    assert [t.id for t in conversation.turns] == [f"turn_{n}" for n in range(1, 7)]
    assert [t.session_id for t in conversation.turns] == [old] * 4 + [new] * 2
    for turn in conversation.turns[:4]:
        assert list(turn.item_ids) == [old, new]
        assert conversation.turn_for(turn.item_ids[old]) is conversation.turn_for(turn.item_ids[new]) is turn
    assert [t.id for t in conversation.in_session(str(new))] == [f"turn_{n}" for n in range(1, 7)]
    # The server's session_expired is a row of its own, beside the connections and the resumption.
    assert [r["kind"] for r in session.metrics.to_records()] == ["connect", "connect", "resume", "error"]
    assert_valid_client_items(conversation.turns)


async def test_the_budget_keeps_only_the_newest_turns(capped: Emulator, issuer: TokenIssuer) -> None:
    session = RealtimeSession(
        IssuerKeys(issuer),
        TEXT,
        base_url=capped.base_url,
        transport="websocket",
        reconnect=FAST,
        resume=ResumePolicy(max_turns=3, proactive_margin_s=None),
    )
    async with session:
        for text in ("one", "two", "three"):
            await text_turn(session, text)
        record = await next_resumption(session)
        new = str(session.conversation.session_id)
        assert record.items_restored == 3 and record.left_out == 3
        kept = session.conversation.in_session(new)
        assert [(t.role, t.text) for t in kept] == [("assistant", "two"), ("user", "three"), ("assistant", "three")]
        await assert_held_by_the_new_session(session, kept)
        assert record.chars_restored == len("two") + 2 * len("three")


async def test_a_dropped_call_resumes_with_its_function_call_and_output(capped: Emulator, issuer: TokenIssuer) -> None:
    tool = {"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {}}}
    session = RealtimeSession(
        IssuerKeys(issuer),
        {**TEXT, "tools": [tool]},
        base_url=capped.base_url,
        transport="webrtc",
        reconnect=FAST,
        resume=AT_THE_CAP,
    )
    async with session:
        done = await text_turn(session, "please lookup the answer")
        call = done["response"]["output"][0]
        assert call["type"] == "function_call"
        answered = asyncio.ensure_future(session.wait_for("response.done", timeout=15))
        session.send_function_output(call["call_id"], {"answer": 42})
        await answered
        await capped.drop_call()
        record = await next_resumption(session)
        assert record.reason == "dropped" and record.items_restored == 4
        turns = session.conversation.turns
        assert [t.kind for t in turns] == ["message", "function_call", "function_call_output", "message"]
        assert turns[1].name == "lookup" and turns[2].output == '{"answer": 42}'
        await assert_held_by_the_new_session(session, turns)
        assert_valid_client_items(turns)


async def test_proactive_resumption_waits_for_the_turn_to_end_and_beats_the_cap() -> None:
    """The move falls due while the model is still speaking: it waits for the reply to finish, then moves."""
    margin = 8.0
    async with (
        Emulator(api_key=TEST_KEY, max_session_seconds=20, responder=ToneResponder(seconds=3.0)) as emu,
        TokenIssuer(TEST_KEY, base_url=emu.base_url) as tokens,
    ):
        session = RealtimeSession(
            IssuerKeys(tokens),
            TEXT,
            base_url=emu.base_url,
            transport="webrtc",
            reconnect=FAST,
            resume=ResumePolicy(proactive_margin_s=margin),
        )
        seen: list[tuple[float, str]] = []
        #: Each state change, with its time and how many replies the server had finished playing by then.
        states: list[tuple[float, StateChange, int]] = []
        errors: list[RealtimeAPIError] = []
        session.events.on(lambda e: seen.append((time.time(), e["type"])))
        played = lambda: sum(e["type"] == "output_audio_buffer.stopped" for e in emu.server_events)  # noqa: E731
        session.states.on(lambda change: states.append((time.time(), change, played())))
        session.errors.on(errors.append)
        async with session:
            first = session.conversation.session
            assert first is not None and first.expires_at is not None
            due = first.expires_at - margin
            await text_turn(session, "hello there")
            await asyncio.sleep(max(0.0, due - 1.5 - time.time()))
            stopped = asyncio.ensure_future(session.wait_for("output_audio_buffer.stopped", timeout=15))
            session.send_text("say it out loud", respond=False)
            session.create_response(output_modalities=["audio"])
            await stopped
            record = await next_resumption(session)
            assert record.reason == "proactive" and record.items_restored == 4, record
            await assert_held_by_the_new_session(session, session.conversation.turns)
        assert_valid_server_events(list(emu.server_events))
    heard = next(t for t, kind in seen if kind == "output_audio_buffer.stopped")
    moved, _, replies_played = next(
        (t, c, n) for t, c, n in states if c.state == "disconnected" and "nears its maximum" in str(c.reason)
    )
    assert replies_played == 1, "the move waited for the reply to be played out"
    assert due <= heard and due <= moved < first.expires_at, (due, heard, moved, first.expires_at)
    assert not errors, "the server never had to cut the session"


# ---- the conversation on its own: fed server events, deterministic ----------------------------------------


def fed(*events: dict[str, Any]) -> Conversation:
    conversation = Conversation()
    conversation.feed({"type": "session.created", "session": {"id": "sess_A", "expires_at": 2_000_000_000}})
    for event in events:
        conversation.feed(event)
    return conversation


def selected(conversation: Conversation, max_turns: int | None, max_chars: int | None) -> tuple[list[Turn], int]:
    """What a new session would get: the conversation moves on to ``sess_B`` first."""
    conversation.feed({"type": "session.created", "session": {"id": "sess_B"}})
    return conversation.select(max_turns, max_chars)


def message(item_id: str, role: str, text: str) -> dict[str, Any]:
    part = {"type": "input_text" if role == "user" else "output_text", "text": text}
    return {
        "type": "conversation.item.done",
        "item": {"id": item_id, "type": "message", "role": role, "content": [part]},
    }


def test_a_character_budget_keeps_the_newest_turns_that_fit() -> None:
    conversation = fed(
        message("i1", "user", "a" * 50), message("i2", "assistant", "b" * 30), message("i3", "user", "c" * 30)
    )
    chosen, left_out = selected(conversation, max_turns=None, max_chars=70)
    assert [t.text for t in chosen] == ["b" * 30, "c" * 30] and left_out == 1


def test_a_function_output_is_never_restored_without_its_call() -> None:
    conversation = fed(
        {
            "type": "conversation.item.done",
            "item": {"id": "i1", "type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        },
        {
            "type": "conversation.item.done",
            "item": {"id": "i2", "type": "function_call_output", "call_id": "c1", "output": "1"},
        },
        message("i3", "assistant", "done"),
    )
    chosen, left_out = selected(conversation, max_turns=2, max_chars=None)
    assert [t.kind for t in chosen] == ["message"] and left_out == 2


def test_spoken_turns_are_restored_as_their_transcripts_and_unheard_ones_not_at_all() -> None:
    user_audio = {
        "id": "i1",
        "type": "message",
        "role": "user",
        "content": [{"type": "input_audio", "transcript": None}],
    }
    silent = {"id": "i2", "type": "message", "role": "user", "content": [{"type": "input_audio", "transcript": None}]}
    conversation = fed(
        {"type": "conversation.item.added", "item": user_audio},
        {"type": "conversation.item.input_audio_transcription.completed", "item_id": "i1", "transcript": "hi"},
        {"type": "conversation.item.added", "item": silent},
        {
            "type": "conversation.item.added",
            "item": {"id": "i3", "type": "message", "role": "assistant", "content": []},
        },
        {"type": "response.output_audio_transcript.done", "item_id": "i3", "transcript": "hello"},
        {"type": "conversation.item.truncated", "item_id": "i3", "audio_end_ms": 300, "content_index": 0},
    )
    chosen, left_out = selected(conversation, max_turns=None, max_chars=None)
    assert [(t.role, t.text, t.spoken) for t in chosen] == [("user", "hi", True), ("assistant", "hello", True)]
    assert chosen[1].as_item("item_x")["content"] == [{"type": "output_text", "text": "hello"}]
    assert chosen[1].truncated_ms == 300 and left_out == 0
    assert_valid_client_items(chosen)


def test_a_negative_budget_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError):
        ResumePolicy(max_turns=-1)
