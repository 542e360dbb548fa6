"""The conversation's items, as the service keeps them: in order, with the audio they carry, and what the
client may do to them (create, retrieve, delete, truncate), each refused in the service's words. No I/O: the
protocol core (``core.py``) sends the events these changes owe the client."""

from __future__ import annotations

from typing import Any

from rtkit.audio.formats import WireFormat
from rtkit.audio.pcm import PCM, REALTIME_RATE
from rtkit.emulator.consistency import check_new_item
from rtkit.emulator.errors import ApiError
from rtkit.emulator.items import insert_item, parse_item, take_audio
from rtkit.emulator.usage import (
    AUDIO_MS_PER_TOKEN,
    ITEM_OVERHEAD_TOKENS,
    USER_AUDIO_MS_PER_TOKEN,
    InputBlock,
    text_tokens,
)

__all__ = ["ItemStore"]

_JSON_KINDS = {bool: "a boolean", float: "a number", str: "a string", dict: "an object", list: "an array"}


class ItemStore:
    """The items of one conversation, the input audio of user items, and how much audio each reply produced."""

    def __init__(self) -> None:
        self.items: dict[str, dict[str, Any]] = {}
        self.audio: dict[str, PCM] = {}
        #: Audio each assistant message produced (ms), lowered by a truncate.
        self.audio_ms: dict[str, int] = {}
        #: Items truncated by the client: their transcript is gone for good, whatever the response does next.
        self.truncated: set[str] = set()

    @property
    def spoken(self) -> bool:
        """The model has produced audio in this session: its voice is fixed from then on."""
        return bool(self.audio_ms)

    def last_id(self) -> str | None:
        return next(reversed(self.items), None)

    def latest(self) -> dict[str, Any] | None:
        return next(reversed(self.items.values()), None)

    def input_blocks(self, context: list[dict[str, Any]]) -> list[InputBlock]:
        """What a response reading ``context`` (the conversation, or ``response.create``'s own ``input``) is
        billed for, item by item: text as text, a user's audio at 1 token per 100 ms, the model's at 1 per 50 ms
        up to where it was truncated (its transcript is not read again: the audio is)."""
        blocks = []
        for entry in context:
            item = self.items.get(entry.get("id", "")) if entry.get("type") == "item_reference" else entry
            if item is None:
                continue
            text = ITEM_OVERHEAD_TOKENS
            audio = 0
            for part in item.get("content") or []:
                kind = part.get("type")
                if kind in ("input_text", "output_text", "text"):
                    text += text_tokens(str(part.get("text") or ""))
                elif kind == "input_audio" and item.get("id") in self.audio:
                    ms = self.audio[item["id"]].size * 1000 // REALTIME_RATE
                    audio += ms // USER_AUDIO_MS_PER_TOKEN
                elif kind == "output_audio":
                    audio += self.audio_ms.get(str(item.get("id")), 0) // AUDIO_MS_PER_TOKEN
            for field in ("name", "arguments", "output"):
                if isinstance(item.get(field), str):
                    text += text_tokens(item[field])
            blocks.append(InputBlock(f"{item.get('id')}:{text}:{audio}", text, audio))
        return blocks

    def create(self, event: dict[str, Any], input_format: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
        """``conversation.item.create``: the item as stored and the id of the item it follows."""
        item = parse_item(event.get("item"))
        check_new_item(item, event.get("previous_item_id"), self.items)
        audio = take_audio(item)
        if audio is not None:
            self.audio[item["id"]] = WireFormat.of(input_format).decode(audio)
        return item, insert_item(self.items, item, event.get("previous_item_id"))

    def get(self, event: dict[str, Any]) -> dict[str, Any]:
        """The item an event's ``item_id`` names, or the service's refusal."""
        item_id = event.get("item_id")
        if not isinstance(item_id, str):
            raise ApiError("Missing required parameter: 'item_id'.", code="missing_required_parameter", param="item_id")
        if item_id not in self.items:
            raise ApiError(f"Item with item_id '{item_id}' not found.", code="item_not_found", param="item_id")
        return self.items[item_id]

    def delete(self, event: dict[str, Any]) -> str:
        item = self.get(event)
        del self.items[item["id"]]
        self.audio.pop(item["id"], None)
        return str(item["id"])

    def truncate(self, event: dict[str, Any]) -> tuple[str, int, int]:
        """``conversation.item.truncate``: (item id, content index, audio_end_ms) once done."""
        item = self.get(event)
        asked = event.get("audio_end_ms")
        if not isinstance(asked, int) or asked < 0:
            raise ApiError(
                "Invalid value for 'audio_end_ms': expected a non-negative integer.",
                code="invalid_value",
                param="audio_end_ms",
            )
        if item.get("role") != "assistant" or item["id"] not in self.audio_ms:
            raise ApiError("Only model output audio messages can be truncated", code="unsupported_content_type")
        index = _content_index(event, item)
        if item["content"][index].get("type") != "output_audio":
            raise ApiError("Only model output audio messages can be truncated", code="unsupported_content_type")
        have = self.audio_ms[item["id"]]
        if asked > have:
            raise ApiError(
                f"Audio content of {have}ms is already shorter than {asked}ms",
                code="invalid_value",
                param="audio_end_ms",
            )
        self.audio_ms[item["id"]] = asked
        # "Truncating audio will delete the server-side text transcript to ensure there is not text in the
        # context that hasn't been heard by the user" (the SDK's docstring of conversation.item.truncate).
        self.truncated.add(item["id"])
        for part in item.get("content") or []:
            if part.get("type") == "output_audio":
                part["transcript"] = None
        return str(item["id"]), index, asked


def _content_index(event: dict[str, Any], item: dict[str, Any]) -> int:
    """``conversation.item.truncate``'s ``content_index``: required, an integer, a part the item has."""
    index = event.get("content_index")
    if index is None:
        raise ApiError(
            "Missing required parameter: 'content_index'.", code="missing_required_parameter", param="content_index"
        )
    if not isinstance(index, int) or isinstance(index, bool):
        raise ApiError(
            f"Invalid type for 'content_index': expected an integer, but got {_JSON_KINDS.get(type(index), 'null')} "
            "instead.",
            code="invalid_type",
            param="content_index",
        )
    if index < 0:
        raise ApiError(
            f"Invalid 'content_index': integer below minimum value. Expected a value >= 0, but got {index} instead.",
            code="integer_below_min_value",
            param="content_index",
        )
    parts = len(item.get("content") or [])
    if index >= parts:
        raise ApiError(
            f"Invalid value for 'content_index': item '{item['id']}' has {parts} content "
            f"part{'s' if parts != 1 else ''}, so there is no content part at index {index}.",
            code="invalid_value",
            param="content_index",
        )
    return index
