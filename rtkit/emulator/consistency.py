"""What a value's shape cannot tell: whether it agrees with the session or the conversation it is sent to.

``rtkit.schema`` says what a ``tool_choice``, an item or a voice looks like; these say whether it fits what is
there: a forced tool among the tools, an ``item_reference`` or ``previous_item_id`` naming an item, a
``function_call_output`` answering a call, the voice kept once the model has spoken. Pure functions over plain
dicts (validated ones), each raising the service's ``ApiError``; the engine and the session call them before
they change anything, so a refused event changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from rtkit.emulator.errors import ApiError
from rtkit.emulator.items import stored

if TYPE_CHECKING:
    from rtkit.emulator.sessions import SessionState

__all__ = [
    "check_call_output",
    "check_new_item",
    "check_previous_item",
    "check_tool_choice",
    "check_voice",
    "prepare_response",
    "resolve_input",
]

Items = Mapping[str, dict[str, Any]]


def check_tool_choice(tool_choice: Any, tools: Iterable[dict[str, Any]], param: str) -> None:
    """A forced function must be one of ``tools``, a forced MCP tool one of their servers."""
    if not isinstance(tool_choice, dict):
        return
    tools = list(tools)
    if tool_choice["type"] == "function":
        found = any(t["type"] == "function" and t.get("name") == tool_choice["name"] for t in tools)
    else:
        found = any(t["type"] == "mcp" and t.get("server_label") == tool_choice["server_label"] for t in tools)
    if not found:
        raise ApiError(
            f"Tool choice '{tool_choice['type']}' not found in 'tools' parameter.",
            code="invalid_value",
            param=param,
        )


def check_voice(current: Any, asked: Any, *, spoken: bool) -> None:
    """The SDK: "Voice cannot be changed during the session once the model has responded with audio at least
    once"; the service's words and code as its clients report them (``param`` null)."""
    if spoken and asked is not None and asked != current:
        raise ApiError(
            "Cannot update a conversation's voice if assistant audio is present.",
            code="cannot_update_voice",
        )


def check_previous_item(previous_item_id: Any, items: Items) -> None:
    """``conversation.item.create``'s ``previous_item_id``: absent (append), ``root`` (first) or an item there;
    "if the ID cannot be found, an error will be returned and the item will not be added" (the SDK)."""
    if previous_item_id is None or previous_item_id == "root":
        return
    if not isinstance(previous_item_id, str):
        raise ApiError(
            "Invalid type for 'previous_item_id': expected a string, but got "
            f"{type(previous_item_id).__name__} instead.",
            code="invalid_type",
            param="previous_item_id",
        )
    if previous_item_id not in items:
        raise ApiError(
            f"Item with item_id '{previous_item_id}' not found.",
            code="item_not_found",
            param="previous_item_id",
        )


def check_call_output(item: dict[str, Any], context: Iterable[dict[str, Any]]) -> None:
    """A ``function_call_output`` answers a ``function_call`` of the context by its ``call_id``; the service's
    words and code as its clients report them (``param`` null)."""
    if item["type"] != "function_call_output":
        return
    if not any(i.get("type") == "function_call" and i.get("call_id") == item["call_id"] for i in context):
        raise ApiError(f"Tool call ID '{item['call_id']}' not found in conversation.", code="invalid_tool_call_id")


def check_new_item(item: dict[str, Any], previous_item_id: Any, items: Items) -> None:
    """``conversation.item.create``: a new id, a ``previous_item_id`` that is there, an output that answers a call."""
    if item["id"] in items:
        raise ApiError(f"Item with id '{item['id']}' already exists.", code="duplicate_item_id", param="item.id")
    check_previous_item(previous_item_id, items)
    check_call_output(item, items.values())


def prepare_response(params: dict[str, Any], session: SessionState, items: Items, *, spoken: bool) -> dict[str, Any]:
    """``response.create``'s validated params checked against the session and the conversation, with ``input``
    (when given) resolved to the items the response sees."""
    tools = params.get("tools", session.tools)
    check_tool_choice(params.get("tool_choice", session.tool_choice), tools, "response.tool_choice")
    voice = ((params.get("audio") or {}).get("output") or {}).get("voice")
    check_voice(session.voice_config, voice, spoken=spoken)
    if "input" in params:
        params = {**params, "input": resolve_input(params["input"], items)}
    return params


def resolve_input(inputs: list[dict[str, Any]], items: Items) -> list[dict[str, Any]]:
    """``response.create``'s ``input`` as the items the response sees: each ``item_reference`` replaced by the
    item it names (which must be in the session), each output answering a call of the conversation or of the
    input before it."""
    resolved: list[dict[str, Any]] = []
    for index, entry in enumerate(inputs):
        if entry["type"] == "item_reference":
            if entry["id"] not in items:
                raise ApiError(
                    f"Item with item_id '{entry['id']}' not found.",
                    code="item_not_found",
                    param=f"response.input[{index}].id",
                )
            entry = items[entry["id"]]
        else:
            entry = stored(entry)
            check_call_output(entry, [*items.values(), *resolved])
        resolved.append(entry)
    return resolved
