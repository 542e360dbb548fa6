"""Typed session configuration of the GA Realtime API, strict the way the real service is.

The official SDK's models accept anything (they are for *reading* responses); these refuse
unknown fields, because the real service does (``Unknown parameter: 'session.voice'.``) and a
workshop participant should learn that from the emulator, not in production. The emulator
validates with them; rtkit's client builds its configs with them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = [
    "AudioConfig",
    "AudioFormat",
    "AudioInputConfig",
    "AudioOutputConfig",
    "ExpiresAfter",
    "RealtimeSessionConfig",
    "SemanticVad",
    "ServerVad",
    "TranscriptionSessionConfig",
    "describe_validation_error",
    "is_realtime_model",
]

DEFAULT_MODEL = "gpt-realtime"
DEFAULT_INSTRUCTIONS = (
    "Your knowledge cutoff is 2023-10. You are a helpful, witty, and friendly AI. Act like a human, but "
    "remember that you aren't a human and that you can't do human things in the real world."
)

_REALTIME_FAMILIES = ("gpt-realtime", "gpt-4o-realtime", "gpt-4o-mini-realtime", "gpt-audio")


def is_realtime_model(name: str) -> bool:
    """The real service accepts the whole family (dated snapshots, ``-mini``, newer versions)."""
    return name.startswith(_REALTIME_FAMILIES)


#: The Realtime API documents no limit on ``instructions``; this is the one OpenAI documents for an
#: assistant's instructions (256,000 characters), so that a runaway prompt fails here as it would there,
#: instead of sitting in memory.
MAX_INSTRUCTIONS_CHARS = 256_000


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AudioFormat(_Strict):
    type: Literal["audio/pcm", "audio/pcmu", "audio/pcma"] = "audio/pcm"
    rate: Literal[24000] | None = None


class ServerVad(_Strict):
    type: Literal["server_vad"]
    threshold: float = Field(0.5, ge=0.0, le=1.0)
    prefix_padding_ms: int = Field(300, ge=0)
    silence_duration_ms: int = Field(500, ge=0)
    create_response: bool = True
    interrupt_response: bool = True
    idle_timeout_ms: int | None = Field(None, ge=0)


class SemanticVad(_Strict):
    type: Literal["semantic_vad"]
    eagerness: Literal["low", "medium", "high", "auto"] = "auto"
    create_response: bool = True
    interrupt_response: bool = True


TurnDetection = Annotated[ServerVad | SemanticVad, Field(discriminator="type")]


class Transcription(_Strict):
    model: str | None = None
    language: str | None = None
    prompt: str | None = None
    delay: Literal["minimal", "low", "medium", "high", "xhigh"] | None = None
    keywords: list[str] | None = None


class NoiseReduction(_Strict):
    type: Literal["near_field", "far_field"] | None = None
    strength: float | None = None


class AudioInputConfig(_Strict):
    format: AudioFormat | None = None
    transcription: Transcription | None = None
    noise_reduction: NoiseReduction | None = None
    turn_detection: TurnDetection | None = None


class AudioOutputConfig(_Strict):
    format: AudioFormat | None = None
    voice: str | None = None
    speed: float | None = Field(None, ge=0.25, le=1.5)


class AudioConfig(_Strict):
    input: AudioInputConfig | None = None
    output: AudioOutputConfig | None = None


class TracingConfig(_Strict):
    workflow_name: str | None = None
    group_id: str | None = None
    metadata: dict[str, Any] | None = None


class RealtimeSessionConfig(_Strict):
    """What a client may send as ``session`` (``type: "realtime"``) in ``session.update`` or ``client_secrets``."""

    type: Literal["realtime"]
    model: str | None = None
    instructions: str | None = Field(None, max_length=MAX_INSTRUCTIONS_CHARS)
    output_modalities: list[Literal["text", "audio"]] | None = None
    audio: AudioConfig | None = None
    include: list[Literal["item.input_audio_transcription.logprobs"]] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    max_output_tokens: int | Literal["inf"] | None = None
    tracing: Literal["auto"] | TracingConfig | None = None
    truncation: Literal["auto", "disabled"] | dict[str, Any] | None = None
    prompt: dict[str, Any] | None = None
    reasoning: dict[str, Any] | None = None


class TranscriptionSessionConfig(_Strict):
    """``type: "transcription"``: audio in, transcripts out, no model responses."""

    type: Literal["transcription"]
    audio: AudioConfig | None = None
    include: list[Literal["item.input_audio_transcription.logprobs"]] | None = None


SessionConfig = Annotated[RealtimeSessionConfig | TranscriptionSessionConfig, Field(discriminator="type")]


class ExpiresAfter(_Strict):
    anchor: Literal["created_at"] = "created_at"
    seconds: int = Field(600, ge=10, le=7200)


class ClientSecretRequest(_Strict):
    expires_after: ExpiresAfter | None = None
    session: SessionConfig | None = None


_JSON_TYPES = {
    "string": "a string",
    "int": "an integer",
    "float": "a number",
    "bool": "a boolean",
    "dict": "an object",
    "list": "an array",
}


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    for py, name in (
        (bool, "a boolean"),
        (int, "an integer"),
        (float, "a number"),
        (str, "a string"),
        (dict, "an object"),
        (list, "an array"),
    ):
        if isinstance(value, py):
            return name
    return type(value).__name__


def describe_validation_error(exc: ValidationError, root: str = "") -> tuple[str, str, str]:
    """Turn pydantic's first error into the service's (code, message, param) triple.

    The real API reports one problem at a time, naming the parameter by its dotted path.
    """
    err = exc.errors()[0]
    # Drop the discriminator tags pydantic inserts into paths of tagged unions ("realtime", "server_vad").
    parts = [str(p) for p in err["loc"] if not (isinstance(p, str) and p in _TAGS)]
    path = ".".join(([root] if root else []) + [f"[{p}]" if p.isdigit() else p for p in parts]).replace(".[", "[")
    kind = err["type"]
    value = err.get("input")
    if kind == "extra_forbidden":
        return "unknown_parameter", f"Unknown parameter: '{path}'.", path
    if kind == "missing":
        return "missing_required_parameter", f"Missing required parameter: '{path}'.", path
    if kind == "union_tag_not_found":
        tag_path = f"{path}.{err['ctx']['discriminator'].strip(chr(39))}"
        return "missing_required_parameter", f"Missing required parameter: '{tag_path}'.", tag_path
    if kind == "union_tag_invalid":
        value = err["ctx"]["tag"]
        path = f"{path}.{err['ctx']['discriminator'].strip(chr(39))}"
    if kind in ("union_tag_invalid", "literal_error", "enum"):
        expected = err.get("ctx", {}).get("expected") or err.get("ctx", {}).get("expected_tags", "")
        return (
            "invalid_value",
            f"Invalid value: '{value}'. Supported values are: {expected}.",
            path,
        )
    if kind.endswith("_type") or kind in ("model_type", "model_attributes_type", "dict_type", "list_type"):
        wanted = _JSON_TYPES.get(kind.removesuffix("_type").removesuffix("_parsing"), "a valid value")
        return (
            "invalid_type",
            f"Invalid type for '{path}': expected {wanted}, but got {_json_type(value)} instead.",
            path,
        )
    if kind == "string_too_long":
        limit = err.get("ctx", {}).get("max_length")
        return (
            "string_above_max_length",
            f"Invalid '{path}': string too long. Expected a string with maximum length {limit}, "
            f"but got a string with length {len(value) if isinstance(value, str) else '?'} instead.",
            path,
        )
    if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        return (
            "decimal_above_max_value" if kind.startswith("less") else "decimal_below_min_value",
            (f"Invalid '{path}': {err['msg'].lower()}, but got {value}."),
            path,
        )
    return "invalid_value", f"Invalid value for '{path}': {err['msg']}.", path


_TAGS = {
    "realtime",
    "transcription",
    "server_vad",
    "semantic_vad",
    "str",
    "int",
    "literal['inf']",
    "literal['auto']",
    "TracingConfig",
    "function-after",
    "dict[str,any]",
    "literal['auto','disabled']",
}
