"""Function calling, emulated: when the "model" calls one of the session's function tools, and with what.

There is no language model here, so the rule is one a lesson can predict: the emulator calls a tool when
``tool_choice`` names it, when ``tool_choice`` is ``"required"`` (the one the text names, else the first), or,
with ``"auto"``, when the user's latest *text* names it as a word (``get_weather`` or "get weather"). The
candidates are the session's function tools and the tools its MCP servers listed (``mcp.McpTools``). The
arguments follow the tool's JSON schema, filled from the text where it says something that fits: numbers in
the text fill the number properties in order, phrases in double quotes the string properties, an enum value
the text names is chosen; otherwise a string gets the user's whole text, a number its minimum or 0, an enum
its first value. So the client's own argument parsing runs as it would against the real API. After the client
adds a ``function_call_output`` (or the MCP server answered) and asks for a response, the reply says what the
tool returned.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["ToolCall", "choose_tool", "example_arguments"]


@dataclass(frozen=True)
class ToolCall:
    name: str
    #: A JSON object, as a string: what the API streams in ``response.function_call_arguments.delta``.
    arguments: str
    #: The MCP server that has the tool; None for a function tool (the client runs it).
    server_label: str | None = None


def choose_tool(
    tools: list[dict[str, Any]],
    tool_choice: Any,
    user_text: str | None,
    mcp_tools: Sequence[dict[str, Any]] = (),
) -> ToolCall | None:
    """The call the "model" makes, if any. ``mcp_tools``: the tools the session's MCP servers listed, each with
    its ``server_label`` and ``input_schema``."""
    functions = [t for t in tools or [] if t.get("type") == "function" and t.get("name")]
    candidates = [{"name": t["name"], "schema": t.get("parameters") or {}, "server_label": None} for t in functions]
    candidates += [
        {"name": t["name"], "schema": t.get("input_schema") or {}, "server_label": t["server_label"]} for t in mcp_tools
    ]
    if tool_choice == "none":
        return None
    if isinstance(tool_choice, dict) and tool_choice.get("type") == "function":
        candidates = [c for c in candidates if c["server_label"] is None and c["name"] == tool_choice.get("name")]
    elif isinstance(tool_choice, dict) and tool_choice.get("type") == "mcp":
        candidates = [
            c
            for c in candidates
            if c["server_label"] == tool_choice.get("server_label") and tool_choice.get("name") in (None, c["name"])
        ]
    said = (user_text or "").lower()
    named = next((c for c in candidates if said and _named(c["name"], said)), None)
    forced = tool_choice == "required" or isinstance(tool_choice, dict)
    chosen = named or (candidates[0] if forced and candidates else None)
    if chosen is None:
        return None
    arguments = example_arguments(chosen["schema"], user_text or "")
    return ToolCall(chosen["name"], json.dumps(arguments), chosen["server_label"])


def _named(name: str, said: str) -> bool:
    return any(re.search(rf"\b{re.escape(n)}\b", said) for n in {name.lower(), name.lower().replace("_", " ")})


def example_arguments(schema: dict[str, Any], text: str) -> dict[str, Any]:
    """A value for every property of an object schema (nested objects included), from ``text`` where it fits."""
    numbers = iter(re.findall(r"-?\d+(?:\.\d+)?", text))
    quoted = iter(re.findall(r'["\u201c]([^"\u201d]+)["\u201d]', text))
    return _object(schema, text, numbers, quoted)


def _object(schema: dict[str, Any], text: str, numbers: Iterator[str], quoted: Iterator[str]) -> dict[str, Any]:
    properties = schema.get("properties") or {}
    return {
        name: _example(prop if isinstance(prop, dict) else {}, text, numbers, quoted)
        for name, prop in properties.items()
    }


def _example(schema: dict[str, Any], text: str, numbers: Iterator[str], quoted: Iterator[str]) -> Any:
    if schema.get("enum"):
        said = text.lower()
        return next((v for v in schema["enum"] if isinstance(v, str) and _named(v, said)), schema["enum"][0])
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind == "object":
        return _object(schema, text, numbers, quoted)
    if kind == "array":
        return []
    if kind in ("integer", "number"):
        number = next(numbers, None)
        if number is None:
            return schema.get("minimum", 0)
        value = float(number)
        return int(value) if kind == "integer" or value.is_integer() else value
    if kind == "boolean":
        return False
    return next(quoted, text)
