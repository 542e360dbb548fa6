"""Typed session configuration of the GA Realtime API, strict the way the real service is.

The official SDK's models accept anything (they are for *reading* responses); these refuse
unknown fields, because the real service does (``Unknown parameter: 'session.voice'.``) and a
workshop participant should learn that from the emulator, not in production. The emulator
validates with them; rtkit's client builds its configs with them.
"""

from __future__ import annotations

import functools
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, TypeAdapter, ValidationError, model_validator
from pydantic_core import PydanticCustomError

__all__ = [
    "MAX_OUTPUT_TOKENS",
    "AssistantMessage",
    "AudioConfig",
    "AudioFormat",
    "AudioInputConfig",
    "AudioOutputConfig",
    "ConversationItem",
    "ExpiresAfter",
    "FunctionCallItem",
    "FunctionCallOutputItem",
    "FunctionTool",
    "ItemReference",
    "McpApprovalRequestItem",
    "McpApprovalResponseItem",
    "McpCallItem",
    "McpListToolsItem",
    "McpTool",
    "Prompt",
    "RealtimeSessionConfig",
    "Reasoning",
    "ResponseCreateParams",
    "ResponseInputItem",
    "RetentionRatioTruncation",
    "SemanticVad",
    "ServerVad",
    "SystemMessage",
    "Tool",
    "ToolChoice",
    "ToolChoiceFunction",
    "ToolChoiceMcp",
    "TranscriptionSessionConfig",
    "Truncation",
    "UserMessage",
    "Voice",
    "VoiceId",
    "describe_validation_error",
    "is_realtime_model",
    "json_kind",
    "json_type",
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


#: Largest integer ``max_output_tokens`` (the SDK's docstring: "an integer between 1 and 4096", or ``"inf"``).
MAX_OUTPUT_TOKENS = 4096


class _Strict(BaseModel):
    # strict: the service takes JSON as typed ("yes" is not a boolean, "5" not an integer, 1.0 not an integer).
    model_config = ConfigDict(extra="forbid", strict=True)


def json_kind(value: Any) -> str:
    """The JSON kind of a value, ``<string>``, ``<object>``…: the tag of every union chosen by shape (a voice is a
    name or ``{"id"}``), so a value of the wrong kind gets the service's "expected one of" error, and no tag can
    be mistaken for a parameter's name in an error's path."""
    if value is None:
        return "<null>"
    if isinstance(value, bool):
        return "<boolean>"
    if isinstance(value, int):
        return "<integer>"
    if isinstance(value, float):
        return "<number>"
    if isinstance(value, str):
        return "<string>"
    if isinstance(value, dict | BaseModel):
        return "<object>"
    if isinstance(value, list | tuple):
        return "<array>"
    return f"<{type(value).__name__}>"


_KINDS = {
    "<string>": "a string",
    "<integer>": "an integer",
    "<number>": "a number",
    "<boolean>": "a boolean",
    "<object>": "an object",
    "<array>": "an array",
    "<null>": "null",
}


def _missing(field: str) -> PydanticCustomError:
    """A required parameter that depends on another one (``text`` for ``input_text``): reported like pydantic's own."""
    return PydanticCustomError("missing_required_parameter", "Missing required parameter: {field}", {"field": field})


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
    languages: list[str] | None = None


class NoiseReduction(_Strict):
    type: Literal["near_field", "far_field"] | None = None
    strength: float | None = None


class AudioInputConfig(_Strict):
    format: AudioFormat | None = None
    transcription: Transcription | None = None
    noise_reduction: NoiseReduction | None = None
    turn_detection: TurnDetection | None = None


class VoiceId(_Strict):
    """A custom voice (made from audio samples), by its id: ``{"id": "voice_1234"}``."""

    id: str


#: A built-in voice's name (``marin``…; the SDK types any string) or a custom voice.
Voice = Annotated[
    Annotated[str, Tag("<string>")] | Annotated[VoiceId, Tag("<object>")],
    Discriminator(json_kind),
]


class AudioOutputConfig(_Strict):
    format: AudioFormat | None = None
    voice: Voice | None = None
    speed: float | None = Field(None, ge=0.25, le=1.5)


class AudioConfig(_Strict):
    input: AudioInputConfig | None = None
    output: AudioOutputConfig | None = None


class TracingConfig(_Strict):
    workflow_name: str | None = None
    group_id: str | None = None
    metadata: dict[str, Any] | None = None


Tracing = Annotated[
    Annotated[Literal["auto"], Tag("<string>")] | Annotated[TracingConfig, Tag("<object>")],
    Discriminator(json_kind),
]

#: "It is not possible to request both ``text`` and ``audio`` at the same time" (the SDK's docstring).
OutputModalities = Annotated[list[Literal["text", "audio"]], Field(min_length=1, max_length=1)]

MaxOutputTokens = Annotated[
    Annotated[int, Field(ge=1, le=MAX_OUTPUT_TOKENS), Tag("<integer>")] | Annotated[Literal["inf"], Tag("<string>")],
    Discriminator(json_kind),
]

#: Up to 16 pairs; keys up to 64 characters, values up to 512.
Metadata = Annotated[
    dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=512)]],
    Field(max_length=16),
]


# -- tools -------------------------------------------------------------------------------------
class FunctionTool(_Strict):
    type: Literal["function"]
    name: str
    description: str | None = None
    #: A JSON schema (an object).
    parameters: dict[str, Any] | None = None


class McpToolFilter(_Strict):
    read_only: bool | None = None
    tool_names: list[str] | None = None


class McpApprovalFilter(_Strict):
    always: McpToolFilter | None = None
    never: McpToolFilter | None = None


McpConnector = Literal[
    "connector_dropbox",
    "connector_gmail",
    "connector_googlecalendar",
    "connector_googledrive",
    "connector_microsoftteams",
    "connector_outlookcalendar",
    "connector_outlookemail",
    "connector_sharepoint",
]


class McpTool(_Strict):
    """A remote MCP server's tools; "one of ``server_url``, ``connector_id``, or ``tunnel_id`` must be provided"."""

    type: Literal["mcp"]
    server_label: str
    server_url: str | None = None
    connector_id: McpConnector | None = None
    tunnel_id: str | None = None
    server_description: str | None = None
    allowed_callers: list[Literal["direct", "programmatic"]] | None = None
    allowed_tools: (
        Annotated[
            Annotated[list[str], Tag("<array>")] | Annotated[McpToolFilter, Tag("<object>")],
            Discriminator(json_kind),
        ]
        | None
    ) = None
    require_approval: (
        Annotated[
            Annotated[Literal["always", "never"], Tag("<string>")] | Annotated[McpApprovalFilter, Tag("<object>")],
            Discriminator(json_kind),
        ]
        | None
    ) = None
    authorization: str | None = None
    headers: dict[str, str] | None = None
    defer_loading: bool | None = None

    @model_validator(mode="after")
    def _names_a_server(self) -> McpTool:
        if self.server_url is None and self.connector_id is None and self.tunnel_id is None:
            raise _missing("server_url")
        return self


Tool = Annotated[FunctionTool | McpTool, Field(discriminator="type")]


class ToolChoiceFunction(_Strict):
    type: Literal["function"]
    name: str


class ToolChoiceMcp(_Strict):
    type: Literal["mcp"]
    server_label: str
    name: str | None = None


#: One of the string modes, or a specific function or MCP tool (which must be among the tools: a cross-reference
#: the emulator checks against the session, not here).
ToolChoice = Annotated[
    Annotated[Literal["none", "auto", "required"], Tag("<string>")]
    | Annotated[Annotated[ToolChoiceFunction | ToolChoiceMcp, Field(discriminator="type")], Tag("<object>")],
    Discriminator(json_kind),
]


# -- reasoning, prompt, truncation ----------------------------------------------------------
class Reasoning(_Strict):
    """For reasoning-capable models such as ``gpt-realtime-2``."""

    effort: Literal["minimal", "low", "medium", "high", "xhigh"] | None = None


class _CacheBreakpoint(_Strict):
    mode: Literal["explicit"]
    ttl: Literal["30m", "12h"] | None = None


class _PromptText(_Strict):
    type: Literal["input_text"]
    text: str
    prompt_cache_breakpoint: _CacheBreakpoint | None = None


class _PromptImage(_Strict):
    type: Literal["input_image"]
    detail: Literal["low", "high", "auto", "original"]
    file_id: str | None = None
    image_url: str | None = None
    prompt_cache_breakpoint: _CacheBreakpoint | None = None


class _PromptFile(_Strict):
    type: Literal["input_file"]
    detail: Literal["auto", "low", "high"] | None = None
    file_data: str | None = None
    file_id: str | None = None
    file_url: str | None = None
    filename: str | None = None
    prompt_cache_breakpoint: _CacheBreakpoint | None = None


PromptVariable = Annotated[
    Annotated[str, Tag("<string>")]
    | Annotated[Annotated[_PromptText | _PromptImage | _PromptFile, Field(discriminator="type")], Tag("<object>")],
    Discriminator(json_kind),
]


class Prompt(_Strict):
    """A stored prompt template, by id, with its variables."""

    id: str
    variables: dict[str, PromptVariable] | None = None
    version: str | None = None


class TokenLimits(_Strict):
    post_instructions: int | None = Field(None, ge=1)


class RetentionRatioTruncation(_Strict):
    type: Literal["retention_ratio"]
    #: The fraction of post-instruction conversation tokens kept when the input limit is exceeded.
    retention_ratio: float = Field(ge=0.0, le=1.0)
    token_limits: TokenLimits | None = None


Truncation = Annotated[
    Annotated[Literal["auto", "disabled"], Tag("<string>")] | Annotated[RetentionRatioTruncation, Tag("<object>")],
    Discriminator(json_kind),
]


class RealtimeSessionConfig(_Strict):
    """What a client may send as ``session`` (``type: "realtime"``) in ``session.update`` or ``client_secrets``."""

    type: Literal["realtime"]
    model: str | None = None
    instructions: str | None = Field(None, max_length=MAX_INSTRUCTIONS_CHARS)
    output_modalities: OutputModalities | None = None
    audio: AudioConfig | None = None
    include: list[Literal["item.input_audio_transcription.logprobs"]] | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    max_output_tokens: MaxOutputTokens | None = None
    tracing: Tracing | None = None
    truncation: Truncation | None = None
    prompt: Prompt | None = None
    reasoning: Reasoning | None = None


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


# -- conversation items (conversation.item.create, response.create's input) ------------------
ItemStatus = Literal["completed", "incomplete", "in_progress"]


class _ItemFields(_Strict):
    """What messages and function items share; the server fills ``id``, ``object`` and ``status`` when absent."""

    id: str | None = None
    object: Literal["realtime.item"] | None = None
    status: ItemStatus | None = None


class UserContent(_Strict):
    type: Literal["input_text", "input_audio", "input_image"]
    text: str | None = None
    #: Base64 audio in the session's input format (``input_audio``).
    audio: str | None = None
    transcript: str | None = None
    #: A data URI, PNG or JPEG (``input_image``).
    image_url: str | None = None
    detail: Literal["auto", "low", "high"] | None = None

    @model_validator(mode="after")
    def _has_its_payload(self) -> UserContent:
        if self.type == "input_text" and self.text is None:
            raise _missing("text")
        if self.type == "input_image" and self.image_url is None:
            raise _missing("image_url")
        return self


class AssistantContent(_Strict):
    type: Literal["output_text", "output_audio"]
    text: str | None = None
    audio: str | None = None
    transcript: str | None = None

    @model_validator(mode="after")
    def _has_its_text(self) -> AssistantContent:
        if self.type == "output_text" and self.text is None:
            raise _missing("text")
        return self


class SystemContent(_Strict):
    type: Literal["input_text"]
    text: str


class UserMessage(_ItemFields):
    type: Literal["message"]
    role: Literal["user"]
    content: Annotated[list[UserContent], Field(min_length=1)]


class AssistantMessage(_ItemFields):
    """The service "cannot populate assistant audio messages": one made of audio alone is refused, naming
    ``content[0].text`` (the error clients get when they replay a spoken reply as it was)."""

    type: Literal["message"]
    role: Literal["assistant"]
    content: Annotated[list[AssistantContent], Field(min_length=1)]

    @model_validator(mode="after")
    def _not_audio_alone(self) -> AssistantMessage:
        if all(part.type == "output_audio" for part in self.content):
            raise _missing("content[0].text")
        return self


class SystemMessage(_ItemFields):
    type: Literal["message"]
    role: Literal["system"]
    content: Annotated[list[SystemContent], Field(min_length=1)]


Message = Annotated[SystemMessage | UserMessage | AssistantMessage, Field(discriminator="role")]


class FunctionCallItem(_ItemFields):
    type: Literal["function_call"]
    name: str
    #: The arguments as a JSON-encoded string.
    arguments: str
    call_id: str | None = None


class FunctionCallOutputItem(_ItemFields):
    type: Literal["function_call_output"]
    #: The ``call_id`` of a function call in the conversation (checked against it, not here).
    call_id: str
    output: str


class McpApprovalResponseItem(_Strict):
    type: Literal["mcp_approval_response"]
    id: str
    approval_request_id: str
    approve: bool
    reason: str | None = None


class McpListedTool(_Strict):
    name: str
    input_schema: dict[str, Any]
    annotations: dict[str, Any] | None = None
    description: str | None = None


class McpListToolsItem(_Strict):
    type: Literal["mcp_list_tools"]
    server_label: str
    tools: list[McpListedTool]
    id: str | None = None


class McpProtocolError(_Strict):
    type: Literal["protocol_error"]
    code: int
    message: str


class McpToolExecutionError(_Strict):
    type: Literal["tool_execution_error"]
    message: str


class McpHttpError(_Strict):
    type: Literal["http_error"]
    code: int
    message: str


McpError = Annotated[McpProtocolError | McpToolExecutionError | McpHttpError, Field(discriminator="type")]


class McpCallItem(_Strict):
    type: Literal["mcp_call"]
    id: str
    server_label: str
    name: str
    arguments: str
    approval_request_id: str | None = None
    error: McpError | None = None
    output: str | None = None


class McpApprovalRequestItem(_Strict):
    type: Literal["mcp_approval_request"]
    id: str
    server_label: str
    name: str
    arguments: str


_ITEMS = (
    Message
    | FunctionCallItem
    | FunctionCallOutputItem
    | McpApprovalResponseItem
    | McpListToolsItem
    | McpCallItem
    | McpApprovalRequestItem
)
#: Every item a client may add to the conversation (the SDK's ``ConversationItem``), by ``type`` then ``role``.
ConversationItem = Annotated[_ITEMS, Field(discriminator="type")]


class ItemReference(_Strict):
    """An item already in the session, by id: only in ``response.create``'s ``input``."""

    type: Literal["item_reference"]
    id: str


ResponseInputItem = Annotated[
    _ITEMS | ItemReference,
    Field(discriminator="type"),
]


# -- response.create -----------------------------------------------------------------------------
class ResponseAudioOutput(_Strict):
    format: AudioFormat | None = None
    voice: Voice | None = None


class ResponseAudio(_Strict):
    output: ResponseAudioOutput | None = None


class ResponseCreateParams(_Strict):
    """``response.create``'s ``response``: this response's settings over the session's, and its own context."""

    audio: ResponseAudio | None = None
    #: ``auto`` adds the response to the conversation, ``none`` makes it out of band ("currently supports").
    conversation: Literal["auto", "none"] | None = None
    #: The context of this response instead of the conversation (``[]``: none at all).
    input: list[ResponseInputItem] | None = None
    instructions: str | None = Field(None, max_length=MAX_INSTRUCTIONS_CHARS)
    max_output_tokens: MaxOutputTokens | None = None
    metadata: Metadata | None = None
    output_modalities: OutputModalities | None = None
    parallel_tool_calls: bool | None = None
    prompt: Prompt | None = None
    reasoning: Reasoning | None = None
    tool_choice: ToolChoice | None = None
    tools: list[Tool] | None = None


# -- the service's error for a refused value ----------------------------------------------------
_TYPE_NAMES = {
    "string": "a string",
    "int": "an integer",
    "float": "a number",
    "bool": "a boolean",
    "dict": "an object",
    "model": "an object",
    "model_attributes": "an object",
    "list": "an array",
}


@functools.cache
def _union_tags() -> tuple[frozenset[str], tuple[str, ...]]:
    """The tags of every union told apart by a field (``realtime``, ``message``, ``user``…) and those fields
    (``type``, ``role``), read from the models' own schemas: pydantic puts the matched tag in an error's location."""
    tags: set[str] = set()
    fields: dict[str, None] = {}

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "tagged-union" and isinstance(node.get("discriminator"), str):
                tags.update(str(choice) for choice in node["choices"])
                fields[node["discriminator"]] = None
            for value in node.values():
                visit(value)
        elif isinstance(node, list | tuple):
            for value in node:
                visit(value)

    shapes: tuple[Any, ...] = (ClientSecretRequest, ResponseCreateParams, ConversationItem, ResponseInputItem)
    for shape in shapes:
        visit(TypeAdapter(shape).core_schema)
    return frozenset(tags), tuple(fields)


def json_type(value: Any) -> str:
    """How the service names a value's JSON type in its errors (``a string``, ``an object``…)."""
    return _KINDS.get(json_kind(value), type(value).__name__)


def _param_path(root: str, loc: tuple[int | str, ...], payload: Any) -> str:
    """The dotted path the service names (``session.tools[0].name``), from pydantic's location.

    A location also holds the tags of the unions it went through (``<object>``, a ``type``'s value): walking the
    payload along it tells a tag (a union's tag equal to the value's own ``type``/``role``, once each, or no key
    of the value) from a parameter (a key of the value, or the missing one at the end), whatever their names.
    """
    tags, discriminators = _union_tags()
    parts: list[str] = [root] if root else []
    node, matched = payload, set[str]()
    for i, step in enumerate(loc):
        if isinstance(step, int):
            parts.append(f"[{step}]")
            node, matched = (node[step] if isinstance(node, list) and 0 <= step < len(node) else None), set()
            continue
        if step in _KINDS or (step.startswith("<") and step.endswith(">")):
            continue
        if isinstance(node, dict):
            tag = next((k for k in discriminators if k not in matched and node.get(k) == step), None)
            if tag is not None and step in tags:
                matched.add(tag)
            elif step in node:
                parts.append(step)
                node, matched = node[step], set()
            elif i == len(loc) - 1:
                parts.append(step)  # the missing parameter
        elif payload is None and not (isinstance(node, list) or "[" in step or "-" in step):
            parts.append(step)  # no payload to walk: keep what reads as a name
    return ".".join(parts).replace(".[", "[")


def _listed(values: list[str], last: str = "and") -> str:
    if len(values) <= 2:
        return f" {last} ".join(values)
    return ", ".join(values[:-1]) + f", {last} " + values[-1]


def _literal_values(expected: str) -> list[str]:
    """pydantic's ``'a', 'b' or 'c'`` (or ``24000``) as the values, each as the service quotes it."""
    quoted = re.findall(r"'([^']*)'", expected)
    return [f"'{v}'" for v in quoted] if quoted else [v for v in re.split(r", | or ", expected) if v]


def describe_validation_error(exc: ValidationError, root: str = "", payload: Any = None) -> tuple[str, str, str]:
    """Turn pydantic's first error into the service's (code, message, param) triple.

    The real API reports one problem at a time, naming the parameter by its dotted path; ``payload`` is what was
    validated, so that the path leaves out the unions' tags.
    """
    err = exc.errors(include_url=False)[0]
    path = _param_path(root, err["loc"], payload)
    kind = err["type"]
    ctx: dict[str, Any] = err.get("ctx") or {}
    value = err.get("input")
    if kind == "extra_forbidden":
        return "unknown_parameter", f"Unknown parameter: '{path}'.", path
    if kind == "missing":
        return "missing_required_parameter", f"Missing required parameter: '{path}'.", path
    if kind == "missing_required_parameter":  # one of ours: ctx names the field under the model
        path = f"{path}.{ctx['field']}".replace(".[", "[").lstrip(".")
        return "missing_required_parameter", f"Missing required parameter: '{path}'.", path
    if kind == "union_tag_not_found":
        tag_path = f"{path}.{ctx['discriminator'].strip(chr(39))}"
        return "missing_required_parameter", f"Missing required parameter: '{tag_path}'.", tag_path
    if kind == "union_tag_invalid" and ctx["discriminator"] == f"{json_kind.__name__}()":
        kinds = [_KINDS.get(k, k) for k in _literal_values(ctx["expected_tags"].replace("'", ""))]
        wanted = kinds[0] if len(kinds) == 1 else "one of " + _listed(kinds, "or")
        return (
            "invalid_type",
            f"Invalid type for '{path}': expected {wanted}, but got {json_type(value)} instead.",
            path,
        )
    if kind == "union_tag_invalid":
        value = ctx["tag"]
        path = f"{path}.{ctx['discriminator'].strip(chr(39))}"
        expected = _literal_values(ctx["expected_tags"])
        return "invalid_value", f"Invalid value: '{value}'. Supported values are: {_listed(expected)}.", path
    if kind in ("literal_error", "enum"):
        expected = _literal_values(ctx.get("expected", ""))
        of_strings = all(v.startswith("'") for v in expected)
        if of_strings != isinstance(value, str):
            wanted = "a string" if of_strings else "an integer"
            return (
                "invalid_type",
                f"Invalid type for '{path}': expected {wanted}, but got {json_type(value)} instead.",
                path,
            )
        return "invalid_value", f"Invalid value: '{value}'. Supported values are: {_listed(expected)}.", path
    if kind.endswith(("_type", "_parsing")):
        wanted = _TYPE_NAMES.get(kind.removesuffix("_type").removesuffix("_parsing"), "a valid value")
        return (
            "invalid_type",
            f"Invalid type for '{path}': expected {wanted}, but got {json_type(value)} instead.",
            path,
        )
    if kind == "string_too_long":
        limit = ctx.get("max_length")
        return (
            "string_above_max_length",
            f"Invalid '{path}': string too long. Expected a string with maximum length {limit}, "
            f"but got a string with length {len(value) if isinstance(value, str) else '?'} instead.",
            path,
        )
    if kind in ("too_short", "too_long") and isinstance(value, list):
        if kind == "too_short" and not value:
            return (
                "empty_array",
                f"Invalid '{path}': empty array. Expected an array with minimum length {ctx['min_length']}, "
                "but got an empty array instead.",
                path,
            )
        edge, bound = ("above_max", "maximum") if kind == "too_long" else ("below_min", "minimum")
        limit = ctx["max_length"] if kind == "too_long" else ctx["min_length"]
        return (
            f"array_{edge}_length",
            f"Invalid '{path}': array too {'long' if kind == 'too_long' else 'short'}. Expected an array with "
            f"{bound} length {limit}, but got an array with length {len(value)} instead.",
            path,
        )
    if kind == "too_long" and isinstance(value, dict):
        return (
            "object_above_max_properties",
            f"Invalid '{path}': object too large. Expected an object with at most {ctx['max_length']} "
            f"properties, but got an object with {len(value)} properties instead.",
            path,
        )
    bounds = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}
    if kind in bounds:
        limit = next(iter(ctx.values()))
        above = kind.startswith("less")
        return (
            "decimal_above_max_value" if above else "decimal_below_min_value",
            f"Invalid '{path}': decimal {'above maximum' if above else 'below minimum'} value. "
            f"Expected a value {bounds[kind]} {limit}, but got {value} instead.",
            path,
        )
    return "invalid_value", f"Invalid value for '{path}': {err['msg']}.", path
