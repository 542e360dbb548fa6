"""One emulated conversation: the event engine behind both transports.

The engine speaks in server-event dicts and 24 kHz PCM. A transport feeds it client events and
input audio and hands its events to the wire; over WebRTC it also gets a ``Player`` (the
outgoing media track), because there the reply's audio rides the track instead of
``response.output_audio.delta`` events.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import functools
import logging
import time
from collections.abc import Callable
from typing import Any, Literal, Protocol

import numpy as np

from rtkit._ids import new_id
from rtkit._json import JsonError, loads
from rtkit.audio.formats import StreamDecoder, WireFormat
from rtkit.audio.pcm import PCM, REALTIME_RATE
from rtkit.emulator.consistency import check_new_item, prepare_response
from rtkit.emulator.errors import ApiError
from rtkit.emulator.items import insert_item, parse_item, take_audio
from rtkit.emulator.limits import MAX_APPEND_AUDIO_BYTES, append_too_large, base64_decoded_size, session_expired
from rtkit.emulator.mcp import (
    McpApprovalRequestOutput,
    McpCallOutput,
    McpFailure,
    McpListing,
    McpServer,
    McpTools,
    call_tool,
    list_tools,
    mcp_report,
)
from rtkit.emulator.responders import Reply, Responder, Turn
from rtkit.emulator.sessions import SessionState
from rtkit.emulator.stream import Event, FunctionCallOutput, MessageOutput
from rtkit.emulator.tools import ToolCall, choose_tool
from rtkit.emulator.transcription import responses_refused, transcription_events
from rtkit.emulator.usage import OutputBudget
from rtkit.emulator.usage import usage as _usage
from rtkit.emulator.vad import EnergyVad
from rtkit.emulator.validation import validate_response
from rtkit.schema import is_realtime_model

log = logging.getLogger("rtkit.emulator")

Sink = Callable[[dict[str, Any]], None]
TransportKind = Literal["webrtc", "websocket"]

_SAMPLES_PER_MS = REALTIME_RATE // 1000
#: Audio is generated in 100 ms chunks; each becomes one delta (WebSocket) or five track frames.
_CHUNK_MS = 100
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


class Player(Protocol):
    """The outgoing media track of a WebRTC call, as the engine sees it."""

    def enqueue(self, pcm: PCM, response_id: str) -> None: ...

    def finish(self, response_id: str) -> None: ...

    def clear(self) -> str | None: ...

    @property
    def playing(self) -> bool: ...


def _ms(samples: int) -> int:
    return samples // _SAMPLES_PER_MS


class Engine:
    """State and behaviour of one Realtime session, independent of the transport."""

    def __init__(
        self,
        session: SessionState,
        responder: Responder,
        *,
        transport: TransportKind,
        player: Player | None = None,
        generation_speed: float = 2.0,
        max_session_seconds: float = 3600.0,
        on_expired: Callable[[str], None] | None = None,
    ) -> None:
        self.session = session
        self.responder = responder
        self.transport = transport
        self.player = player
        self.generation_speed = generation_speed
        self.conversation_id = new_id("conv")
        self._sinks: list[Sink] = []
        self._items: dict[str, dict[str, Any]] = {}
        self._item_audio: dict[str, PCM] = {}
        self._audio_ms_produced: dict[str, int] = {}
        #: Items truncated by the client: their transcript is gone for good, whatever the response does next.
        self._truncated: set[str] = set()
        self._input: list[PCM] = []
        self._input_samples = 0
        self._input_start_ms = 0  # input-stream position of self._input[0]
        self._stream_samples = 0  # every sample ever appended
        self._speech_item: str | None = None
        #: Input-stream position from which silence counts towards ``idle_timeout_ms``: set once the last
        #: reply has been heard (response.done plus its playback), cleared by speech; None before any reply.
        self._idle_from_ms: int | None = None
        self._vad = EnergyVad()
        #: Appended audio in the session's input format -> 24 kHz PCM (a G.711 decoder keeps resampler state).
        self._decoder: StreamDecoder | None = None
        self._response: dict[str, Any] | None = None
        self._response_task: asyncio.Task[None] | None = None
        #: The session's MCP servers, and the listing running for each label (network I/O, cancelled on close).
        self._mcp = McpTools()
        self._mcp_tasks: dict[str, asyncio.Task[None]] = {}
        self._cancel_reason = "client_cancelled"
        self._closed = False
        self._started = time.monotonic()
        self._expiry: asyncio.TimerHandle | None = None
        #: What ``session.expires_at`` says: the cap's own time, rounded down (a client resuming ahead of it
        #: must not be told a second too late).
        self._expires_at = int(time.time() + max_session_seconds) if max_session_seconds > 0 else None
        if max_session_seconds > 0:
            loop = asyncio.get_running_loop()
            self._expiry = loop.call_later(max_session_seconds, self._expire, max_session_seconds, on_expired)
        self._configure_vad()

    # -- wiring -------------------------------------------------------------------------------
    def add_sink(self, sink: Sink) -> None:
        self._sinks.append(sink)

    def remove_sink(self, sink: Sink) -> None:
        with contextlib.suppress(ValueError):
            self._sinks.remove(sink)

    def emit(self, type: str, **fields: Any) -> dict[str, Any]:
        event = {"type": type, "event_id": new_id("event"), **fields}
        for sink in list(self._sinks):
            sink(event)
        return event

    @property
    def expires_at(self) -> int | None:
        """When the session hits its maximum duration (unix seconds), as ``session.expires_at`` says."""
        return self._expires_at

    def start(self) -> None:
        """Announce the session, as the service does first on every new connection."""
        self.emit("session.created", session=self.session.to_wire(self._expires_at))
        self._configure_mcp(self.session.tools, None)

    async def close(self) -> None:
        self._closed = True
        if self._expiry:
            self._expiry.cancel()
        listings = list(self._mcp_tasks.values())
        for listing in listings:
            listing.cancel()
        await asyncio.gather(*listings, return_exceptions=True)
        task = self._response_task
        if task and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _expire(self, seconds: float, on_expired: Callable[[str], None] | None) -> None:
        err = session_expired(seconds)
        self._error(err, None)
        if on_expired:
            on_expired(err.message)

    # -- client events ----------------------------------------------------------------------
    def handle_text(self, raw: str | bytes) -> None:
        """Handle one client event as it arrived on the wire; never raises for bad input."""
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
        self.handle(event)

    def handle(self, event: Any) -> None:
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
            handler(event)
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

    def _error(self, err: ApiError, event_id: str | None) -> None:
        self.emit("error", error={**err.body(), "event_id": event_id})

    @property
    def _spoken(self) -> bool:
        """The model has produced audio in this session: its voice is fixed from then on."""
        return bool(self._audio_ms_produced)

    def _on_session_update(self, event: dict[str, Any]) -> None:
        if "session" not in event:
            raise ApiError("Missing required parameter: 'session'.", code="missing_required_parameter", param="session")
        self.session.update(event["session"], spoken=self._spoken)
        self._configure_vad()
        self.emit("session.updated", session=self.session.to_wire(self._expires_at))
        self._configure_mcp(self.session.tools, event.get("event_id"))

    def _configure_vad(self) -> None:
        td = self.session.turn_detection
        if td is None:
            return
        silence = td.get("silence_duration_ms", 500)
        if td["type"] == "semantic_vad":
            silence = _SEMANTIC_SILENCE_MS[td.get("eagerness", "auto")]
        self._vad.configure(td.get("threshold", 0.5), silence)

    # -- input audio ----------------------------------------------------------------------
    def _on_input_audio_buffer_append(self, event: dict[str, Any]) -> None:
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
        # In the session's input format, decoded to the engine's 24 kHz PCM with the wire's own clock.
        fmt = WireFormat.of(self.session.input_format)
        if self._decoder is None or self._decoder.format != fmt:
            self._decoder = fmt.decoder()
        self.feed_audio(self._decoder.feed(data))

    def feed_audio(self, pcm: PCM) -> None:
        """Input audio (mono PCM16, 24 kHz) from the microphone track or from ``append`` events."""
        if self._closed or pcm.size == 0:
            return
        self._input.append(pcm)
        self._input_samples += pcm.size
        self._stream_samples += pcm.size
        td = self.session.turn_detection
        if td is None:
            return
        for vad_event in self._vad.feed(pcm):
            if vad_event.kind == "speech_started":
                self._speech_started(vad_event.ms, td)
            else:
                self._speech_stopped(vad_event.ms, td)
        self._check_idle(td)

    def _check_idle(self, td: dict[str, Any]) -> None:
        """server_vad's ``idle_timeout_ms``: after that much silence since the last reply was heard, the buffer
        is committed (``input_audio_buffer.timeout_triggered``, then ``committed``) and a response made, so the
        model can prompt the user to go on. Counted on the input audio's own clock, like the VAD."""
        timeout = td.get("idle_timeout_ms")
        if not timeout or td["type"] != "server_vad" or self._idle_from_ms is None:
            return
        if self._speech_item is not None or self._response is not None:
            return
        now = _ms(self._stream_samples)
        if now - self._idle_from_ms < timeout:
            return
        start, self._idle_from_ms = self._idle_from_ms, None
        item_id = new_id("item")
        self.emit("input_audio_buffer.timeout_triggered", audio_start_ms=start, audio_end_ms=now, item_id=item_id)
        self._commit(item_id, upto_ms=None)
        if self.session.kind == "realtime":
            self._start_response({}, None)

    def _reply_heard(self, extra_ms: int = 0) -> None:
        """The last reply has finished playing (``extra_ms`` from now): the idle clock starts there."""
        self._idle_from_ms = _ms(self._stream_samples) + extra_ms

    def _speech_started(self, at_ms: int, td: dict[str, Any]) -> None:
        start_ms = max(0, at_ms - int(td.get("prefix_padding_ms", 300)))
        self._trim_input(start_ms)
        self._speech_item = new_id("item")
        self._idle_from_ms = None
        self.emit("input_audio_buffer.speech_started", audio_start_ms=start_ms, item_id=self._speech_item)
        if td.get("interrupt_response", True):
            self._interrupt()

    def _speech_stopped(self, at_ms: int, td: dict[str, Any]) -> None:
        item_id = self._speech_item or new_id("item")
        self._speech_item = None
        self.emit("input_audio_buffer.speech_stopped", audio_end_ms=at_ms, item_id=item_id)
        self._commit(item_id, upto_ms=at_ms)
        if td.get("create_response", True) and self.session.kind == "realtime":
            if self._response is None:
                self._start_response({}, None)

    def _trim_input(self, start_ms: int) -> None:
        """Drop buffered audio before ``start_ms`` (the VAD's prefix padding keeps what precedes speech)."""
        pcm = self._take_input()
        drop = max(0, (start_ms - self._input_start_ms) * _SAMPLES_PER_MS)
        kept = pcm[drop:]
        self._input = [kept] if kept.size else []
        self._input_samples = kept.size
        self._input_start_ms = start_ms if drop else self._input_start_ms

    def _take_input(self) -> PCM:
        return np.concatenate(self._input) if self._input else np.zeros(0, dtype=np.int16)

    def _on_input_audio_buffer_commit(self, event: dict[str, Any]) -> None:
        have_ms = self._input_samples / _SAMPLES_PER_MS
        if have_ms < 100:
            raise ApiError(
                "Error committing input audio buffer: buffer too small. Expected at least 100ms of audio, "
                f"but buffer only has {have_ms:.2f}ms of audio.",
                code="input_audio_buffer_commit_empty",
            )
        self._vad.reset()
        self._commit(self._speech_item or new_id("item"), upto_ms=None)
        self._speech_item = None

    def _on_input_audio_buffer_clear(self, event: dict[str, Any]) -> None:
        self._input, self._input_samples = [], 0
        self._input_start_ms = _ms(self._stream_samples)
        self._vad.reset()
        self._decoder = None
        self.emit("input_audio_buffer.cleared")

    def _commit(self, item_id: str, upto_ms: int | None) -> None:
        buffered = self._take_input()
        cut = buffered.size if upto_ms is None else max(0, (upto_ms - self._input_start_ms) * _SAMPLES_PER_MS)
        pcm, rest = buffered[:cut], buffered[cut:]
        self._input = [rest] if rest.size else []
        self._input_samples = rest.size
        self._input_start_ms += _ms(pcm.size)
        previous = self._last_item_id()
        self.emit("input_audio_buffer.committed", item_id=item_id, previous_item_id=previous)
        item: dict[str, Any] = {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "status": "completed",
            "role": "user",
            "content": [{"type": "input_audio", "transcript": None}],
        }
        self._item_audio[item_id] = pcm
        self._add_item(item, previous)
        config = self.session.transcription
        if config is not None:
            transcript, events = transcription_events(item_id, pcm.size / REALTIME_RATE, config, self.session.include)
            item["content"][0]["transcript"] = transcript
            for kind, fields in events:
                self.emit(kind, **fields)

    # -- conversation items ----------------------------------------------------------------
    def _last_item_id(self) -> str | None:
        return next(reversed(self._items), None)

    def _add_item(self, item: dict[str, Any], previous: str | None) -> None:
        self._items[item["id"]] = item
        self.emit("conversation.item.added", item=item, previous_item_id=previous)
        self.emit("conversation.item.done", item=item, previous_item_id=previous)

    def _on_conversation_item_create(self, event: dict[str, Any]) -> None:
        item = parse_item(event.get("item"))
        previous = event.get("previous_item_id")
        check_new_item(item, previous, self._items)
        audio = take_audio(item)
        if audio is not None:
            self._item_audio[item["id"]] = WireFormat.of(self.session.input_format).decode(audio)
        after = insert_item(self._items, item, previous)
        self.emit("conversation.item.added", item=item, previous_item_id=after)
        self.emit("conversation.item.done", item=item, previous_item_id=after)

    def _item_or_error(self, event: dict[str, Any]) -> dict[str, Any]:
        item_id = event.get("item_id")
        if not isinstance(item_id, str):
            raise ApiError("Missing required parameter: 'item_id'.", code="missing_required_parameter", param="item_id")
        if item_id not in self._items:
            raise ApiError(f"Item with item_id '{item_id}' not found.", code="item_not_found", param="item_id")
        return self._items[item_id]

    def _on_conversation_item_retrieve(self, event: dict[str, Any]) -> None:
        self.emit("conversation.item.retrieved", item=self._item_or_error(event))

    def _on_conversation_item_delete(self, event: dict[str, Any]) -> None:
        item = self._item_or_error(event)
        del self._items[item["id"]]
        self._item_audio.pop(item["id"], None)
        self.emit("conversation.item.deleted", item_id=item["id"])

    def _on_conversation_item_truncate(self, event: dict[str, Any]) -> None:
        item = self._item_or_error(event)
        asked = event.get("audio_end_ms")
        if not isinstance(asked, int) or asked < 0:
            raise ApiError(
                "Invalid value for 'audio_end_ms': expected a non-negative integer.",
                code="invalid_value",
                param="audio_end_ms",
            )
        if item.get("role") != "assistant" or item["id"] not in self._audio_ms_produced:
            raise ApiError("Only model output audio messages can be truncated", code="unsupported_content_type")
        index = _content_index(event, item)
        if item["content"][index].get("type") != "output_audio":
            raise ApiError("Only model output audio messages can be truncated", code="unsupported_content_type")
        have = self._audio_ms_produced[item["id"]]
        if asked > have:
            raise ApiError(
                f"Audio content of {have}ms is already shorter than {asked}ms",
                code="invalid_value",
                param="audio_end_ms",
            )
        self._audio_ms_produced[item["id"]] = asked
        # "Truncating audio will delete the server-side text transcript to ensure there is not text in the
        # context that hasn't been heard by the user" (the SDK's docstring of conversation.item.truncate).
        self._truncated.add(item["id"])
        for part in item.get("content") or []:
            if part.get("type") == "output_audio":
                part["transcript"] = None
        self.emit("conversation.item.truncated", item_id=item["id"], content_index=index, audio_end_ms=asked)

    # -- responses ------------------------------------------------------------------------
    def _on_response_create(self, event: dict[str, Any]) -> None:
        raw = event.get("response")
        params = validate_response({} if raw is None else raw)
        if self.session.kind == "transcription":
            raise responses_refused()
        if self._response is not None:
            raise ApiError(
                f"Conversation already has an active response in progress: {self._response['id']}. "
                "Wait until the response is finished before creating a new one.",
                code="conversation_already_has_active_response",
            )
        params = prepare_response(params, self.session, self._items, spoken=self._spoken)
        self._start_response(params, event.get("event_id"))

    def _on_response_cancel(self, event: dict[str, Any]) -> None:
        wanted = event.get("response_id")
        if self._response is None or (wanted and wanted != self._response["id"]):
            raise ApiError("Cancellation failed: no active response found", code="response_cancel_not_active")
        self._cancel("client_cancelled")

    def _on_output_audio_buffer_clear(self, event: dict[str, Any]) -> None:
        if self.player is None:
            raise ApiError(
                "output_audio_buffer.clear is only supported for WebRTC connections.",
                code="invalid_value",
                param="type",
            )
        response_id = self.player.clear()
        if response_id:
            self.emit("output_audio_buffer.cleared", response_id=response_id)
            self._reply_heard()

    def _interrupt(self) -> None:
        """Barge-in: the user spoke over the reply."""
        if self._response is not None:
            self._cancel("turn_detected")
        if self.player is not None and self.player.playing:
            response_id = self.player.clear()
            if response_id:
                self.emit("output_audio_buffer.cleared", response_id=response_id)

    def _cancel(self, reason: str) -> None:
        self._cancel_reason = reason
        if self._response_task and not self._response_task.done():
            self._response_task.cancel()

    def _start_response(self, params: dict[str, Any], client_event_id: str | None) -> None:
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
        self._response = response
        self._cancel_reason = "client_cancelled"
        self.emit("response.created", response=dict(response, output=[]))
        self._response_task = asyncio.create_task(self._run_response(response, params))
        self._response_task.add_done_callback(lambda task: self._cancelled_unstarted(task, response))

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
        # ``response.create``'s ``input`` is the response's whole context, in place of the conversation.
        context: list[dict[str, Any]] = params["input"] if "input" in params else list(self._items.values())
        for item in reversed(context):
            if item.get("type") == "function_call_output":  # the reply reports what the function returned
                calls = [*self._items.values(), *context]
                called = next((i for i in calls if i.get("call_id") == item["call_id"]), None)
                name = called["name"] if called and called.get("type") == "function_call" else "function"
                text = f"The {name} function returned {item.get('output')}"
                break
            if item.get("type") in ("mcp_call", "mcp_approval_response"):  # what an MCP tool did, or did not do
                text = mcp_report(item, self._items)
                break
            if item.get("role") == "user":
                audio = self._item_audio.get(item["id"])
                text = " ".join(p.get("text", "") for p in item.get("content", []) if p.get("text")) or None
                break
        return Turn(
            audio,
            text,
            params.get("instructions") or self.session.instructions,
            self._voice(params),
            wants_audio,
        )

    async def _run_response(self, response: dict[str, Any], params: dict[str, Any]) -> None:
        rid = response["id"]
        wants_audio = "audio" in response["output_modalities"]
        out = MessageOutput(rid, audio=wants_audio, in_conversation=response["conversation_id"] is not None)
        try:
            if not is_realtime_model(self.session.model):
                self._finish(
                    response,
                    "failed",
                    details={
                        "type": "failed",
                        "error": {
                            "type": "invalid_request_error",
                            "code": "model_not_found",
                            "message": f"The model `{self.session.model}` does not exist or you do not have "
                            "access to it.",
                        },
                    },
                )
                return
            turn = self._turn(params, wants_audio)
            latest = next(reversed(self._items.values()), None)
            approved = self._mcp.answered(latest) if latest and latest["type"] == "mcp_approval_response" else None
            if approved is not None and latest is not None:
                await self._call_mcp(response, approved, latest["approval_request_id"])
                return
            if latest is None or latest.get("type") not in _TOOL_RESULTS:
                tools = params.get("tools", self.session.tools)
                await self._list_for_response(tools)
                choice = params.get("tool_choice", self.session.tool_choice)
                call = choose_tool(tools, choice, turn.user_text, self._mcp.callable(tools))
                if call is not None and call.server_label is not None:
                    await self._use_mcp_tool(response, call)
                    return
                if call is not None:
                    await self._call_function(response, call)
                    return
            reply: Reply = await self.responder.respond(turn)
            self._open(out)
            complete = await self._stream_reply(out, reply, response)
            status: Literal["completed", "incomplete"] = "completed" if complete else "incomplete"
            self._close(out, status)
            response["output"] = [out.item]
            details = None if complete else {"type": "incomplete", "reason": "max_output_tokens"}
            self._finish(response, status, audio_ms=out.audio_ms, text=out.text, details=details)
        except asyncio.CancelledError:
            if self._closed:
                raise
            self._close(out, "incomplete")
            response["output"] = [out.item] if out.opened else []
            self._finish(
                response,
                "cancelled",
                audio_ms=out.audio_ms,
                text=out.text,
                details={"type": "cancelled", "reason": self._cancel_reason},
            )

    def _cancelled_unstarted(self, task: asyncio.Task[None], response: dict[str, Any]) -> None:
        """A response cancelled before its task ran a step (``response.cancel`` right behind ``response.create``
        in one read) never entered ``_run_response``'s handler: it still ends, with nothing announced."""
        if task.cancelled() and not self._closed and self._response is response:
            details = {"type": "cancelled", "reason": self._cancel_reason}
            self._finish(response, "cancelled", details=details)

    def _emit_all(self, events: list[Event]) -> None:
        for kind, fields in events:
            self.emit(kind, **fields)

    def _open(self, out: MessageOutput | FunctionCallOutput | McpCallOutput | McpApprovalRequestOutput) -> None:
        """Announce an output item (and add it to the conversation, unless the response is out of band)."""
        previous = self._last_item_id()
        if out.in_conversation:
            self._items[out.id] = out.item
        self._emit_all(out.open(previous))

    def _close(self, out: MessageOutput, status: Literal["completed", "incomplete"]) -> None:
        if self.player is not None:
            self.player.finish(out.response_id)
        self._emit_all(out.close(status, transcript_deleted=out.id in self._truncated))

    async def _stream_reply(self, out: MessageOutput, reply: Reply, response: dict[str, Any]) -> bool:
        """Send the reply as it is generated: audio in the response's output format (or on the WebRTC track)
        with its transcript, or text. False when ``max_output_tokens`` cut it short."""
        budget = OutputBudget.of(response["max_output_tokens"])
        words = reply.text.split(" ")
        if not out.audio:
            for n, word in enumerate(words):
                if n:
                    await asyncio.sleep(0.01 / self.generation_speed)
                delta = (" " if n else "") + word
                fitted = budget.text_that_fits(out.text, delta)
                self._emit_all(out.text_delta(fitted))
                if fitted != delta:
                    return False
            return True
        pcm = reply.audio if reply.audio is not None else np.zeros(0, dtype=np.int16)
        fmt = WireFormat.of(response["audio"]["output"]["format"])
        # Over WebRTC the voice rides the call's Opus track whatever the format says; the format is the deltas'.
        wire = fmt.encode(pcm) if self.player is None else b""
        chunk = _CHUNK_MS * _SAMPLES_PER_MS
        starts = list(range(0, pcm.size, chunk)) or [0]
        per_chunk = -(-len(words) // len(starts))
        self._audio_ms_produced[out.id] = 0
        for n, start in enumerate(starts):
            if n:
                await asyncio.sleep(_CHUNK_MS / 1000 / self.generation_speed)
            end = min(start + chunk, pcm.size)
            said = " ".join(words[n * per_chunk : (n + 1) * per_chunk])
            transcript = (" " if out.text and said else "") + said
            fits = budget.fits(out.audio_ms + _ms(end - start), out.text + transcript)
            if not fits:  # max_output_tokens: the audio that still fits, in whole tokens, and no more words
                end = start + min(end - start, budget.audio_ms_left(out.audio_ms, out.text) * _SAMPLES_PER_MS)
                transcript = ""
            if end > start:
                audio: str | None = None
                if self.player is not None:
                    self.player.enqueue(pcm[start:end], out.response_id)
                else:
                    audio = base64.b64encode(wire[fmt.wire_bytes(start) : fmt.wire_bytes(end)]).decode()
                self._emit_all(out.audio_delta(audio, _ms(end - start), transcript))
            else:
                self._emit_all(out.audio_delta(None, 0, transcript))
            self._audio_ms_produced[out.id] = out.audio_ms
            if not fits:
                return False
        return True

    async def _call_function(self, response: dict[str, Any], call: ToolCall) -> None:
        """The response is a function call: its item, its arguments streamed, then ``response.done``."""
        out = FunctionCallOutput(response["id"], call.name, in_conversation=response["conversation_id"] is not None)
        budget = OutputBudget.of(response["max_output_tokens"])
        self._open(out)
        complete = True
        try:
            for start in range(0, len(call.arguments), _ARGUMENT_CHUNK):
                if start:
                    await asyncio.sleep(0.01 / self.generation_speed)
                delta = call.arguments[start : start + _ARGUMENT_CHUNK]
                fitted = budget.text_that_fits(out.arguments, delta)
                self._emit_all(out.arguments_delta(fitted))
                if fitted != delta:  # max_output_tokens counts the arguments too ("inclusive of tool calls")
                    complete = False
                    break
        except asyncio.CancelledError:
            if self._closed:
                raise
            self._emit_all(out.close("incomplete"))
            response["output"] = [out.item]
            details = {"type": "cancelled", "reason": self._cancel_reason}
            self._finish(response, "cancelled", text=out.arguments, details=details)
            return
        self._emit_all(out.close("completed" if complete else "incomplete"))
        response["output"] = [out.item]
        if complete:
            self._finish(response, "completed", text=out.arguments)
        else:
            details = {"type": "incomplete", "reason": "max_output_tokens"}
            self._finish(response, "incomplete", text=out.arguments, details=details)

    # -- MCP tools: the emulator is the MCP client (``mcp.py``); the network calls run as tasks --------------
    def _configure_mcp(self, tools: list[dict[str, Any]], event_id: str | None) -> None:
        """List the tools of each MCP server the session names anew, in the background, as the service does."""
        for server in self._mcp.configure(tools):
            if superseded := self._mcp_tasks.pop(server.label, None):
                superseded.cancel()  # a new definition of the same server: only its listing counts
            task = asyncio.create_task(self._list_mcp_tools(server, event_id))
            self._mcp_tasks[server.label] = task
            task.add_done_callback(functools.partial(self._mcp_listing_ended, server.label))

    def _mcp_listing_ended(self, label: str, task: asyncio.Task[None]) -> None:
        if self._mcp_tasks.get(label) is task:
            del self._mcp_tasks[label]

    async def _list_for_response(self, tools: list[dict[str, Any]]) -> None:
        """MCP servers defined in ``response.create`` alone: the response lists them before it chooses."""
        for server in self._mcp.configure(tools):
            if superseded := self._mcp_tasks.pop(server.label, None):
                superseded.cancel()
            await self._list_mcp_tools(server, None)

    async def _list_mcp_tools(self, server: McpServer, event_id: str | None) -> None:
        listing = McpListing(server.label, self._last_item_id())
        self._items[listing.item["id"]] = listing.item
        self._emit_all(listing.start())
        try:
            tools = await list_tools(server)
        except McpFailure as failure:
            self._mcp.forget(server)
            self._emit_all(listing.failed())
            code, message = failure.listing_error(server.label)
            self._error(ApiError(message, type="external_connector_error", code=code, param="tools"), event_id)
            return
        except asyncio.CancelledError:
            self._mcp.forget(server)
            if not self._closed:  # superseded, or the response that waited for it was cancelled
                self._emit_all(listing.failed())
            raise
        self._emit_all(listing.completed(self._mcp.listed(server, tools)))

    async def _use_mcp_tool(self, response: dict[str, Any], call: ToolCall) -> None:
        """The model calls a tool of an MCP server: at once, or first asks the client (``require_approval``)."""
        if not self._mcp.needs_approval(call):
            await self._call_mcp(response, call, None)
            return
        in_conversation = response["conversation_id"] is not None
        out = McpApprovalRequestOutput(response["id"], self._mcp.ask(call), call, in_conversation=in_conversation)
        self._open(out)
        self._emit_all(out.close())
        response["output"] = [out.item]
        self._finish(response, "completed", text=call.arguments)

    async def _call_mcp(self, response: dict[str, Any], call: ToolCall, approval_request_id: str | None) -> None:
        """Run an MCP call as part of the response: its item, its arguments, the server's answer, then
        ``response.done``. A cancelled response cancels the call."""
        assert call.server_label is not None
        in_conversation = response["conversation_id"] is not None
        out = McpCallOutput(response["id"], call, approval_request_id, in_conversation=in_conversation)
        self._open(out)
        try:
            for start in range(0, len(call.arguments), _ARGUMENT_CHUNK):
                if start:
                    await asyncio.sleep(0.01 / self.generation_speed)
                self._emit_all(out.arguments_delta(call.arguments[start : start + _ARGUMENT_CHUNK]))
            self._emit_all(out.arguments_done())
            try:
                output = await call_tool(self._mcp.server(call.server_label), call.name, call.arguments)
            except McpFailure as failure:
                self._emit_all(out.failed(failure.error))
            else:
                self._emit_all(out.completed(output))
        except asyncio.CancelledError:
            if self._closed:
                raise
            self._emit_all(out.close())
            response["output"] = [out.item]
            details = {"type": "cancelled", "reason": self._cancel_reason}
            self._finish(response, "cancelled", text=out.arguments, details=details)
            return
        self._emit_all(out.close())
        response["output"] = [out.item]
        self._finish(response, "completed", text=out.arguments)

    def _finish(
        self,
        response: dict[str, Any],
        status: str,
        *,
        audio_ms: int = 0,
        text: str = "",
        details: dict[str, Any] | None = None,
    ) -> None:
        response["status"] = status
        response["status_details"] = details
        response["usage"] = _usage(self._input_tokens(), audio_ms, text)
        self._response = None
        self.emit("response.done", response=response)
        if self.player is None:  # WebSocket: the client plays the reply from now on, for as long as it lasts
            self._reply_heard(audio_ms)
        elif not audio_ms or not self.player.playing:  # WebRTC with nothing (left) to play
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

    def _input_tokens(self) -> int:
        return sum(a.size for a in self._item_audio.values()) // (REALTIME_RATE // 10)

    # -- called by the WebRTC player ------------------------------------------------------
    def playback_started(self, response_id: str) -> None:
        self.emit("output_audio_buffer.started", response_id=response_id)

    def playback_stopped(self, response_id: str) -> None:
        self.emit("output_audio_buffer.stopped", response_id=response_id)
        if self._response is None:
            self._reply_heard()


_JSON_KINDS = {bool: "a boolean", float: "a number", str: "a string", dict: "an object", list: "an array"}


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
