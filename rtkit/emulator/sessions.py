"""The live configuration of one emulated session: defaults, validation, partial updates.

The real service answers ``session.update`` with the *whole* session (every field filled), and
merges partial updates into what is there; a rejected update changes nothing.
"""

from __future__ import annotations

import copy
import time
from typing import Any

from pydantic import TypeAdapter

from rtkit._ids import new_id
from rtkit.emulator.consistency import check_tool_choice, check_voice
from rtkit.emulator.errors import ApiError
from rtkit.emulator.validation import validated
from rtkit.schema import DEFAULT_INSTRUCTIONS, DEFAULT_MODEL, SessionConfig

_session_adapter: TypeAdapter[Any] = TypeAdapter(SessionConfig)

DEFAULT_TURN_DETECTION: dict[str, Any] = {
    "type": "server_vad",
    "threshold": 0.5,
    "prefix_padding_ms": 300,
    "silence_duration_ms": 500,
    "idle_timeout_ms": None,
    "create_response": True,
    "interrupt_response": True,
}
_PCM = {"type": "audio/pcm", "rate": 24000}


def _defaults(kind: str, model: str) -> dict[str, Any]:
    audio_input = {
        "format": dict(_PCM),
        "transcription": None,
        "noise_reduction": None,
        "turn_detection": dict(DEFAULT_TURN_DETECTION),
    }
    if kind == "transcription":
        return {"type": "transcription", "audio": {"input": audio_input}, "include": None}
    return {
        "type": "realtime",
        "object": "realtime.session",
        "model": model,
        "output_modalities": ["audio"],
        "instructions": DEFAULT_INSTRUCTIONS,
        "tools": [],
        "tool_choice": "auto",
        "max_output_tokens": "inf",
        "tracing": None,
        "truncation": "auto",
        "prompt": None,
        "include": None,
        "audio": {"input": audio_input, "output": {"format": dict(_PCM), "voice": "marin", "speed": 1.0}},
    }


def validate_session(payload: Any, root: str = "session") -> dict[str, Any]:
    """Validate a client-supplied session object; returns only the fields the client set."""
    return validated(_session_adapter, payload, root)


#: The objects a partial update merges into; any other object (``tool_choice``, ``truncation``, ``prompt``,
#: ``reasoning``, ``tracing``, a voice) is replaced whole, as a forced tool or a prompt cannot be half changed.
_MERGED = {"audio", "input", "output", "format", "transcription", "noise_reduction", "turn_detection"}


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    for key, value in update.items():
        current = base.get(key)
        same_kind = not (
            isinstance(value, dict)
            and isinstance(current, dict)
            and value.get("type", current.get("type")) != current.get("type")
        )
        if isinstance(value, dict) and isinstance(current, dict) and same_kind and key in _MERGED:
            _merge(current, value)
        else:
            base[key] = copy.deepcopy(value)
    return base


class SessionState:
    """One session's configuration, as the service would report it in ``session.created``/``updated``."""

    def __init__(self, config: dict[str, Any] | None = None, *, default_model: str = DEFAULT_MODEL) -> None:
        config = config or {"type": "realtime"}
        self.id = new_id("sess")
        self.created_at = int(time.time())
        self._data = _defaults(config.get("type", "realtime"), default_model)
        _merge(self._data, config)
        self._check()

    @classmethod
    def from_client(cls, payload: Any, *, default_model: str = DEFAULT_MODEL) -> SessionState:
        return cls(validate_session(payload), default_model=default_model)

    def update(self, payload: Any, *, spoken: bool = False) -> None:
        """Apply a ``session.update``; raises ``ApiError`` and leaves the session unchanged on bad input.
        ``spoken``: the model has produced audio in this session (the voice is then fixed)."""
        update = validate_session(payload)
        if update.get("type") != self._data["type"]:
            # The service's words, as clients that forget ``?intent=transcription`` report them (code
            # ``invalid_parameter``); the other way round is worded the same way.
            raise ApiError(
                f"Passing a {update.get('type')} session update to a {self._data['type']} session is not allowed.",
                code="invalid_parameter",
                param="session.type",
            )
        if self._data["type"] == "realtime" and "model" in update and update["model"] != self._data["model"]:
            raise ApiError(
                "Cannot update a conversation's model after it has started.",
                code="invalid_value",
                param="session.model",
            )
        voice = ((update.get("audio") or {}).get("output") or {}).get("voice")
        if self.kind == "realtime":
            check_voice(self.voice_config, voice, spoken=spoken)
        previous, self._data = self._data, _merge(copy.deepcopy(self._data), update)
        try:
            self._check()
        except ApiError:
            self._data = previous
            raise

    def _check(self) -> None:
        """What must agree within the whole (merged) configuration."""
        if self.kind == "realtime":
            check_tool_choice(self.tool_choice, self.tools, "session.tool_choice")

    # -- what the engine reads ------------------------------------------------------------
    @property
    def kind(self) -> str:
        return str(self._data["type"])

    @property
    def model(self) -> str:
        return str(self._data.get("model") or "")

    @property
    def instructions(self) -> str:
        return str(self._data.get("instructions") or "")

    @property
    def output_modalities(self) -> list[str]:
        return list(self._data.get("output_modalities") or ["audio"])

    @property
    def turn_detection(self) -> dict[str, Any] | None:
        td = self._data["audio"]["input"].get("turn_detection")
        if td is None:
            return None
        return (
            {**DEFAULT_TURN_DETECTION, **td}
            if td.get("type") == "server_vad"
            else {"create_response": True, "interrupt_response": True, **td}
        )

    @property
    def transcription(self) -> dict[str, Any] | None:
        value = self._data["audio"]["input"].get("transcription")
        return value if isinstance(value, dict) else None

    @property
    def include(self) -> list[str]:
        return list(self._data.get("include") or [])

    @property
    def tools(self) -> list[dict[str, Any]]:
        return list(self._data.get("tools") or [])

    @property
    def tool_choice(self) -> Any:
        return self._data.get("tool_choice", "auto")

    @property
    def voice_config(self) -> str | dict[str, Any]:
        """``audio.output.voice`` as set: a name, or ``{"id": "voice_…"}`` for a custom voice."""
        value = ((self._data.get("audio") or {}).get("output") or {}).get("voice") or "marin"
        return dict(value) if isinstance(value, dict) else str(value)

    @property
    def voice(self) -> str:
        """The voice's name, or a custom voice's id (what a response reports as its ``audio.output.voice``)."""
        value = self.voice_config
        return str(value["id"]) if isinstance(value, dict) else value

    @property
    def input_format(self) -> dict[str, Any]:
        """``audio.input.format`` as the session reports it (``{"type": "audio/pcm", "rate": 24000}`` by default)."""
        return dict(self._data["audio"]["input"].get("format") or _PCM)

    @property
    def output_format(self) -> dict[str, Any]:
        return dict(self._data.get("audio", {}).get("output", {}).get("format") or _PCM)

    @property
    def max_output_tokens(self) -> int | str:
        value = self._data.get("max_output_tokens")
        return value if isinstance(value, int) else "inf"

    def to_wire(self, expires_at: int | None = None) -> dict[str, Any]:
        data = copy.deepcopy(self._data)
        data["id"] = self.id
        data["object"] = "realtime.session" if self.kind == "realtime" else "realtime.transcription_session"
        data["expires_at"] = expires_at if expires_at is not None else self.created_at + 3600
        return data
