"""However a response ends (``response.cancel`` at any point, or ``max_output_tokens``), its event stream is
well-formed: nothing is closed that was not announced, everything announced is closed with its own ``*.done``
events before ``response.done``, and the item stays in the conversation as it ended. Raw WebSockets against one
emulator on 127.0.0.1; every event received is validated with the SDK's ``RealtimeServerEvent``."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from tests.emulator.wire import Conn, shared_conn, shared_emulator, text_item

shared_loop = pytest.mark.asyncio(loop_scope="module")
pytestmark = shared_loop

LONG_TEXT = "a fairly long sentence so that the spoken reply takes a good while to generate and to play out"
LOOKUP = {
    "type": "function",
    "name": "lookup",
    "description": "Look something up.",
    "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
}
# The emulator calls a tool the user's text names, with the whole text as a string argument: a long one.
LOOKUP_TEXT = "please lookup " + "the history of every realtime protocol ever written, " * 12


emulator = shared_emulator()


conn = shared_conn()


async def update(conn: Conn, **session: Any) -> None:
    await conn.send({"type": "session.update", "session": {"type": "realtime", **session}})
    await conn.until("session.updated")


def response_events(events: list[dict[str, Any]], response_id: str) -> list[dict[str, Any]]:
    """The events of one response, with the ``conversation.item.*`` events of its items, in order."""
    items: set[str] = set()
    mine = []
    for e in events:
        if e.get("response_id") == response_id or e.get("response", {}).get("id") == response_id:
            if e["type"] == "response.output_item.added":
                items.add(e["item"]["id"])
            mine.append(e)
        elif e["type"].startswith("conversation.item.") and e.get("item", {}).get("id") in items:
            mine.append(e)
    return mine


def assert_well_formed(events: list[dict[str, Any]], response_id: str) -> list[str]:
    """Check one response's event sequence and return its types."""
    mine = response_events(events, response_id)
    types = [e["type"] for e in mine]
    assert types[0] == "response.created" and types[-1] == "response.done" and types.count("response.done") == 1
    announced: set[str] = set()
    closed: set[str] = set()
    parts: dict[tuple[str, int], set[str]] = {}  # open content parts -> the *.done seen for them
    streams: dict[tuple[str, int], set[str]] = {}  # what each part streamed (audio, transcript, text)
    for e in mine[1:-1]:
        kind = e["type"]
        item_id = e.get("item_id") or e.get("item", {}).get("id")
        if kind == "response.output_item.added":
            assert item_id not in announced
            announced.add(item_id)
            continue
        assert item_id in announced, f"{kind} for an item never announced"
        if kind.startswith("conversation.item."):
            continue
        assert item_id not in closed, f"{kind} after the item's output_item.done"
        if kind == "response.output_item.done":
            assert not [k for k in parts if k[0] == item_id], "output_item.done with a content part still open"
            closed.add(item_id)
        elif kind == "response.content_part.added":
            parts[(item_id, e["content_index"])] = set()
            streams[(item_id, e["content_index"])] = set()
        elif kind == "response.content_part.done":
            key = (item_id, e["content_index"])
            dones = parts.pop(key)
            wanted = {"audio": {"response.output_audio.done", "response.output_audio_transcript.done"}}.get(
                e["part"]["type"], {"response.output_text.done"}
            )
            assert dones == wanted, f"{e['part']['type']} part closed after {dones}"
            assert streams.pop(key) <= {"audio", "transcript", "text"}
        elif kind in ("response.output_audio.delta", "response.output_audio_transcript.delta"):
            streams[(item_id, e["content_index"])].add("audio" if "audio.delta" in kind else "transcript")
            assert not parts[(item_id, e["content_index"])], f"{kind} after its part's done"
        elif kind == "response.output_text.delta":
            streams[(item_id, e["content_index"])].add("text")
        elif kind in (
            "response.output_audio.done",
            "response.output_audio_transcript.done",
            "response.output_text.done",
        ):
            parts[(item_id, e["content_index"])].add(kind)
    assert not parts, "content parts left open"
    assert announced == closed, "items announced and never closed"
    done = mine[-1]["response"]
    assert {o["id"] for o in done["output"]} == announced
    added = [e for e in mine if e["type"] == "conversation.item.added"]
    finished = [e for e in mine if e["type"] == "conversation.item.done"]
    assert {e["item"]["id"] for e in added} == {e["item"]["id"] for e in finished}
    return types


async def retrieve(conn: Conn, item_id: str) -> dict[str, Any]:
    await conn.send({"type": "conversation.item.retrieve", "item_id": item_id})
    return dict((await conn.until("conversation.item.retrieved"))["item"])


# -- response.cancel ---------------------------------------------------------------------------------------
async def test_cancel_right_behind_response_create_ends_the_response_with_nothing_announced(conn: Conn) -> None:
    await conn.send(text_item(LONG_TEXT))
    await conn.send({"type": "response.create"})
    await conn.send({"type": "response.cancel"})
    done = await conn.until("response.done")
    assert done["response"]["status"] == "cancelled"
    assert done["response"]["status_details"] == {"type": "cancelled", "reason": "client_cancelled"}
    types = assert_well_formed(conn.seen, done["response"]["id"])
    assert "response.output_item.done" not in types or "response.output_item.added" in types
    # The conversation is free for the next response.
    await conn.send({"type": "response.create", "response": {"output_modalities": ["text"]}})
    assert (await conn.until("response.done"))["response"]["status"] == "completed"


async def test_cancel_once_the_response_is_created_closes_only_what_was_announced(conn: Conn) -> None:
    await conn.send(text_item(LONG_TEXT))
    await conn.send({"type": "response.create"})
    created = await conn.until("response.created")
    await conn.send({"type": "response.cancel"})
    done = await conn.until("response.done")
    assert done["response"]["status"] == "cancelled"
    assert_well_formed(conn.seen, created["response"]["id"])


@pytest.mark.parametrize("modality", ["audio", "text"])
async def test_cancel_mid_reply_closes_the_part_and_the_item_stays_retrievable_as_incomplete(
    conn: Conn, modality: str
) -> None:
    await update(conn, output_modalities=[modality])
    await conn.send(text_item(LONG_TEXT))
    await conn.send({"type": "response.create"})
    first = await conn.until("response.output_audio.delta" if modality == "audio" else "response.output_text.delta")
    await conn.send({"type": "response.cancel"})
    done = await conn.until("response.done")
    assert done["response"]["status"] == "cancelled"
    types = assert_well_formed(conn.seen, first["response_id"])
    if modality == "audio":
        assert {"response.output_audio.done", "response.output_audio_transcript.done"} <= set(types)
    else:
        assert "response.output_text.done" in types
    item = await retrieve(conn, first["item_id"])
    assert item["status"] == "incomplete" and item == done["response"]["output"][0]
    said = item["content"][0]["transcript" if modality == "audio" else "text"]
    assert LONG_TEXT.startswith(said) and len(said) < len(LONG_TEXT)


async def test_cancel_mid_function_call_arguments_leaves_an_incomplete_call_that_is_not_to_be_run(
    conn: Conn,
) -> None:
    await update(conn, tools=[LOOKUP])
    await conn.send(text_item(LOOKUP_TEXT))
    await conn.send({"type": "response.create"})
    first = await conn.until("response.function_call_arguments.delta")
    await conn.send({"type": "response.cancel"})
    done = await conn.until("response.done")
    assert done["response"]["status"] == "cancelled"
    types = assert_well_formed(conn.seen, first["response_id"])
    # Clients run the function on arguments.done: a cut call gets none.
    assert "response.function_call_arguments.done" not in types
    item = await retrieve(conn, first["item_id"])
    assert item["type"] == "function_call" and item["status"] == "incomplete"
    full = json.dumps({"query": LOOKUP_TEXT})
    assert full.startswith(item["arguments"]) and len(item["arguments"]) < len(full)


# -- max_output_tokens -------------------------------------------------------------------------------------
async def test_session_max_output_tokens_stops_a_spoken_reply_as_incomplete_at_that_many_tokens(conn: Conn) -> None:
    await update(conn, max_output_tokens=20)
    await conn.send(text_item(LONG_TEXT))
    await conn.send({"type": "response.create"})
    created = await conn.until("response.created")
    assert created["response"]["max_output_tokens"] == 20
    done = (await conn.until("response.done"))["response"]
    assert done["status"] == "incomplete"
    assert done["status_details"] == {"type": "incomplete", "reason": "max_output_tokens"}
    types = assert_well_formed(conn.seen, done["id"])
    assert {"response.output_audio.done", "response.output_audio_transcript.done"} <= set(types)
    usage = done["usage"]
    assert 18 <= usage["output_tokens"] <= 20  # stopped at the limit, in whole 50 ms audio tokens
    audio = b"".join(
        base64.b64decode(e["delta"])
        for e in conn.seen
        if e["type"] == "response.output_audio.delta" and e["response_id"] == done["id"]
    )
    assert usage["output_token_details"]["audio_tokens"] == len(audio) // 48 // 50  # 1 token per 50 ms
    item = done["output"][0]
    assert item["status"] == "incomplete"
    assert item == await retrieve(conn, item["id"])


async def test_response_max_output_tokens_cuts_a_text_reply_at_four_characters_a_token(conn: Conn) -> None:
    await conn.send(text_item(LONG_TEXT))
    await conn.send({"type": "response.create", "response": {"output_modalities": ["text"], "max_output_tokens": 5}})
    done = (await conn.until("response.done"))["response"]
    assert (done["status"], done["status_details"]["reason"], done["max_output_tokens"]) == (
        "incomplete",
        "max_output_tokens",
        5,
    )
    assert_well_formed(conn.seen, done["id"])
    text = done["output"][0]["content"][0]["text"]
    assert text == LONG_TEXT[: 5 * 4 + 3]
    assert done["usage"]["output_tokens"] == 5
    # A limit the reply stays within changes nothing.
    await conn.send({"type": "response.create", "response": {"output_modalities": ["text"], "max_output_tokens": 4096}})
    assert (await conn.until("response.done"))["response"]["status"] == "completed"


async def test_max_output_tokens_counts_function_call_arguments_too(conn: Conn) -> None:
    await update(conn, tools=[LOOKUP], max_output_tokens=10)
    await conn.send(text_item(LOOKUP_TEXT))
    await conn.send({"type": "response.create"})
    done = (await conn.until("response.done"))["response"]
    assert (done["status"], done["status_details"]) == (
        "incomplete",
        {"type": "incomplete", "reason": "max_output_tokens"},
    )
    types = assert_well_formed(conn.seen, done["id"])
    assert "response.function_call_arguments.done" not in types
    call = done["output"][0]
    assert call["type"] == "function_call" and call["status"] == "incomplete"
    assert len(call["arguments"]) == 10 * 4 + 3 and done["usage"]["output_tokens"] == 10
