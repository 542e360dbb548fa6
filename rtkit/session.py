"""``RealtimeSession``: the seed's browser client, in Python, with every step observable.

It takes an ephemeral key from a key provider, opens a call (WebRTC, or WebSocket as a fallback),
streams an audio source up and plays the reply into a sink, and reports what happens as it happens:
connection states (``connecting`` → ``connected`` → ``disconnected``/``failed``), server events, input
and output levels, and latency records. When a live connection drops it mints a fresh key and
reconnects with exponential backoff, up to a limit, re-applying its session config.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal

import av
import numpy as np
from pydantic import BaseModel

from rtkit.audio.base import AudioSink, AudioSource
from rtkit.audio.meter import Level, LevelMeter
from rtkit.audio.pcm import PCM
from rtkit.errors import (
    AuthenticationError,
    ConfigurationError,
    InvalidRequestError,
    NetworkLostError,
    RealtimeAPIError,
    RtkitError,
    TokenExpiredError,
    WebRTCUnavailableError,
)
from rtkit.events import Broadcast, EventWaiters, next_value
from rtkit.keys import KeyProvider, as_provider
from rtkit.metrics import ConnectRecord, SessionMetrics
from rtkit.tokens import OPENAI_BASE_URL, EphemeralKey
from rtkit.transports.base import Transport, TransportCallbacks
from rtkit.transports.webrtc import WebRTCTransport
from rtkit.transports.websocket import WebSocketTransport

__all__ = ["ConnectionState", "RealtimeSession", "ReconnectPolicy", "StateChange"]

log = logging.getLogger("rtkit.session")

ConnectionState = Literal["connecting", "connected", "disconnected", "failed"]
TransportChoice = Literal["webrtc", "websocket", "auto"]


@dataclass(frozen=True)
class StateChange:
    """One transition; ``attempt`` is 0 for the first connection and counts reconnections after it."""

    state: ConnectionState
    previous: ConnectionState
    attempt: int = 0
    reason: str | None = None
    error: RtkitError | None = None
    transport: str | None = None
    at: float = field(default_factory=time.time)


@dataclass(frozen=True)
class ReconnectPolicy:
    """How hard to try after a live connection drops: exponential backoff with jitter, bounded."""

    max_attempts: int = 5
    initial_delay: float = 0.5
    max_delay: float = 8.0
    #: Each delay is scaled by a random factor in [1 - jitter, 1 + jitter], so a classroom of clients
    #: that lost the network together does not come back in lockstep.
    jitter: float = 0.2

    def delay(self, attempt: int) -> float:
        base = min(self.max_delay, self.initial_delay * 2.0 ** (attempt - 1))
        return max(0.0, base * random.uniform(1 - self.jitter, 1 + self.jitter))


class _Resampler:
    """Streaming mono resampling between two rates (keeps filter state across chunks)."""

    def __init__(self, from_rate: int, to_rate: int) -> None:
        self.from_rate, self.to_rate = from_rate, to_rate
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=to_rate)

    def push(self, pcm: PCM) -> PCM:
        if self.from_rate == self.to_rate:
            return pcm
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self.from_rate
        out = [f.to_ndarray().reshape(-1) for f in self._resampler.resample(frame)]
        return np.concatenate(out).astype(np.int16) if out else np.zeros(0, dtype=np.int16)


class RealtimeSession:
    """A conversation with the Realtime API (or the emulator: only ``base_url`` differs)."""

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
    ) -> None:
        if transport not in ("webrtc", "websocket", "auto"):
            raise ConfigurationError(f"Unknown transport {transport!r}.", hint="use 'webrtc', 'websocket' or 'auto'")
        self._keys = as_provider(keys)
        self.config: dict[str, Any] | None = (
            config.model_dump(exclude_none=True, mode="json") if isinstance(config, BaseModel) else config
        )
        self.base_url = base_url.rstrip("/")
        self.source = source
        self.sink = sink
        self.transport_choice: TransportChoice = transport
        self.reconnect_policy = reconnect if reconnect is not None else ReconnectPolicy()
        self.ice_servers = ice_servers
        self.connect_timeout = connect_timeout
        #: Packets of look-ahead in the WebRTC receive jitter buffer (default: 1 on loopback, else 2).
        self.jitter_packets = jitter_packets
        self.model = (self.config or {}).get("model", model)

        self.states: Broadcast[StateChange] = Broadcast()
        self.events: Broadcast[dict[str, Any]] = Broadcast(maxsize=5000)
        self.errors: Broadcast[RealtimeAPIError] = Broadcast()
        self.input_meter = LevelMeter("input")
        self.output_meter = LevelMeter("output")
        self.metrics = SessionMetrics()
        self.key: EphemeralKey | None = None
        self.transport: Transport | None = None

        self._state: ConnectionState = "disconnected"
        self._closing = False
        self._audio_started = False
        self._waiters = EventWaiters()
        self._reconnect_task: asyncio.Task[None] | None = None
        self._out_resampler: _Resampler | None = None

    # -- observable state -------------------------------------------------------------------
    @property
    def state(self) -> ConnectionState:
        return self._state

    @property
    def levels(self) -> Broadcast[Level]:
        """Input levels; ``output_levels`` for the model's voice."""
        return self.input_meter.levels

    @property
    def output_levels(self) -> Broadcast[Level]:
        return self.output_meter.levels

    def _set_state(
        self, state: ConnectionState, *, attempt: int = 0, reason: str | None = None, error: RtkitError | None = None
    ) -> None:
        previous, self._state = self._state, state
        change = StateChange(state, previous, attempt, reason, error, self.transport.name if self.transport else None)
        log.info("session %s → %s%s", previous, state, f" ({reason})" if reason else "")
        self.states.publish(change)

    # -- lifecycle ------------------------------------------------------------------------
    async def connect(self) -> None:
        """Connect (or raise a typed error, leaving the state ``failed``)."""
        if self._state == "connected":
            return
        self._closing = False
        await self._start_audio()
        try:
            await self._establish(attempt=0)
        except RtkitError as exc:
            self._set_state("failed", reason=str(exc), error=exc)
            raise

    async def close(self) -> None:
        """Hang up and stop reconnecting; the state becomes ``disconnected``."""
        self._closing = True
        task = self._reconnect_task
        if task and not task.done() and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.transport is not None:
            await self.transport.close()
        if self._state != "disconnected":
            self._set_state("disconnected", reason="closed")
        if self._audio_started:
            self._audio_started = False
            for part in (self.source, self.sink):
                if part is not None:
                    await part.close()

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
            on_event=self._on_event, on_audio=self._on_audio, on_closed=self._on_closed, on_input=self._on_input
        )
        if kind == "webrtc":
            return WebRTCTransport(
                self.base_url,
                callbacks,
                model=self.model,
                connect_timeout=self.connect_timeout,
                ice_servers=self.ice_servers,
                jitter_packets=self.jitter_packets,
                output_rate=self.sink.sample_rate if self.sink else 24_000,
            )
        return WebSocketTransport(self.base_url, callbacks, model=self.model, connect_timeout=self.connect_timeout)

    async def _mint(self, record: ConnectRecord) -> EphemeralKey | str:
        started = time.perf_counter()
        key = await self._keys()
        record.mint_ms = round((time.perf_counter() - started) * 1000, 2)
        self.key = key if isinstance(key, EphemeralKey) else None
        return key

    async def _establish(self, attempt: int) -> None:
        self._set_state("connecting", attempt=attempt)
        record = ConnectRecord(attempt=attempt + 1)
        started = time.perf_counter()
        try:
            key = await self._mint(record)
            created = self._expect("session.created")
            await self._open_transport(key, record)
            assert self.transport is not None
            await asyncio.wait_for(created, self.connect_timeout)
            record.session_created_ms = round((time.perf_counter() - started) * 1000, 2)
            if self.config:
                await self._apply_config()
        except TimeoutError:
            error = NetworkLostError("The Realtime API did not start the session in time.")
            self._record_failure(record, started, error)
            raise error from None
        except RtkitError as exc:
            self._record_failure(record, started, exc)
            raise
        record.total_ms = round((time.perf_counter() - started) * 1000, 2)
        record.ok = True
        self.metrics.connected(record)
        self._set_state("connected", attempt=attempt)

    def _record_failure(self, record: ConnectRecord, started: float, exc: RtkitError) -> None:
        self._cancel_waiters()
        record.total_ms = round((time.perf_counter() - started) * 1000, 2)
        record.error = exc.code
        self.metrics.connected(record)

    async def _open_transport(self, key: EphemeralKey | str, record: ConnectRecord) -> None:
        order = self._order()
        refreshed = False
        value = key.value if isinstance(key, EphemeralKey) else key
        index = 0
        while index < len(order):
            kind = order[index]
            try:
                transport = self._make(kind)
                self.transport = transport
                await transport.connect(value, self.source)
            except TokenExpiredError:
                # One fresh mint, not a loop: a provider that hands back the same dead key is a real failure.
                fresh = await self._mint(record)
                fresh_value = fresh.value if isinstance(fresh, EphemeralKey) else fresh
                if refreshed or fresh_value == value:
                    raise TokenExpiredError(
                        "The key provider returned an expired key.",
                        hint="a fixed key cannot reconnect after it expires; use a broker or an issuer",
                    ) from None
                refreshed, value = True, fresh_value
                continue
            except WebRTCUnavailableError as exc:
                if index + 1 < len(order):
                    self._notice(
                        "rtkit.transport_fallback", from_transport=kind, to_transport=order[index + 1], reason=str(exc)
                    )
                    index += 1
                    continue
                raise
            timings = transport.timings
            record.transport = kind
            record.offer_ms, record.answer_ms = timings.offer_ms, timings.answer_ms
            record.connected_ms, record.channel_open_ms = timings.connected_ms, timings.channel_open_ms
            return

    async def _apply_config(self) -> None:
        assert self.config is not None
        updated = self._expect("session.updated")
        failed = self._expect("error")
        self.send(
            {
                "type": "session.update",
                "event_id": "rtkit_session_config",
                "session": {"type": "realtime", **self.config},
            }
        )
        done, _ = await asyncio.wait(
            {updated, failed}, timeout=self.connect_timeout, return_when=asyncio.FIRST_COMPLETED
        )
        for future in (updated, failed):
            if future not in done:
                future.cancel()
        if failed in done:
            err = failed.result()["error"]
            raise InvalidRequestError(
                f"The session config was refused: {err.get('message')}",
                hint=f"check {err.get('param')}" if err.get("param") else None,
            )
        if not done:
            raise NetworkLostError("The Realtime API did not confirm the session config in time.")

    # -- transport callbacks ----------------------------------------------------------------
    def _on_event(self, event: dict[str, Any]) -> None:
        now = time.perf_counter()
        self.metrics.server_event(event, now)
        kind = event.get("type", "")
        self._waiters.resolve(event)
        if kind == "error":
            err = event.get("error") or {}
            self.errors.publish(
                RealtimeAPIError(
                    err.get("message", "error"),
                    api_code=err.get("code"),
                    api_type=err.get("type"),
                    param=err.get("param"),
                    event_id=err.get("event_id"),
                )
            )
        elif kind == "response.done" and event.get("response", {}).get("status") == "failed":
            err = (event["response"].get("status_details") or {}).get("error") or {}
            self.errors.publish(
                RealtimeAPIError(
                    err.get("message", "The response failed."), api_code=err.get("code"), api_type=err.get("type")
                )
            )
        self.events.publish(event)

    def _on_audio(self, pcm: PCM, rate: int) -> None:
        level = self.output_meter.measure(pcm)
        self.metrics.output_audio(level.rms_dbfs, pcm.size, rate)
        if self.sink is not None:
            if self._out_resampler is None or self._out_resampler.from_rate != rate:
                self._out_resampler = _Resampler(rate, self.sink.sample_rate)
            self.sink.write(self._out_resampler.push(pcm))

    def _on_input(self, pcm: PCM, rate: int) -> None:
        level = self.input_meter.measure(pcm)
        self.metrics.input_level(level.rms_dbfs)

    def _on_closed(self, error: RtkitError | None) -> None:
        if self._closing:
            return
        self._cancel_waiters()
        reason = str(error) if error else "the server closed the connection"
        self._set_state("disconnected", reason=reason, error=error)
        if self.reconnect_policy.max_attempts > 0:
            self._reconnect_task = asyncio.ensure_future(self._reconnect(error))
        else:
            self._set_state("failed", reason=reason, error=error)

    async def _reconnect(self, cause: RtkitError | None) -> None:
        last: RtkitError | None = cause
        policy = self.reconnect_policy
        for attempt in range(1, policy.max_attempts + 1):
            await asyncio.sleep(policy.delay(attempt))
            if self._closing:
                return
            if self.transport is not None:
                await self.transport.close()
            try:
                await self._establish(attempt)
                return
            except AuthenticationError as exc:  # a refused key will not get better by retrying
                last = exc
                break
            except RtkitError as exc:
                last = exc
                self._set_state("disconnected", attempt=attempt, reason=str(exc), error=exc)
        error = NetworkLostError(
            f"Unable to reconnect after {policy.max_attempts} attempts: {last}",
            hint="check the network and the Realtime API status, then connect again",
        )
        self._set_state("failed", attempt=policy.max_attempts, reason=str(error), error=error)

    # -- waiting --------------------------------------------------------------------------
    def _expect(self, kind: str) -> asyncio.Future[dict[str, Any]]:
        return self._waiters.expect(kind)

    def _cancel_waiters(self) -> None:
        self._waiters.cancel_all()

    async def wait_for(self, event_type: str, timeout: float = 30.0) -> dict[str, Any]:
        """The next server event of this type."""
        return await asyncio.wait_for(self._expect(event_type), timeout)

    async def wait_for_state(self, *states: ConnectionState, timeout: float = 30.0) -> StateChange:
        """The next transition into one of ``states``."""
        return await next_value(self.states, lambda change: change.state in states, timeout)

    async def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        async for event in self.events:
            yield event

    # -- client events --------------------------------------------------------------------
    def send(self, event: dict[str, Any]) -> None:
        """Send one client event as is."""
        if self.transport is None or self._state not in ("connected", "connecting"):
            raise NetworkLostError("The session is not connected.", hint="await session.connect() first")
        self.transport.send(event)

    def _notice(self, kind: str, **fields: Any) -> None:
        """An event of rtkit's own (``rtkit.*``) on the same stream as the server's."""
        self.events.publish({"type": kind, **fields})

    def update_session(self, **fields: Any) -> None:
        """Change the session config now, and on every reconnection after."""
        self.config = {**copy.deepcopy(self.config or {}), **fields}
        self.send({"type": "session.update", "session": {"type": "realtime", **fields}})

    def send_text(self, text: str, *, respond: bool = True) -> None:
        """Add a user message; ``respond`` asks for an answer right away."""
        self.send(
            {
                "type": "conversation.item.create",
                "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]},
            }
        )
        if respond:
            self.create_response()

    def create_response(self, **params: Any) -> None:
        self.send({"type": "response.create", **({"response": params} if params else {})})

    def cancel_response(self) -> None:
        self.send({"type": "response.cancel"})

    def clear_output_audio(self) -> None:
        """Barge-in by hand: stop the model's voice now (WebRTC) and cancel what is still being generated."""
        if self.transport is not None and self.transport.name == "webrtc":
            self.send({"type": "output_audio_buffer.clear"})
