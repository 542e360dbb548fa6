"""Reading JSON that a stranger sent: one strict parser for the broker, the emulator and its events.

Python's ``json`` accepts things that later fail far from the parser: ``NaN``/``Infinity`` (and
``1e999``, which becomes ``inf``) break every ``allow_nan=False`` response that echoes them; a lone
surrogate (``"\\ud800"``) is a ``str`` that cannot be encoded again, so it fails inside httpx or a
response; nesting deeper than the recursion limit raises ``RecursionError``, which no ``except
ValueError`` catches. Each is refused here, at the door, as a ``JsonError`` the caller maps to its own
error shape.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

__all__ = ["MAX_DEPTH", "JsonError", "loads"]

#: Deeper than any real request (a tool's JSON Schema nests a dozen levels at most).
MAX_DEPTH = 64

# Only a \u escape can put a surrogate into a parsed str (valid UTF-8 text decodes to none), so the
# walk that looks for unpaired ones runs only when the raw text has such an escape.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abcdefABCDEF]")


class JsonError(ValueError):
    """The body is not JSON this service accepts; ``reason`` says why, in words a client can act on."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _constant(name: str) -> Any:
    raise JsonError(f"{name} is not a JSON value")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JsonError(f"the number {text[:32]} is out of range")
    return value


def loads(raw: str | bytes, *, max_depth: int = MAX_DEPTH) -> Any:
    """Parse ``raw`` (UTF-8 if bytes); raise ``JsonError`` for anything ``json`` would let through badly."""
    if isinstance(raw, bytes | bytearray):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise JsonError("the body is not valid UTF-8") from None
    else:
        text = raw
    try:
        value = json.loads(text, parse_constant=_constant, parse_float=_finite)
    except RecursionError:
        raise JsonError(f"the JSON nests deeper than {max_depth} levels") from None
    except JsonError:
        raise
    except ValueError as exc:
        raise JsonError(f"the body is not valid JSON ({exc})") from None
    _check(value, max_depth, surrogates=bool(_SURROGATE_ESCAPE.search(text)))
    return value


def _check(value: Any, max_depth: int, *, surrogates: bool) -> None:
    """Depth and unpaired surrogates, without recursion (the point is to survive hostile nesting)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            if depth > max_depth:
                raise JsonError(f"the JSON nests deeper than {max_depth} levels")
            items = node.items() if isinstance(node, dict) else enumerate(node)
            for key, child in items:
                if surrogates and isinstance(key, str):
                    _encodable(key)
                if isinstance(child, dict | list):
                    stack.append((child, depth + 1))
                elif surrogates and isinstance(child, str):
                    _encodable(child)
        elif surrogates and isinstance(node, str):
            _encodable(node)


def _encodable(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise JsonError("a string holds an unpaired surrogate (\\ud800-\\udfff), which is not valid Unicode") from None
