"""Function calling, emulated: when the "model" calls one of the session's function tools, and with what.

There is no language model here, so the rule is one a lesson can predict: the emulator calls a function when
``tool_choice`` names it, when ``tool_choice`` is ``"required"`` (the first function), or, with ``"auto"``,
when the user's latest *text* names it (``get_weather`` or "get weather"). The arguments follow the tool's
JSON schema, filled with plain values (a string property gets the user's text, numbers 0, the first enum
value...), so the client's own argument parsing runs as it would against the real API. After the client adds
a ``function_call_output`` and asks for a response, the reply says what the function returned.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

__all__ = ["ToolCall", "choose_tool", "example_arguments"]


@dataclass(frozen=True)
class ToolCall:
    name: str
    #: A JSON object, as a string: what the API streams in ``response.function_call_arguments.delta``.
    arguments: str


def choose_tool(tools: list[dict[str, Any]], tool_choice: Any, user_text: str | None) -> ToolCall | None:
    functions = [t for t in tools or [] if t.get("type") == "function" and t.get("name")]
    if not functions or tool_choice == "none":
        return None
    chosen: dict[str, Any] | None = None
    if isinstance(tool_choice, dict) and tool_choice.get("type") == "function":
        chosen = next((f for f in functions if f["name"] == tool_choice.get("name")), None)
    elif tool_choice == "required":
        chosen = functions[0]
    elif user_text:
        said = user_text.lower()
        chosen = next((f for f in functions if _named(f["name"], said)), None)
    if chosen is None:
        return None
    return ToolCall(chosen["name"], json.dumps(example_arguments(chosen.get("parameters") or {}, user_text or "")))


def _named(name: str, said: str) -> bool:
    name = name.lower()
    return name in said or name.replace("_", " ") in said


def example_arguments(schema: dict[str, Any], text: str) -> dict[str, Any]:
    """A value for every property of an object schema (nested objects included)."""
    properties = schema.get("properties") or {}
    return {name: _example(prop if isinstance(prop, dict) else {}, text) for name, prop in properties.items()}


def _example(schema: dict[str, Any], text: str) -> Any:
    if schema.get("enum"):
        return schema["enum"][0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind == "object":
        return example_arguments(schema, text)
    if kind == "array":
        return []
    if kind in ("integer", "number"):
        return schema.get("minimum", 0)
    if kind == "boolean":
        return False
    return text
