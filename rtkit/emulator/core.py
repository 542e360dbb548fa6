"""The Realtime protocol of one emulated session, sans I/O: client events, input audio and the time in; server
events, output audio and effects out.

``Core`` never awaits, sleeps, reads a clock or starts a task. Every input carries ``now`` (monotonic seconds);
what it produces queues up in order and is collected with ``take()``: server-event dicts, the reply's audio for a
WebRTC track (``Play``, ``FinishPlay``, ``ClearPlay``) and the work it wants done outside (``ListTools``,
``CallTool``, ``Respond``, ``Cancel``, ``Expire``), whose results come back through ``tools_listed``,
``tool_called`` and ``replied``. ``deadline`` is when it next wants ``advance(now)``: the next 100 ms of a
reply's audio (at ``generation_speed``), the next word or argument chunk, the start of a response just created,
the session's maximum duration. ``engine.Engine`` is the asyncio driver that does all of that; tests drive the
core with a fake clock (``tests/emulator/test_core.py``), as websockets' ``protocol.py`` is driven.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from rtkit._ids import new_id
from rtkit._json import JsonError, loads
from rtkit.audio.formats import WireFormat
from rtkit.audio.pcm import PCM, REALTIME_RATE
from rtkit.emulator.consistency import prepare_response
from rtkit.emulator.errors import ApiError
from rtkit.emulator.input_buffer import SAMPLES_PER_MS, InputBuffer, ms
from rtkit.emulator.limits import MAX_APPEND_AUDIO_BYTES, append_too_large, base64_decoded_size, session_expired
from rtkit.emulator.mcp import (
    McpApprovalRequestOutput,
    McpCallOutput,
    McpFailure,
    McpListing,
    McpServer,
    McpTools,
    mcp_report,
)
from rtkit.emulator.responders import Reply, Turn
from rtkit.emulator.sessions import SessionState
from rtkit.emulator.store import ItemStore
from rtkit.emulator.stream import Event, FunctionCallOutput, MessageOutput, OutputItem
from rtkit.emulator.tools import ToolCall, choose_tool
from rtkit.emulator.transcription import responses_refused, transcription_events
from rtkit.emulator.usage import InputBlock, InputCount, OutputBudget, count_input, text_tokens
from rtkit.emulator.usage import usage as _usage
from rtkit.emulator.validation import validate_response
from rtkit.schema import is_realtime_model

__all__ = [
    "CLIENT_EVENTS",
    "CallTool",
    "Cancel",
    "ClearPlay",
    "Core",
    "Expire",
    "FinishPlay",
    "ListTools",
    "Output",
    "Play",
    "Respond",
    "TransportKind",
]

log = logging.getLogger("rtkit.emulator")

TransportKind = Literal["webrtc", "websocket"]

#: Audio is generated in 100 ms chunks; each becomes one delta (WebSocket) or five track frames.
CHUNK_MS = 100
#: Seconds between two words of a text reply, or two chunks of a call's arguments, at generation speed 1.
_STEP_S = 0.01
#: Characters of function-call arguments per `response.function_call_arguments.delta`.
_ARGUMENT_CHUNK = 16
#: Items after which the next response reports what a tool did instead of calling one again.
_TOOL_RESULTS = ("function_call_output", "mcp_call", "mcp_approval_response")
_SEMANTIC_SILENCE_MS = {"low": 1200, "medium": 700, "auto": 700, "high": 350}

CLIENT_EVENTS = (
    "session.update",
    "input_audio_buffer.append",
    "input_audio_buffer.commit",
    "input_audio_buffer.clear",
    "output_audio_buffer.clear",
    "conversation.item.create",
    "conversation.item.retrieve",
    "conversation.item.delete",
    "conversation.item.truncate",
    "response.create",
    "response.cancel",
)


# -- what the core asks its driver to do ---------------------------------------------------------------------
@dataclass(frozen=True)
class Play:
    """Put ``pcm`` (24 kHz) of ``response_id``'s reply on the outgoing track, after what is queued."""

    pcm: PCM
    response_id: str


@dataclass(frozen=True)
class FinishPlay:
    """``response_id`` has no more audio: the track reports it stopped once what is queued has played."""

    response_id: str


@dataclass(frozen=True)
class ClearPlay:
    """Drop the track's queued audio now (barge-in, ``output_audio_buffer.clear``)."""


@dataclass(frozen=True)
class ListTools:
    """List ``server``'s tools; answer with ``Core.tools_listed(key, ...)``."""

    key: str
    server: McpServer


@dataclass(frozen=True)
class CallTool:
    """Call MCP tool ``name``; answer with ``Core.tool_called(key, ...)``."""

    key: str
    server: McpServer
    name: str
    arguments: str


@dataclass(frozen=True)
class Respond:
    """Generate the reply to ``turn`` (the responder); answer with ``Core.replied(key, reply, now)``."""

    key: str
    turn: Turn


@dataclass(frozen=True)
class Cancel:
    """The work started under ``key`` is no longer wanted: stop it, its result would be ignored."""

    key: str


@dataclass(frozen=True)
class Expire:
    """The session reached its maximum duration: the connection closes, ``message`` says why."""

    message: str


Output = dict[str, Any] | Play | FinishPlay | ClearPlay | ListTools | CallTool | Respond | Cancel | Expire


@dataclass
class _Listing:
    server: McpServer
    listing: McpListing
    #: The client event whose configuration asked for it (its ``error`` names it), None for a response's.
    event_id: str | None


@dataclass
class _Response:
    """A response from ``response.created`` to ``response.done``: where it is, and what it waits for."""

    response: dict[str, Any]
    params: dict[str, Any]
    message: MessageOutput
    #: The output being streamed; ``message`` until a tool call takes its place.
    output: OutputItem
    turn: Turn | None = None
    #: When its next step is due (``advance``), or None while it waits for an effect.
    due: float | None = None
    #: The effect it waits for (``tools_listed``, ``tool_called``, ``replied``).
    waiting: str | None = None
    to_list: list[McpServer] = field(default_factory=list)
    call: ToolCall | None = None
    position: int = 0
    # the reply being streamed
    budget: OutputBudget | None = None
    words: list[str] = field(default_factory=list)
    pcm: PCM | None = None
    wire: bytes = b""
    fmt: WireFormat | None = None
    starts: list[int] = field(default_factory=list)
    per_chunk: int = 1
    #: What it read, in tokens (fixed when it starts: the conversation as it was then).
    read: InputCount = field(default_factory=InputCount)
    #: The usage a scripted reply brought (a cassette's, as recorded), reported instead of the count.
    usage: dict[str, Any] | None = None

    @property
    def id(self) -> str:
        return str(self.response["id"])


class Core:
    """State and behaviour of one Realtime session, independent of transport, clock and tasks.

    ``playback``: the reply's audio rides a media track (WebRTC) as ``Play`` outputs instead of
    ``response.output_audio.delta`` events, and the track reports back with ``playback_started``/``stopped``.
    ``scripted``: the responder decides the function calls (``Reply.call``; a cassette), not ``choose_tool``.
    """

    def __init__(
        self,
        session: SessionState,
        *,
        now: float,
        wall: float,
        playback: bool = False,
        generation_speed: float = 2.0,
        max_session_seconds: float = 3600.0,
        scripted: bool = False,
    ) -> None:
        self.session = session
        self.playback = playback
        self.scripted = scripted
        self.generation_speed = generation_speed
        self.conversation_id = new_id("conv")
        self.items = ItemStore()
        #: What the last response read, piece by piece: the next one's cached prefix is what it shares.
        self._last_read: list[InputBlock] = []
        self.input = InputBuffer()
        self.mcp = McpTools()
        self._out: list[Output] = []
        self._speech_item: str | None = None
        #: Input-stream position from which silence counts towards ``idle_timeout_ms``: set once the last
        #: reply has been heard (response.done plus its playback), cleared by speech; None before any reply.
        self._idle_from_ms: int | None = None
        self._response: _Response | None = None
        #: Listings under way, by effect key; and which key lists each label.
        self._listings: dict[str, _Listing] = {}
        self._listing_of: dict[str, str] = {}
        #: Responses whose audio is on the track and not yet reported stopped (or cleared), oldest first.
        self._audible: list[str] = []
        self._closed = False
        self._max_seconds = max_session_seconds
        self._expiry = now + max_session_seconds if max_session_seconds > 0 else None
        #: What ``session.expires_at`` says: the cap's own time, rounded down (a client resuming ahead of it
        #: must not be told a second too late).
        self.expires_at = int(wall + max_session_seconds) if max_session_seconds > 0 else None
        self._configure_vad()

    # -- the driver's side ---------------------------------------------------------------------------------
    def take(self) -> Sequence[Output]:
        """Everything produced since the last call, in order."""
        if not self._out:
            return ()  # most input audio frames produce nothing: no list for them
        out, self._out = self._out, []
        return out

    @property
    def deadline(self) -> float | None:
        """When ``advance`` is next due (monotonic seconds), or None."""
        due = self._response.due if self._response is not None else None
        if self._expiry is None:
            return due
        return self._expiry if due is None else min(due, self._expiry)

    def advance(self, now: float) -> None:
        """Time has passed: the steps due by ``now``."""
        if self._closed:
            return
        if self._expiry is not None and now >= self._expiry:
            self._expiry = None
            err = session_expired(self._max_seconds)
            self._error(err, None)
            self._out.append(Expire(err.message))
        while (run := self._response) is not None and run.due is not None and run.due <= now:
            run.due = None
            self._step(run, now)

    def close(self) -> None:
        """The connection is gone: nothing more is sent; the work under way is cancelled."""
        self._closed = True
        self._expiry = None
        keys = list(self._listings)
        if self._response is not None and self._response.waiting is not None:
            keys.append(self._response.waiting)
        self._out = [Cancel(key) for key in dict.fromkeys(keys)]
        self._response = None
        self._listings.clear()

    def emit(self, type: str, **fields: Any) -> dict[str, Any]:
        event = {"type": type, "event_id": new_id("event"), **fields}
        if not self._closed:
            self._out.append(event)
        return event

    def _emit_all(self, events: list[Event]) -> None:
        for kind, fields in events:
            self.emit(kind, **fields)

    def _error(self, err: ApiError, event_id: str | None) -> None:
        self.emit("error", error={**err.body(), "event_id": event_id})

    def start(self, now: float) -> None:
        """Announce the session, as the service does first on every new connection."""
        self.emit("session.created", session=self.session.to_wire(self.expires_at))
        self._configure_mcp(self.session.tools, None)

    # -- client events -------------------------------------------------------------------------------------
    def receive_text(self, raw: str | bytes, now: float) -> None:
        """One client event as it arrived on the wire; never raises for bad input."""
        try:
            event = loads(raw)
        except JsonError:
            self._error(
                ApiError(
                    "The server failed to parse the event as JSON. Every message must be a JSON object.",
                    code="invalid_json",
                ),
                None,
            )
            return
        self.receive_event(event, now)

    def receive_event(self, event: Any, now: float) -> None:
        if self._closed:
            return
        event_id = event.get("event_id") if isinstance(event, dict) else None
        try:
            if not isinstance(event, dict):
                raise ApiError("Invalid type for event: expected an object.", code="invalid_type", param="type")
            kind = event.get("type")
            if kind is None:
                raise ApiError("Missing required parameter: 'type'.", code="missing_required_parameter", param="type")
            if kind not in CLIENT_EVENTS:
                raise ApiError(
                    f"Invalid value: '{kind}'. Supported values are: "
                    + ", ".join(f"'{k}'" for k in CLIENT_EVENTS)
                    + ".",
                    code="invalid_value",
                    param="type",
                )
            handler = getattr(self, "_on_" + kind.replace(".", "_"))
            handler(event, now)
        except ApiError as err:
            self._error(err, event_id)
        except Exception:  # a bug in the emulator must not drop the client's connection
            log.exception("emulator failed on a client event")
            self._error(
                ApiError(
                    f"The server had an error while processing your request (include session ID in your "
                    f"message: {self.session.id}). We recommend you retry your request.",
                    type="server_error",
                    code="server_error",
                ),
                event_id,
            )

    def _on_session_update(self, event: dict[str, Any], now: float) -> None:
        if "session" not in event:
            raise ApiError("Missing required parameter: 'session'.", code="missing_required_parameter", param="session")
        self.session.update(event["session"], spoken=self.items.spoken)
        self._configure_vad()
        self.emit("session.updated", session=self.session.to_wire(self.expires_at))
        self._configure_mcp(self.session.tools, event.get("event_id"))

    def _configure_vad(self) -> None:
        td = self.session.turn_detection
        if td is None:
            return
        silence = td.get("silence_duration_ms", 500)
        if td["type"] == "semantic_vad":
            silence = _SEMANTIC_SILENCE_MS[td.get("eagerness", "auto")]
        self.input.vad.configure(td.get("threshold", 0.5), silence)

    # -- input audio ---------------------------------------------------------------------------------------
    def _on_input_audio_buffer_append(self, event: dict[str, Any], now: float) -> None:
        audio = event.get("audio")
        if not isinstance(audio, str):
            raise ApiError("Missing required parameter: 'audio'.", code="missing_required_parameter", param="audio")
        if (size := base64_decoded_size(audio)) > MAX_APPEND_AUDIO_BYTES:
            raise append_too_large(size)
        try:
            data = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError):
            raise ApiError(
                "Invalid value for 'audio': expected base64-encoded audio bytes.",
                code="invalid_value",
                param="audio",
            ) from None
        # In the session's input format, decoded to 24 kHz PCM with the wire's own clock.
        self.receive_audio(self.input.decode(data, WireFormat.of(self.session.input_format)), now)

    def receive_audio(self, pcm: PCM, now: float) -> None:
        """Input audio (mono PCM16, 24 kHz) from the microphone track or from ``append`` events."""
        if self._closed or pcm.size == 0:
            return
        td = self.session.turn_detection
        for vad_event in self.input.append(pcm, listen=td is not None):
            assert td is not None
            if vad_event.kind == "speech_started":
                self._speech_started(vad_event.ms, td, now)
            else:
                self._speech_stopped(vad_event.ms, td, now)
        if td is not None:
            self._check_idle(td, now)

    def _check_idle(self, td: dict[str, Any], now: float) -> None:
        """server_vad's ``idle_timeout_ms``: after that much silence since the last reply was heard, the buffer
        is committed (``input_audio_buffer.timeout_triggered``, then ``committed``) and a response made, so the
        model can prompt the user to go on. Counted on the input audio's own clock, like the VAD."""
        timeout = td.get("idle_timeout_ms")
        if not timeout or td["type"] != "server_vad" or self._idle_from_ms is None:
            return
        if self._speech_item is not None or self._response is not None:
            return
        at = self.input.stream_ms
        if at - self._idle_from_ms < timeout:
            return
        start, self._idle_from_ms = self._idle_from_ms, None
        item_id = new_id("item")
        self.emit("input_audio_buffer.timeout_triggered", audio_start_ms=start, audio_end_ms=at, item_id=item_id)
        self._commit(item_id, upto_ms=None)
        if self.session.kind == "realtime":
            self._start_response({}, now)

    def _reply_heard(self, extra_ms: int = 0) -> None:
        """The last reply has finished playing (``extra_ms`` from now): the idle clock starts there."""
        self._idle_from_ms = self.input.stream_ms + extra_ms

    def _speech_started(self, at_ms: int, td: dict[str, Any], now: float) -> None:
        start_ms = max(0, at_ms - int(td.get("prefix_padding_ms", 300)))
        self.input.trim(start_ms)
        self._speech_item = new_id("item")
        self._idle_from_ms = None
        self.emit("input_audio_buffer.speech_started", audio_start_ms=start_ms, item_id=self._speech_item)
        if td.get("interrupt_response", True):
            self._interrupt(now)

    def _speech_stopped(self, at_ms: int, td: dict[str, Any], now: float) -> None:
        item_id = self._speech_item or new_id("item")
        self._speech_item = None
        self.emit("input_audio_buffer.speech_stopped", audio_end_ms=at_ms, item_id=item_id)
        self._commit(item_id, upto_ms=at_ms)
        if td.get("create_response", True) and self.session.kind == "realtime" and self._response is None:
            self._start_response({}, now)

    def _on_input_audio_buffer_commit(self, event: dict[str, Any], now: float) -> None:
        have_ms = self.input.samples / SAMPLES_PER_MS
        if have_ms < 100:
            raise ApiError(
                "Error committing input audio buffer: buffer too small. Expected at least 100ms of audio, "
                f"but buffer only has {have_ms:.2f}ms of audio.",
                code="input_audio_buffer_commit_empty",
            )
        self.input.vad.reset()
        self._commit(self._speech_item or new_id("item"), upto_ms=None)
        self._speech_item = None

    def _on_input_audio_buffer_clear(self, event: dict[str, Any], now: float) -> None:
        self.input.clear()
        self.emit("input_audio_buffer.cleared")

    def _commit(self, item_id: str, upto_ms: int | None) -> None:
        pcm = self.input.take(upto_ms)
        previous = self.items.last_id()
        self.emit("input_audio_buffer.committed", item_id=item_id, previous_item_id=previous)
        item: dict[str, Any] = {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "status": "completed",
            "role": "user",
            "content": [{"type": "input_audio", "transcript": None}],
        }
        self.items.audio[item_id] = pcm
        self.items.items[item_id] = item
        self.emit("conversation.item.added", item=item, previous_item_id=previous)
        self.emit("conversation.item.done", item=item, previous_item_id=previous)
        config = self.session.transcription
        if config is not None:
            transcript, events = transcription_events(item_id, pcm.size / REALTIME_RATE, config, self.session.include)
            item["content"][0]["transcript"] = transcript
            self._emit_all(events)

    # -- conversation items --------------------------------------------------------------------------------
    def _on_conversation_item_create(self, event: dict[str, Any], now: float) -> None:
        item, after = self.items.create(event, self.session.input_format)
        self.emit("conversation.item.added", item=item, previous_item_id=after)
        self.emit("conversation.item.done", item=item, previous_item_id=after)

    def _on_conversation_item_retrieve(self, event: dict[str, Any], now: float) -> None:
        self.emit("conversation.item.retrieved", item=self.items.get(event))

    def _on_conversation_item_delete(self, event: dict[str, Any], now: float) -> None:
        self.emit("conversation.item.deleted", item_id=self.items.delete(event))

    def _on_conversation_item_truncate(self, event: dict[str, Any], now: float) -> None:
        item_id, index, end_ms = self.items.truncate(event)
        self.emit("conversation.item.truncated", item_id=item_id, content_index=index, audio_end_ms=end_ms)

    # -- output audio --------------------------------------------------------------------------------------
    def _on_output_audio_buffer_clear(self, event: dict[str, Any], now: float) -> None:
        if not self.playback:
            raise ApiError(
                "output_audio_buffer.clear is only supported for WebRTC connections.",
                code="invalid_value",
                param="type",
            )
        if self._clear_playback():
            self._reply_heard()

    def _clear_playback(self) -> bool:
        """Drop the audio on the track; True if there was some (``output_audio_buffer.cleared`` says whose)."""
        if not self._audible:
            return False
        response_id = self._audible[0]
        self._audible.clear()
        self._out.append(ClearPlay())
        self.emit("output_audio_buffer.cleared", response_id=response_id)
        return True

    def _play(self, pcm: PCM, response_id: str) -> None:
        if response_id not in self._audible:
            self._audible.append(response_id)
        self._out.append(Play(pcm, response_id))

    def playback_started(self, response_id: str, now: float) -> None:
        self.emit("output_audio_buffer.started", response_id=response_id)

    def playback_stopped(self, response_id: str, now: float) -> None:
        if response_id in self._audible:
            self._audible.remove(response_id)
        self.emit("output_audio_buffer.stopped", response_id=response_id)
        if self._response is None:
            self._reply_heard()

    # -- responses -----------------------------------------------------------------------------------------
    def _on_response_create(self, event: dict[str, Any], now: float) -> None:
        raw = event.get("response")
        params = validate_response({} if raw is None else raw)
        if self.session.kind == "transcription":
            raise responses_refused()
        if self._response is not None:
            raise ApiError(
                f"Conversation already has an active response in progress: {self._response.id}. "
                "Wait until the response is finished before creating a new one.",
                code="conversation_already_has_active_response",
            )
        params = prepare_response(params, self.session, self.items.items, spoken=self.items.spoken)
        self._start_response(params, now)

    def _on_response_cancel(self, event: dict[str, Any], now: float) -> None:
        wanted = event.get("response_id")
        if self._response is None or (wanted and wanted != self._response.id):
            raise ApiError("Cancellation failed: no active response found", code="response_cancel_not_active")
        self._cancel("client_cancelled")

    def _interrupt(self, now: float) -> None:
        """Barge-in: the user spoke over the reply. The track is cleared first, as the service does."""
        self._clear_playback()
        if self._response is not None:
            self._cancel("turn_detected")

    def _start_response(self, params: dict[str, Any], now: float) -> None:
        modalities = params.get("output_modalities") or self.session.output_modalities
        response = {
            "object": "realtime.response",
            "id": new_id("resp"),
            "status": "in_progress",
            "status_details": None,
            "output": [],
            "conversation_id": self.conversation_id if params.get("conversation") != "none" else None,
            "output_modalities": modalities,
            "max_output_tokens": params.get("max_output_tokens", self.session.max_output_tokens),
            "audio": {"output": {"format": self._output_format(params), "voice": self._voice(params)}},
            "usage": None,
            "metadata": params.get("metadata"),
        }
        in_conversation = response["conversation_id"] is not None
        message = MessageOutput(response["id"], audio="audio" in modalities, in_conversation=in_conversation)
        # Its first step is due at once, yet after this event: a ``response.cancel`` read in the same breath
        # ends it before anything was announced.
        self._response = _Response(response, params, message, message, due=now, read=self._read(params))
        self.emit("response.created", response=dict(response, output=[]))

    def _read(self, params: dict[str, Any]) -> InputCount:
        """The input tokens of a response starting now, and the cached part: what the previous one read too."""
        context = params["input"] if "input" in params else list(self.items.items.values())
        head = json.dumps(
            [params.get("instructions") or self.session.instructions, params.get("tools", self.session.tools)]
        )
        blocks = [InputBlock(head, text_tokens(head)), *self.items.input_blocks(context)]
        read = count_input(blocks, self._last_read)
        self._last_read = blocks
        return read

    def _output_format(self, params: dict[str, Any]) -> dict[str, Any]:
        """The response's own ``audio.output.format`` if it has one, else the session's."""
        audio = params.get("audio")
        output = audio.get("output") if isinstance(audio, dict) else None
        fmt = output.get("format") if isinstance(output, dict) else None
        return dict(fmt) if isinstance(fmt, dict) else self.session.output_format

    def _voice(self, params: dict[str, Any]) -> str:
        """The response's own voice if it has one, else the session's: a name, or a custom voice's id (the SDK
        types a response's ``audio.output.voice`` as a string)."""
        voice = ((params.get("audio") or {}).get("output") or {}).get("voice")
        if voice is None:
            return self.session.voice
        return str(voice["id"]) if isinstance(voice, dict) else str(voice)

    def _turn(self, params: dict[str, Any], wants_audio: bool) -> Turn:
        audio: PCM | None = None
        text: str | None = None
        items = self.items.items
        # ``response.create``'s ``input`` is the response's whole context, in place of the conversation.
        context: list[dict[str, Any]] = params["input"] if "input" in params else list(items.values())
        for item in reversed(context):
            if item.get("type") == "function_call_output":  # the reply reports what the function returned
                calls = [*items.values(), *context]
                called = next((i for i in calls if i.get("call_id") == item["call_id"]), None)
                name = called["name"] if called and called.get("type") == "function_call" else "function"
                text = f"The {name} function returned {item.get('output')}"
                break
            if item.get("type") in ("mcp_call", "mcp_approval_response"):  # what an MCP tool did, or did not do
                text = mcp_report(item, items)
                break
            if item.get("role") == "user":
                audio = self.items.audio.get(item["id"])
                text = " ".join(p.get("text", "") for p in item.get("content", []) if p.get("text")) or None
                break
        return Turn(
            audio, text, params.get("instructions") or self.session.instructions, self._voice(params), wants_audio
        )

    def _step(self, run: _Response, now: float) -> None:
        """The response's next step, due now: its start, or the next piece of what it streams."""
        if run.turn is None:
            self._begin(run, now)
        elif isinstance(run.output, MessageOutput):
            self._stream_step(run, now)
        elif isinstance(run.output, FunctionCallOutput):
            self._arguments_step(run, now)
        elif isinstance(run.output, McpCallOutput):
            self._mcp_arguments_step(run, now)

    def _begin(self, run: _Response, now: float) -> None:
        if not is_realtime_model(self.session.model):
            error = {
                "type": "invalid_request_error",
                "code": "model_not_found",
                "message": f"The model `{self.session.model}` does not exist or you do not have access to it.",
            }
            self._finish(run, "failed", details={"type": "failed", "error": error})
            return
        run.turn = self._turn(run.params, run.message.audio)
        latest = self.items.latest()
        approved = self.mcp.answered(latest) if latest and latest["type"] == "mcp_approval_response" else None
        if approved is not None and latest is not None:
            self._call_mcp(run, approved, latest["approval_request_id"], now)
        elif latest is None or latest.get("type") not in _TOOL_RESULTS:
            # MCP servers defined in ``response.create`` alone: the response lists them before it chooses.
            run.to_list = self.mcp.configure(run.params.get("tools", self.session.tools))
            self._list_next(run, now)
        else:
            self._respond(run)

    def _list_next(self, run: _Response, now: float) -> None:
        if run.to_list:
            run.waiting = self._list(run.to_list.pop(0), None)
            return
        assert run.turn is not None
        tools = run.params.get("tools", self.session.tools)
        choice = run.params.get("tool_choice", self.session.tool_choice)
        call = None if self.scripted else choose_tool(tools, choice, run.turn.user_text, self.mcp.callable(tools))
        if call is not None and call.server_label is not None:
            if self.mcp.needs_approval(call):
                self._ask_approval(run, call)
            else:
                self._call_mcp(run, call, None, now)
        elif call is not None:
            self._call_function(run, call, now)
        else:
            self._respond(run)

    def _respond(self, run: _Response) -> None:
        assert run.turn is not None
        run.waiting = new_id("reply")
        self._out.append(Respond(run.waiting, run.turn))

    def replied(self, key: str, reply: Reply, now: float) -> None:
        """The responder's reply for ``Respond(key)``: it streams from now on."""
        run = self._response
        if self._closed or run is None or run.waiting != key:
            return
        run.waiting = None
        run.usage = reply.usage
        if reply.error is not None:
            self._error(reply.error, None)
            error = {"type": reply.error.type, "code": reply.error.code, "message": reply.error.message}
            self._finish(run, "failed", details={"type": "failed", "error": error})
            return
        if reply.call is not None and self.scripted:
            self._call_function(run, reply.call, now)
            return
        out = run.message
        self._open(out)
        run.budget = OutputBudget.of(run.response["max_output_tokens"])
        run.words = reply.text.split(" ")
        if out.audio:
            pcm = reply.audio if reply.audio is not None else np.zeros(0, dtype=np.int16)
            fmt = WireFormat.of(run.response["audio"]["output"]["format"])
            # Over WebRTC the voice rides the call's Opus track whatever the format says; the format is the deltas'.
            run.pcm, run.fmt, run.wire = pcm, fmt, (b"" if self.playback else fmt.encode(pcm))
            run.starts = list(range(0, pcm.size, CHUNK_MS * SAMPLES_PER_MS)) or [0]
            run.per_chunk = -(-len(run.words) // len(run.starts))
            self.items.audio_ms[out.id] = 0
        self._stream_step(run, now)

    def _stream_step(self, run: _Response, now: float) -> None:
        """The reply's next word (text) or next 100 ms of audio with its words; the end when that was the last,
        or when ``max_output_tokens`` cut it short."""
        out, budget, n = run.message, run.budget, run.position
        assert budget is not None
        if not out.audio:
            delta = (" " if n else "") + run.words[n]
            fitted = budget.text_that_fits(out.text, delta)
            self._emit_all(out.text_delta(fitted))
            if fitted != delta:
                self._end_message(run, complete=False)
            elif n + 1 == len(run.words):
                self._end_message(run, complete=True)
            else:
                run.position, run.due = n + 1, now + _STEP_S / self.generation_speed
            return
        assert run.pcm is not None and run.fmt is not None
        pcm, start = run.pcm, run.starts[n]
        end = min(start + CHUNK_MS * SAMPLES_PER_MS, pcm.size)
        said = " ".join(run.words[n * run.per_chunk : (n + 1) * run.per_chunk])
        transcript = (" " if out.text and said else "") + said
        fits = budget.fits(out.audio_ms + ms(end - start), out.text + transcript)
        if not fits:  # max_output_tokens: the audio that still fits, in whole tokens, and no more words
            end = start + min(end - start, budget.audio_ms_left(out.audio_ms, out.text) * SAMPLES_PER_MS)
            transcript = ""
        if end > start:
            audio: str | None = None
            if self.playback:
                self._play(pcm[start:end], out.response_id)
            else:
                audio = base64.b64encode(run.wire[run.fmt.wire_bytes(start) : run.fmt.wire_bytes(end)]).decode()
            self._emit_all(out.audio_delta(audio, ms(end - start), transcript))
        else:
            self._emit_all(out.audio_delta(None, 0, transcript))
        self.items.audio_ms[out.id] = out.audio_ms
        if not fits:
            self._end_message(run, complete=False)
        elif n + 1 == len(run.starts):
            self._end_message(run, complete=True)
        else:
            run.position, run.due = n + 1, now + CHUNK_MS / 1000 / self.generation_speed

    def _end_message(self, run: _Response, *, complete: bool) -> None:
        status: Literal["completed", "incomplete"] = "completed" if complete else "incomplete"
        self._close_message(run.message, status)
        run.response["output"] = [run.message.item]
        details = None if complete else {"type": "incomplete", "reason": "max_output_tokens"}
        self._finish(run, status, audio_ms=run.message.audio_ms, text=run.message.text, details=details)

    def _close_message(self, out: MessageOutput, status: Literal["completed", "incomplete"]) -> None:
        if self.playback and out.opened:
            self._out.append(FinishPlay(out.response_id))
        self._emit_all(out.close(status, transcript_deleted=out.id in self.items.truncated))

    def _open(self, out: OutputItem) -> None:
        """Announce an output item (and add it to the conversation, unless the response is out of band)."""
        previous = self.items.last_id()
        if out.in_conversation:
            self.items.items[out.id] = out.item
        self._emit_all(out.open(previous))

    # -- function calls --------------------------------------------------------------------------------------
    def _call_function(self, run: _Response, call: ToolCall, now: float) -> None:
        """The response is a function call: its item, its arguments streamed, then ``response.done``."""
        in_conversation = run.response["conversation_id"] is not None
        run.output = FunctionCallOutput(run.id, call.name, in_conversation=in_conversation)
        run.call, run.budget, run.position = call, OutputBudget.of(run.response["max_output_tokens"]), 0
        self._open(run.output)
        self._arguments_step(run, now)

    def _arguments_step(self, run: _Response, now: float) -> None:
        out, call, budget = run.output, run.call, run.budget
        assert isinstance(out, FunctionCallOutput) and call is not None and budget is not None
        start = run.position
        complete = True
        if start < len(call.arguments):
            delta = call.arguments[start : start + _ARGUMENT_CHUNK]
            fitted = budget.text_that_fits(out.arguments, delta)
            self._emit_all(out.arguments_delta(fitted))
            # max_output_tokens counts the arguments too ("inclusive of tool calls")
            complete = fitted == delta
            if complete and start + _ARGUMENT_CHUNK < len(call.arguments):
                run.position, run.due = start + _ARGUMENT_CHUNK, now + _STEP_S / self.generation_speed
                return
        self._emit_all(out.close("completed" if complete else "incomplete"))
        run.response["output"] = [out.item]
        if complete:
            self._finish(run, "completed", text=out.arguments)
        else:
            self._finish(
                run, "incomplete", text=out.arguments, details={"type": "incomplete", "reason": "max_output_tokens"}
            )

    # -- MCP tools: the core decides, the driver does the network I/O (``mcp.list_tools``, ``mcp.call_tool``) -----
    def _configure_mcp(self, tools: list[dict[str, Any]], event_id: str | None) -> None:
        """List the tools of each MCP server the session names anew, in the background, as the service does."""
        for server in self.mcp.configure(tools):
            self._list(server, event_id)

    def _list(self, server: McpServer, event_id: str | None) -> str:
        """Start listing ``server``'s tools (a new definition of a label supersedes its listing under way)."""
        if (superseded := self._listing_of.pop(server.label, None)) is not None:
            self._drop_listing(superseded)
        listing = McpListing(server.label, self.items.last_id())
        self.items.items[listing.item["id"]] = listing.item
        self._emit_all(listing.start())
        key = new_id("mcp_list")
        self._listings[key] = _Listing(server, listing, event_id)
        self._listing_of[server.label] = key
        self._out.append(ListTools(key, server))
        return key

    def _drop_listing(self, key: str) -> None:
        """A listing no longer wanted (superseded, or its response cancelled): it fails, and is listed anew
        when the next configuration names its server."""
        entry = self._listings.pop(key, None)
        if entry is None:
            return
        if self._listing_of.get(entry.server.label) == key:
            del self._listing_of[entry.server.label]
        self._out.append(Cancel(key))
        self.mcp.forget(entry.server)
        self._emit_all(entry.listing.failed())

    def tools_listed(self, key: str, result: list[dict[str, Any]] | McpFailure, now: float) -> None:
        """What ``ListTools(key)`` got: the server's tools, or why not."""
        entry = self._listings.pop(key, None)
        if self._closed or entry is None:
            return
        if self._listing_of.get(entry.server.label) == key:
            del self._listing_of[entry.server.label]
        if isinstance(result, McpFailure):
            self.mcp.forget(entry.server)
            self._emit_all(entry.listing.failed())
            code, message = result.listing_error(entry.server.label)
            self._error(ApiError(message, type="external_connector_error", code=code, param="tools"), entry.event_id)
        else:
            self._emit_all(entry.listing.completed(self.mcp.listed(entry.server, result)))
        run = self._response
        if run is not None and run.waiting == key:
            run.waiting = None
            self._list_next(run, now)

    def _ask_approval(self, run: _Response, call: ToolCall) -> None:
        """The model calls a tool of an MCP server whose ``require_approval`` asks the client first."""
        in_conversation = run.response["conversation_id"] is not None
        out = McpApprovalRequestOutput(run.id, self.mcp.ask(call), call, in_conversation=in_conversation)
        run.output = out
        self._open(out)
        self._emit_all(out.close())
        run.response["output"] = [out.item]
        self._finish(run, "completed", text=call.arguments)

    def _call_mcp(self, run: _Response, call: ToolCall, approval_request_id: str | None, now: float) -> None:
        """An MCP call as part of the response: its item, its arguments, the server's answer, then
        ``response.done``. A cancelled response cancels the call."""
        in_conversation = run.response["conversation_id"] is not None
        run.output = McpCallOutput(run.id, call, approval_request_id, in_conversation=in_conversation)
        run.call, run.position = call, 0
        self._open(run.output)
        self._mcp_arguments_step(run, now)

    def _mcp_arguments_step(self, run: _Response, now: float) -> None:
        out, call = run.output, run.call
        assert isinstance(out, McpCallOutput) and call is not None and call.server_label is not None
        start = run.position
        if start < len(call.arguments):
            self._emit_all(out.arguments_delta(call.arguments[start : start + _ARGUMENT_CHUNK]))
            if start + _ARGUMENT_CHUNK < len(call.arguments):
                run.position, run.due = start + _ARGUMENT_CHUNK, now + _STEP_S / self.generation_speed
                return
        self._emit_all(out.arguments_done())
        run.waiting = new_id("mcp_call")
        self._out.append(CallTool(run.waiting, self.mcp.server(call.server_label), call.name, call.arguments))

    def tool_called(self, key: str, result: str | McpFailure, now: float) -> None:
        """What ``CallTool(key)`` got: the tool's output, or the failure the ``mcp_call`` item reports."""
        run = self._response
        if self._closed or run is None or run.waiting != key:
            return
        run.waiting = None
        out = run.output
        assert isinstance(out, McpCallOutput)
        self._emit_all(out.failed(result.error) if isinstance(result, McpFailure) else out.completed(result))
        self._emit_all(out.close())
        run.response["output"] = [out.item]
        self._finish(run, "completed", text=out.arguments)

    # -- the end of a response -----------------------------------------------------------------------------
    def _cancel(self, reason: str) -> None:
        """End the response now (``response.cancel``, a barge-in): what it announced is closed, what it waits
        for is cancelled."""
        run = self._response
        if run is None:
            return
        details = {"type": "cancelled", "reason": reason}
        if run.waiting is not None:
            if run.waiting in self._listings:
                self._drop_listing(run.waiting)
            else:
                self._out.append(Cancel(run.waiting))
            run.waiting = None
        out = run.output
        if isinstance(out, MessageOutput):
            self._close_message(out, "incomplete")
            run.response["output"] = [out.item] if out.opened else []
            self._finish(run, "cancelled", audio_ms=out.audio_ms, text=out.text, details=details)
        elif isinstance(out, FunctionCallOutput):
            self._emit_all(out.close("incomplete"))
            run.response["output"] = [out.item]
            self._finish(run, "cancelled", text=out.arguments, details=details)
        elif isinstance(out, McpCallOutput):
            self._emit_all(out.close())
            run.response["output"] = [out.item]
            self._finish(run, "cancelled", text=out.arguments, details=details)

    def _finish(
        self,
        run: _Response,
        status: str,
        *,
        audio_ms: int = 0,
        text: str = "",
        details: dict[str, Any] | None = None,
    ) -> None:
        response = run.response
        response["status"] = status
        response["status_details"] = details
        response["usage"] = run.usage or _usage(run.read, audio_ms, text)
        self._response = None
        self.emit("response.done", response=response)
        if not self.playback:  # WebSocket: the client plays the reply from now on, for as long as it lasts
            self._reply_heard(audio_ms)
        elif not audio_ms or not self._audible:  # WebRTC with nothing (left) to play
            self._reply_heard()
        self.emit(
            "rate_limits.updated",
            rate_limits=[
                {"name": "requests", "limit": 5000, "remaining": 4999, "reset_seconds": 0.012},
                {
                    "name": "tokens",
                    "limit": 40000,
                    "remaining": 40000 - response["usage"]["total_tokens"],
                    "reset_seconds": 0.5,
                },
            ],
        )
