"""Conversation items as a client adds them, and as the conversation then holds them.

Their shapes are ``rtkit.schema.ConversationItem`` (messages by role with their content parts, function calls
and their outputs, the MCP items); this module adds what the server fills in (``id``, and ``object``/``status``
on the items that have them), takes the audio out of ``input_audio`` parts, and puts an item where
``previous_item_id`` says. Whether an item agrees with the conversation is ``consistency``'s business.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from pydantic import TypeAdapter

from rtkit._ids import new_id
from rtkit.emulator.errors import ApiError
from rtkit.emulator.validation import validated
from rtkit.schema import ConversationItem

__all__ = ["insert_item", "parse_item", "stored", "take_audio"]

_item_adapter: TypeAdapter[Any] = TypeAdapter(ConversationItem)
#: The item types that carry ``object: "realtime.item"`` and a ``status`` (the MCP items have neither).
_REALTIME_ITEMS = {"message", "function_call", "function_call_output"}


def parse_item(raw: Any) -> dict[str, Any]:
    """``conversation.item.create``'s ``item``, validated, as the conversation will hold it."""
    if raw is None:
        raise ApiError("Missing required parameter: 'item'.", code="missing_required_parameter", param="item")
    return stored(validated(_item_adapter, raw, "item"))


def stored(item: dict[str, Any]) -> dict[str, Any]:
    """A validated item with what the server fills in: an id if it has none; a message or function item is
    ``completed`` whatever status the client gave ("it has no effect on the conversation")."""
    item = {"id": new_id("item"), **item}
    if item["type"] in _REALTIME_ITEMS:
        item["object"] = "realtime.item"
        item["status"] = "completed"
    return item


def take_audio(item: dict[str, Any], root: str = "item") -> bytes | None:
    """The bytes of a user message's ``input_audio`` parts (base64 in the session's input format), taken out of
    the item: the conversation keeps the part and its transcript, not the audio."""
    if item["type"] != "message" or item["role"] != "user":
        return None
    chunks: list[bytes] = []
    for index, part in enumerate(item["content"]):
        audio = part.get("audio") if part["type"] == "input_audio" else None
        if audio is None:
            continue
        try:
            chunks.append(base64.b64decode(audio, validate=True))
        except (binascii.Error, ValueError):
            param = f"{root}.content[{index}].audio"
            raise ApiError(
                f"Invalid value for '{param}': expected base64-encoded audio bytes.",
                code="invalid_value",
                param=param,
            ) from None
    for part in item["content"]:
        if part["type"] == "input_audio":
            part.pop("audio", None)
    return b"".join(chunks) if chunks else None


def insert_item(items: dict[str, dict[str, Any]], item: dict[str, Any], previous_item_id: str | None) -> str | None:
    """Put ``item`` into ``items`` (in order) after ``previous_item_id``: ``None`` appends, ``root`` puts it first.
    Returns the id of the item now before it, as ``conversation.item.added`` reports it."""
    last = next(reversed(items), None)
    if previous_item_id is None or previous_item_id == last:
        items[item["id"]] = item
        return last
    entries = list(items.items())
    items.clear()
    if previous_item_id == "root":
        items[item["id"]] = item
    for key, value in entries:
        items[key] = value
        if key == previous_item_id:
            items[item["id"]] = item
    return None if previous_item_id == "root" else previous_item_id
