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
import logging
import time
from collections.abc import Callable
from typing import Any, Literal, Protocol

import numpy as np

from rtkit._ids import new_id
from rtkit._json import JsonError, loads
from rtkit.audio.pcm import PCM, REALTIME_RATE
from rtkit.emulator.errors import ApiError
from rtkit.emulator.responders import Reply, Responder, Turn
from rtkit.emulator.sessions import SessionState
from rtkit.emulator.tools import ToolCall, choose_tool
from rtkit.emulator.vad import EnergyVad
from rtkit.schema import is_realtime_model

log = logging.getLogger("rtkit.emulator")

Sink = Callable[[dict[str, Any]], None]
TransportKind = Literal["webrtc", "websocket"]

_SAMPLES_PER_MS = REALTIME_RATE // 1000
#: Audio is generated in 100 ms chunks; each becomes one delta (WebSocket) or five track frames.
_CHUNK_MS = 100
#: Characters of function-call arguments per `response.function_call_arguments.delta`.
_ARGUMENT_CHUNK = 16
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
        self._response: dict[str, Any] | None = None
        self._response_task: asyncio.Task[None] | None = None
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

    def start(self) -> None:
        """Announce the session, as the service does first on every new connection."""
        self.emit("session.created", session=self.session.to_wire(self._expires_at))

    async def close(self) -> None:
        self._closed = True
        if self._expiry:
            self._expiry.cancel()
        task = self._response_task
        if task and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _expire(self, seconds: float, on_expired: Callable[[str], None] | None) -> None:
        minutes = round(seconds / 60)
        reason = f"Your session hit the maximum duration of {minutes} minutes."
        self._error(ApiError(reason, code="session_expired"), None)
        if on_expired:
            on_expired(reason)

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

    def _on_session_update(self, event: dict[str, Any]) -> None:
        if "session" not in event:
            raise ApiError("Missing required parameter: 'session'.", code="missing_required_parameter", param="session")
        self.session.update(event["session"])
        self._configure_vad()
        self.emit("session.updated", session=self.session.to_wire(self._expires_at))

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
        try:
            data = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError):
            raise ApiError(
                "Invalid value for 'audio': expected base64-encoded audio bytes.",
                code="invalid_value",
                param="audio",
            ) from None
        if len(data) % 2:
            data = data[:-1]
        self.feed_audio(np.frombuffer(data, dtype="<i2").astype(np.int16))

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
        if self.session.transcription is not None:
            transcript = f"[speech, {pcm.size / REALTIME_RATE:.2f} s]"
            item["content"][0]["transcript"] = transcript
            self.emit(
                "conversation.item.input_audio_transcription.completed",
                item_id=item_id,
                content_index=0,
                transcript=transcript,
                usage={"type": "duration", "seconds": round(pcm.size / REALTIME_RATE, 3)},
            )

    # -- conversation items ----------------------------------------------------------------
    def _last_item_id(self) -> str | None:
        return next(reversed(self._items), None)

    def _add_item(self, item: dict[str, Any], previous: str | None) -> None:
        self._items[item["id"]] = item
        self.emit("conversation.item.added", item=item, previous_item_id=previous)
        self.emit("conversation.item.done", item=item, previous_item_id=previous)

    def _on_conversation_item_create(self, event: dict[str, Any]) -> None:
        item = event.get("item")
        if not isinstance(item, dict):
            raise ApiError("Missing required parameter: 'item'.", code="missing_required_parameter", param="item")
        item = _validate_item(item)
        if item["id"] in self._items:
            raise ApiError(f"Item with id '{item['id']}' already exists.", code="duplicate_item_id", param="item.id")
        for part in item.get("content", []):
            if part.get("type") == "input_audio" and part.get("audio"):
                self._item_audio[item["id"]] = np.frombuffer(base64.b64decode(part.pop("audio")), dtype="<i2")
        self._add_item(item, event.get("previous_item_id") or self._last_item_id())

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
        self.emit(
            "conversation.item.truncated",
            item_id=item["id"],
            content_index=int(event.get("content_index", 0)),
            audio_end_ms=asked,
        )

    # -- responses ------------------------------------------------------------------------
    def _on_response_create(self, event: dict[str, Any]) -> None:
        params = event.get("response") or {}
        if not isinstance(params, dict):
            raise ApiError("Invalid type for 'response': expected an object.", code="invalid_type", param="response")
        if self._response is not None:
            raise ApiError(
                f"Conversation already has an active response in progress: {self._response['id']}. "
                "Wait until the response is finished before creating a new one.",
                code="conversation_already_has_active_response",
            )
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
            "max_output_tokens": params.get("max_output_tokens", "inf"),
            "audio": {"output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": self.session.voice}},
            "usage": None,
            "metadata": params.get("metadata"),
        }
        self._response = response
        self._cancel_reason = "client_cancelled"
        self.emit("response.created", response=dict(response, output=[]))
        self._response_task = asyncio.create_task(self._run_response(response, params))

    def _turn(self, params: dict[str, Any], wants_audio: bool) -> Turn:
        audio: PCM | None = None
        text: str | None = None
        for item in reversed(self._items.values()):
            if item.get("type") == "function_call_output":  # the reply reports what the function returned
                called = next((i for i in self._items.values() if i.get("call_id") == item["call_id"]), None)
                name = called["name"] if called and called.get("type") == "function_call" else "function"
                text = f"The {name} function returned {item.get('output')}"
                break
            if item.get("role") == "user":
                audio = self._item_audio.get(item["id"])
                text = " ".join(p.get("text", "") for p in item.get("content", []) if p.get("text")) or None
                break
        return Turn(
            audio,
            text,
            params.get("instructions") or self.session.instructions,
            self.session.voice,
            wants_audio,
        )

    async def _run_response(self, response: dict[str, Any], params: dict[str, Any]) -> None:
        rid = response["id"]
        wants_audio = "audio" in response["output_modalities"]
        item: dict[str, Any] = {
            "id": new_id("item"),
            "object": "realtime.item",
            "type": "message",
            "status": "in_progress",
            "role": "assistant",
            "content": [],
        }
        ctx: dict[str, Any] = {"response_id": rid, "item_id": item["id"], "output_index": 0, "content_index": 0}
        text_so_far: list[str] = []
        audio_ms = 0
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
            if latest is None or latest.get("type") != "function_call_output":
                tools = params.get("tools", self.session.tools)
                call = choose_tool(tools, params.get("tool_choice", self.session.tool_choice), turn.user_text)
                if call is not None:
                    await self._call_function(response, call)
                    return
            reply: Reply = await self.responder.respond(turn)
            in_conversation = response["conversation_id"] is not None
            previous = self._last_item_id()
            self.emit("response.output_item.added", response_id=rid, output_index=0, item=item)
            if in_conversation:
                self._items[item["id"]] = item
                self.emit("conversation.item.added", item=item, previous_item_id=previous)
            part: dict[str, Any] = {"type": "audio", "transcript": ""} if wants_audio else {"type": "text", "text": ""}
            self.emit("response.content_part.added", **ctx, part=part)
            words = reply.text.split(" ")
            if wants_audio and reply.audio is not None:
                chunk = _CHUNK_MS * _SAMPLES_PER_MS
                chunks = [reply.audio[i : i + chunk] for i in range(0, reply.audio.size, chunk)] or [reply.audio]
                per_chunk = -(-len(words) // len(chunks))
                self._audio_ms_produced[item["id"]] = 0
                for n, pcm in enumerate(chunks):
                    if n:
                        await asyncio.sleep(_CHUNK_MS / 1000 / self.generation_speed)
                    if self.player is not None:
                        self.player.enqueue(pcm, rid)
                    else:
                        self.emit(
                            "response.output_audio.delta",
                            **ctx,
                            delta=base64.b64encode(pcm.astype("<i2").tobytes()).decode(),
                        )
                    audio_ms += _ms(pcm.size)
                    self._audio_ms_produced[item["id"]] = audio_ms
                    said = words[n * per_chunk : (n + 1) * per_chunk]
                    if said:
                        delta = (" " if text_so_far else "") + " ".join(said)
                        text_so_far.append(delta)
                        self.emit("response.output_audio_transcript.delta", **ctx, delta=delta)
                if self.player is not None:
                    self.player.finish(rid)
                transcript = "".join(text_so_far)
                self.emit("response.output_audio.done", **ctx)
                self.emit("response.output_audio_transcript.done", **ctx, transcript=transcript)
                part = {"type": "audio", "transcript": transcript}
                item["content"] = [self._spoken(item, transcript)]
            else:
                for n, word in enumerate(words):
                    if n:
                        await asyncio.sleep(0.01 / self.generation_speed)
                    delta = (" " if n else "") + word
                    text_so_far.append(delta)
                    self.emit("response.output_text.delta", **ctx, delta=delta)
                text = "".join(text_so_far)
                self.emit("response.output_text.done", **ctx, text=text)
                part = {"type": "text", "text": text}
                item["content"] = [{"type": "output_text", "text": text}]
            self.emit("response.content_part.done", **ctx, part=part)
            item["status"] = "completed"
            self.emit("response.output_item.done", response_id=rid, output_index=0, item=item)
            if in_conversation:
                self.emit("conversation.item.done", item=item, previous_item_id=previous)
            response["output"] = [item]
            self._finish(response, "completed", audio_ms=audio_ms, text="".join(text_so_far))
        except asyncio.CancelledError:
            if self._closed:
                raise
            item["status"] = "incomplete"
            transcript = "".join(text_so_far)
            item["content"] = (
                [self._spoken(item, transcript)] if wants_audio else [{"type": "output_text", "text": transcript}]
            )
            if self.player is not None:
                self.player.finish(rid)
            self.emit("response.output_item.done", response_id=rid, output_index=0, item=item)
            response["output"] = [item]
            self._finish(
                response,
                "cancelled",
                audio_ms=audio_ms,
                text=transcript,
                details={"type": "cancelled", "reason": self._cancel_reason},
            )

    def _spoken(self, item: dict[str, Any], transcript: str) -> dict[str, Any]:
        """The audio content of a reply as it stays in the conversation: without a transcript once truncated."""
        return {"type": "output_audio", "transcript": None if item["id"] in self._truncated else transcript}

    async def _call_function(self, response: dict[str, Any], call: ToolCall) -> None:
        """The response is a function call: its item, its arguments streamed, then ``response.done``."""
        rid = response["id"]
        item: dict[str, Any] = {
            "id": new_id("item"),
            "object": "realtime.item",
            "type": "function_call",
            "status": "in_progress",
            "name": call.name,
            "call_id": new_id("call"),
            "arguments": "",
        }
        ctx = {"response_id": rid, "item_id": item["id"], "output_index": 0, "call_id": item["call_id"]}
        in_conversation = response["conversation_id"] is not None
        previous = self._last_item_id()
        self.emit("response.output_item.added", response_id=rid, output_index=0, item=dict(item))
        if in_conversation:
            self._items[item["id"]] = item
            self.emit("conversation.item.added", item=dict(item), previous_item_id=previous)
        try:
            for start in range(0, len(call.arguments), _ARGUMENT_CHUNK):
                if start:
                    await asyncio.sleep(0.01 / self.generation_speed)
                delta = call.arguments[start : start + _ARGUMENT_CHUNK]
                item["arguments"] += delta
                self.emit("response.function_call_arguments.delta", **ctx, delta=delta)
        except asyncio.CancelledError:
            if self._closed:
                raise
            item["status"] = "incomplete"
            self.emit("response.output_item.done", response_id=rid, output_index=0, item=dict(item))
            response["output"] = [item]
            self._finish(response, "cancelled", details={"type": "cancelled", "reason": self._cancel_reason})
            return
        self.emit("response.function_call_arguments.done", **ctx, name=call.name, arguments=call.arguments)
        item["status"] = "completed"
        self.emit("response.output_item.done", response_id=rid, output_index=0, item=dict(item))
        if in_conversation:
            self.emit("conversation.item.done", item=dict(item), previous_item_id=previous)
        response["output"] = [item]
        self._finish(response, "completed", text=call.arguments)

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


def _usage(input_audio_tokens: int, audio_ms: int, text: str) -> dict[str, Any]:
    # The service bills about 10 input audio tokens/s and 20 output audio tokens/s; text ~ 4 chars/token.
    audio_out = audio_ms // 50
    text_out = max(1, len(text) // 4) if text else 0
    text_in = 120
    total_in = input_audio_tokens + text_in
    return {
        "total_tokens": total_in + audio_out + text_out,
        "input_tokens": total_in,
        "output_tokens": audio_out + text_out,
        "input_token_details": {
            "text_tokens": text_in,
            "audio_tokens": input_audio_tokens,
            "cached_tokens": 0,
            "image_tokens": 0,
            "cached_tokens_details": {"text_tokens": 0, "audio_tokens": 0, "image_tokens": 0},
        },
        "output_token_details": {"text_tokens": text_out, "audio_tokens": audio_out},
    }


_USER_PARTS = {"input_text", "input_audio", "input_image"}
_ASSISTANT_PARTS = {"output_text", "output_audio", "text", "audio"}


def _validate_item(item: dict[str, Any]) -> dict[str, Any]:
    item = dict(item)
    kind = item.get("type")
    if kind not in ("message", "function_call", "function_call_output"):
        raise ApiError(
            f"Invalid value: '{kind}'. Supported values are: 'message', 'function_call', and 'function_call_output'.",
            code="invalid_value",
            param="item.type",
        )
    item.setdefault("id", new_id("item"))
    item["object"] = "realtime.item"
    item["status"] = "completed"
    if kind != "message":
        required = ("call_id", "output") if kind == "function_call_output" else ("name", "arguments")
        for field in required:
            if field not in item:
                raise ApiError(
                    f"Missing required parameter: 'item.{field}'.",
                    code="missing_required_parameter",
                    param=f"item.{field}",
                )
        return item
    role = item.get("role")
    if role not in ("user", "assistant", "system"):
        raise ApiError(
            f"Invalid value: '{role}'. Supported values are: 'user', 'assistant', and 'system'.",
            code="invalid_value",
            param="item.role",
        )
    content = item.get("content")
    if not isinstance(content, list) or not content:
        raise ApiError(
            "Missing required parameter: 'item.content'.",
            code="missing_required_parameter",
            param="item.content",
        )
    allowed = _USER_PARTS if role == "user" else _ASSISTANT_PARTS if role == "assistant" else {"input_text"}
    parts = []
    for i, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") not in allowed:
            got = part.get("type") if isinstance(part, dict) else part
            raise ApiError(
                f"Invalid value: '{got}'. Supported values are: " + ", ".join(f"'{a}'" for a in sorted(allowed)) + ".",
                code="invalid_value",
                param=f"item.content[{i}].type",
            )
        if part["type"] in ("input_text", "output_text", "text") and not isinstance(part.get("text"), str):
            raise ApiError(
                f"Missing required parameter: 'item.content[{i}].text'.",
                code="missing_required_parameter",
                param=f"item.content[{i}].text",
            )
        parts.append(dict(part))
    if role == "assistant" and all(p["type"] in ("audio", "output_audio") for p in parts):
        raise ApiError(
            "Missing required parameter: 'item.content[0].text'.",
            code="missing_required_parameter",
            param="item.content[0].text",
        )
    item["content"] = parts
    return item
