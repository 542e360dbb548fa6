"""``RealtimeSession``: the guide's browser client, in Python, with every step observable.

It takes an ephemeral key from a key provider, opens a call (WebRTC, or WebSocket as a fallback),
streams an audio source up and plays the reply into a sink, and reports what happens as it happens:
connection states (``connecting`` → ``connected`` → ``disconnected``/``failed``), server events, input
and output levels, and latency records. When a live connection drops it mints a fresh key and
reconnects with exponential backoff, up to a limit, re-applying its session config.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from types import TracebackType
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from rtkit.audio.base import AudioSink, AudioSource
from rtkit.audio.media import Resampler
from rtkit.audio.pcm import PCM
from rtkit.barge_in import Playout, playout_sink
from rtkit.call import CallCore, ConnectionState, LiveCall, ReconnectPolicy, StateChange, TransportChoice
from rtkit.errors import NetworkLostError, RtkitError, WebRTCUnavailableError
from rtkit.keys import KeyProvider
from rtkit.metrics import BargeIn, ConnectRecord
from rtkit.resume import ResumePolicy
from rtkit.tokens import OPENAI_BASE_URL
from rtkit.transports.base import Transport, TransportCallbacks
from rtkit.transports.webrtc import WebRTCTransport
from rtkit.transports.websocket import WebSocketTransport

__all__ = ["ConnectionState", "RealtimeSession", "ReconnectPolicy", "StateChange", "TransportChoice"]

log = logging.getLogger("rtkit.session")


class RealtimeSession(CallCore):
    """A conversation with the Realtime API (or the emulator: only ``base_url`` differs), audio in the kernel."""

    _log_name = "session"
    _var_name = "session"
    _logger = log

    def __init__(
        self,
        keys: KeyProvider | str,
        config: BaseModel | dict[str, Any] | None = None,
        *,
        base_url: str = OPENAI_BASE_URL,
        source: AudioSource | None = None,
        sink: AudioSink | None = None,
        transport: TransportChoice = "auto",
        reconnect: ReconnectPolicy | None = None,
        ice_servers: list[dict[str, Any]] | None = None,
        connect_timeout: float = 10.0,
        model: str = "gpt-realtime",
        jitter_packets: int | None = None,
        disconnect_grace: float = 3.0,
        resume: ResumePolicy | None = None,
    ) -> None:
        super().__init__(
            keys, config, transport=transport, reconnect=reconnect, connect_timeout=connect_timeout, resume=resume
        )
        self.base_url = base_url.rstrip("/")
        self.source = source
        self.sink = sink
        self.ice_servers = ice_servers
        #: Packets of look-ahead in the WebRTC receive jitter buffer (default: 1 on loopback, else 2).
        self.jitter_packets = jitter_packets
        self.model = (self.config or {}).get("model", model)
        self._audio_started = False
        self._out_resampler: Resampler | None = None
        #: How long a connection may go quiet before it counts as lost: over WebRTC, seconds without a packet
        #: after the first second of silence (browsers wait 5 s in ``disconnected``); over the WebSocket, the
        #: keepalive ping's timeout.
        self.disconnect_grace = disconnect_grace
        self._playout = Playout(sink.sample_rate if sink else 24_000)
        self._played_without_sink = 0

    # -- lifecycle ------------------------------------------------------------------------
    async def _prepare(self) -> None:
        await self._start_audio()

    async def _hung_up(self) -> None:
        """The microphone and speaker are let go with the call (``connect()`` opens them again)."""
        if self._audio_started:
            self._audio_started = False
            for part in (self.source, self.sink):
                if part is not None:
                    await part.close()

    async def check_microphone(self) -> None:
        """Open and close the kernel's default microphone: raises ``MicrophoneUnavailableError`` (or
        ``MicrophoneDeniedError``) with a hint when this machine has none or may not use it."""
        from rtkit.audio.sources import MicrophoneSource

        microphone = MicrophoneSource()
        try:
            await microphone.start()
        finally:
            await microphone.close()

    async def __aenter__(self) -> RealtimeSession:
        await self.connect()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def _start_audio(self) -> None:
        if self._audio_started:
            return
        for part in (self.source, self.sink):
            if part is not None:
                await part.start()
        self._audio_started = True

    def _order(self) -> list[str]:
        return ["webrtc", "websocket"] if self.transport_choice == "auto" else [self.transport_choice]

    def _make(self, kind: str) -> Transport:
        callbacks = TransportCallbacks(
            on_event=self._on_server_event, on_audio=self._on_audio, on_closed=self._on_closed, on_input=self._on_input
        )
        self._playout = Playout(self.sink.sample_rate if self.sink else 24_000)
        if kind == "webrtc":
            return WebRTCTransport(
                self.base_url,
                callbacks,
                model=self.model,
                connect_timeout=self.connect_timeout,
                ice_servers=self.ice_servers,
                jitter_packets=self.jitter_packets,
                output_rate=self.sink.sample_rate if self.sink else 24_000,
                disconnect_grace=self.disconnect_grace,
            )
        return WebSocketTransport(
            self.base_url,
            callbacks,
            model=self.model,
            connect_timeout=self.connect_timeout,
            disconnect_grace=self.disconnect_grace,
        )

    async def _open_transport(self, key: str, record: ConnectRecord) -> None:
        """WebRTC, else (when it cannot be set up) the WebSocket. A fresh key after a refusal is tried where the
        refused one was: a fallback this attempt already made holds."""
        order, index = self._order(), 0
        if record.refused_key is not None and self.transport is not None and self.transport.name in order:
            index = order.index(self.transport.name)
        while True:
            kind = order[index]
            transport = self._make(kind)
            self.transport = transport
            try:
                await transport.connect(key, self.source)
                return
            except WebRTCUnavailableError as exc:
                if index + 1 >= len(order):
                    raise
                self._notice(
                    "rtkit.transport_fallback", from_transport=kind, to_transport=order[index + 1], reason=str(exc)
                )
                index += 1

    # -- transport callbacks ----------------------------------------------------------------
    def _on_audio(self, pcm: PCM, rate: int) -> None:
        webrtc = self.transport_name == "webrtc"
        if self._playout.silenced(webrtc):
            return
        level = self.output_meter.measure(pcm)
        self.metrics.output_audio(level.rms_dbfs, pcm.size, rate)
        before = self._sink_written()
        if self.sink is not None:
            if self._out_resampler is None:
                self._out_resampler = Resampler(self.sink.sample_rate)
            self.sink.write(self._out_resampler.push(pcm, rate))
        after = self._sink_written()
        if playout_sink(self.sink) is None:  # a sink that cannot tell is taken to have played what it got
            after = before + round(pcm.size * self._playout.sink_rate / rate)
            self._played_without_sink = after
        self._playout.wrote(before, after, received=pcm.size, voiced=bool(pcm.any()), webrtc=webrtc)

    def _sink_written(self) -> int:
        sink = playout_sink(self.sink)
        return sink.written_samples if sink is not None else self._played_without_sink

    def _on_server_event(self, event: dict[str, Any]) -> None:
        self._playout.event(event)
        self._receive(event)
        if event.get("type") == "input_audio_buffer.speech_started":
            self._barge_in()

    def _barge_in(self) -> None:
        """The user spoke over the reply: silence it at once, then tell the API what was heard, as the official
        clients do (``output_audio_buffer.clear`` over WebRTC, ``response.cancel`` where the server will not
        cancel by itself, ``conversation.item.truncate`` to the position the sink had played)."""
        sink = playout_sink(self.sink)
        webrtc = self.transport_name == "webrtc"
        cut = self._playout.interrupt(
            sink.played_samples if sink is not None else self._played_without_sink, webrtc=webrtc
        )
        if cut is None:
            return
        if sink is not None:
            sink.discard_unplayed()
        cancelled = truncated = False
        try:
            if webrtc:
                self.send({"type": "output_audio_buffer.clear"})
            if not cut.interrupt_response and cut.active_response is not None:
                self.send({"type": "response.cancel", "response_id": cut.active_response})
                cancelled = True
            # Truncating to 0 ms, or an item outside the conversation, would only earn an error event.
            if cut.truncatable and cut.played_ms > 0:
                self.send(
                    {
                        "type": "conversation.item.truncate",
                        "item_id": cut.item_id,
                        "content_index": cut.content_index,
                        "audio_end_ms": cut.played_ms,
                    }
                )
                truncated = True
        except NetworkLostError:  # the connection went while the user spoke: the reconnection takes over
            self._logger.info("barge-in not sent: the connection is gone")
        self._barged_in(
            BargeIn(
                item_id=cut.item_id,
                response_id=cut.response_id,
                content_index=cut.content_index,
                played_ms=cut.played_ms,
                produced_ms=cut.received_ms,
                truncated=truncated,
                cancelled=cancelled,
                transport=self.transport_name,
            )
        )

    def _on_input(self, pcm: PCM, rate: int) -> None:
        level = self.input_meter.measure(pcm)
        self.metrics.input_level(level.rms_dbfs)

    def _on_closed(self, error: RtkitError | None) -> None:
        if self._closing:
            return
        self._lost(error, str(error) if error else "the server closed the connection")

    async def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        async for event in self.events:
            yield event

    # -- client events --------------------------------------------------------------------
    def clear_output_audio(self) -> None:
        """Stop the model's voice now (WebRTC) by hand; a user speaking over it does this on its own (``BargeIn``)."""
        if self.transport is not None and self.transport.name == "webrtc":
            self.send({"type": "output_audio_buffer.clear"})


if TYPE_CHECKING:  # mypy checks the session against the protocol that plots and panels are written for
    _session_shape: type[LiveCall] = RealtimeSession
