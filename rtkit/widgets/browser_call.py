"""``BrowserCall``: talk from the notebook's browser tab, with the kernel as the backend.

In a workshop the kernel often runs where there is no microphone or speaker (a server, a container), while
the participant's browser has both. This widget splits the guide's roles along that line:

* the **kernel** is the backend: it asks a key provider for an ephemeral ``ek_`` key (the main key never
  leaves it) and hands *only that key* to the browser, in a custom widget message;
* the **browser tab** is the frontend: it opens the microphone and the WebRTC call straight to the Realtime
  API (or the emulator) with that key, and plays the reply.

Everything the browser sees comes back to the kernel over widget messages and feeds the same shapes as
``RealtimeSession`` (``states``, ``events``, ``errors``, ``levels``/``output_levels``, ``metrics``,
``wait_for``...), so ``LevelPlot``, ``LatencyPlot`` and code written for a session work with either.

Keys travel in messages, never in synced traits: widget state is saved into the notebook file, messages
are not. See ``static/browser_call.js`` for the browser half and the message protocol.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anywidget
import traitlets
from pydantic import BaseModel

from rtkit.audio.meter import Direction, Level
from rtkit.call import CallCore, LiveCall, ReconnectPolicy, StateChange, TransportChoice
from rtkit.errors import (
    AuthenticationError,
    ConfigurationError,
    MicrophoneUnavailableError,
    NetworkLostError,
    RtkitError,
    error_for_code,
)
from rtkit.events import Broadcast
from rtkit.keys import KeyProvider, as_provider
from rtkit.metrics import VOICED_DBFS, BargeIn, ConnectRecord
from rtkit.resume import ResumePolicy
from rtkit.tokens import OPENAI_BASE_URL
from rtkit.transports.base import refusal
from rtkit.widgets._ui import spawn

__all__ = ["BrowserCall", "CallStats"]

log = logging.getLogger("rtkit.widgets.browser_call")

STATIC = Path(__file__).parent / "static"
#: The browser client both rtkit pages share (microphone, transports, PCM audio); see ``_esm`` below.
SHARED_JS = Path(__file__).parents[1] / "static" / "realtime.js"


def _module() -> str:
    """The widget's ES module: the shared client, then the widget. anywidget loads one module from a string
    (a relative ``import`` has nothing to resolve against), so the two files are joined here."""
    return SHARED_JS.read_text() + "\n" + (STATIC / "browser_call.js").read_text()


@dataclass(frozen=True)
class CallStats:
    """One ``RTCPeerConnection.getStats()`` reading from the browser (WebRTC only), about once a second.

    Times are in ms; ``None`` where the browser did not report the number (yet). ``t`` is the kernel's
    ``time.monotonic()`` when the reading arrived.
    """

    rtt_ms: float | None = None
    jitter_ms: float | None = None
    packets_received: int | None = None
    packets_lost: int | None = None
    packets_sent: int | None = None
    #: Mean time each played sample waited in the jitter buffer over the last interval.
    jitter_buffer_ms: float | None = None
    #: The browser's own 0..1 loudness of the model's voice, and of the microphone.
    audio_level: float | None = None
    input_audio_level: float | None = None
    t: float = field(default_factory=time.monotonic)

    @classmethod
    def from_browser(cls, raw: dict[str, Any]) -> CallStats:
        known = cls.__dataclass_fields__.keys() - {"t"}
        return cls(**{name: value for name, value in raw.items() if name in known})


#: The browser measures levels over 2048-sample windows at 48 kHz; the metrics count reply length in samples.
_BROWSER_RATE = 48_000
#: Events after which the server sends no more of a reply; the browser may still be playing it.
_REPLY_ENDS = ("response.done", "output_audio_buffer.stopped", "output_audio_buffer.cleared")
#: The reply has been heard once the browser's output stays below speech level this long after the server's
#: word (a few level readings; the jitter buffer holds 40..150 ms); never wait longer than the maximum.
_PLAYOUT_QUIET_S = 0.25
_PLAYOUT_MAX_S = 30.0


class BrowserCall(CallCore, anywidget.AnyWidget):
    """A Realtime call made by the notebook's browser tab, driven and observed from the kernel.

    ``await call.connect()`` mints a key with ``key_provider`` (any ``async () -> EphemeralKey | str``),
    hands it to the browser, and returns once the browser's call has started (or raises the matching
    ``RtkitError``: ``MicrophoneDeniedError``, ``TokenExpiredError``, ``RateLimitedError``...). The widget
    must be shown in a live JupyterLab or Notebook 7 page; it works on any kernel, with or without audio.

    ``base_url`` is the API's address as the *page* sees it: ``https://api.openai.com/v1``, an emulator's
    ``http://127.0.0.1:8765/v1``, or a path on the Jupyter server such as ``proxy/8765/v1`` (the kernel's
    emulator through jupyter-server-proxy, same origin as the page).
    """

    _esm = _module()
    _css = STATIC / "browser_call.css"

    # Synced state: what the browser needs to draw the widget and open calls. None of it is secret: it is
    # saved into the notebook with the widget state. The key travels in a message instead.
    _call_id = traitlets.Unicode("").tag(sync=True)
    base_url = traitlets.Unicode(OPENAI_BASE_URL).tag(sync=True)
    model = traitlets.Unicode("gpt-realtime").tag(sync=True)
    #: The connection state as the widget shows it (``state`` is the same, typed).
    status = traitlets.Unicode("disconnected").tag(sync=True)
    #: What the widget tells the participant, in plain words ("" for nothing), and how ("error" or "info").
    message = traitlets.Unicode("").tag(sync=True)
    message_kind = traitlets.Unicode("").tag(sync=True)
    #: The transport the browser really uses ("webrtc" or "websocket"; "" before the first call).
    transport = traitlets.Unicode("").tag(sync=True)
    #: Mute the microphone in the browser (its track sends silence; the call stays up). Also a button.
    muted = traitlets.Bool(False).tag(sync=True)

    def __init__(
        self,
        key_provider: KeyProvider | str,
        config: BaseModel | dict[str, Any] | None = None,
        *,
        base_url: str = OPENAI_BASE_URL,
        model: str = "gpt-realtime",
        transport: TransportChoice = "auto",
        reconnect: ReconnectPolicy | None = None,
        connect_timeout: float = 30.0,
        frontend_timeout: float = 10.0,
        on_frontend: Callable[[str], None] | None = None,
        resume: ResumePolicy | None = None,
    ) -> None:
        self._init_core(
            as_provider(key_provider),
            config.model_dump(exclude_none=True, mode="json") if isinstance(config, BaseModel) else config,
            transport,
            reconnect,
            connect_timeout,
            resume,
        )
        if "://" in base_url and not base_url.startswith(("http://", "https://")):
            raise ConfigurationError(f"Not a Realtime API address: {base_url!r}.", hint="use http(s)://…/v1")
        super().__init__(
            _call_id=secrets.token_hex(8),
            base_url=base_url.rstrip("/"),
            model=(self.config or {}).get("model", model),
        )
        self.frontend_timeout = frontend_timeout
        #: Told the origin of each page that shows the widget (``https://hub.example.org``) before it makes
        #: calls: ``rtkit.lab`` uses it to open the emulator's CORS to that page, and to nothing else.
        self.on_frontend = on_frontend
        self.stats: Broadcast[CallStats] = Broadcast()
        self.last_stats: CallStats | None = None

        self._note = ""
        #: The browser page (one model instance in one tab) that makes the calls; the latest to say hello.
        self._frontend: str | None = None
        self._frontend_ready: asyncio.Event | None = None
        self._attempt_id = 0
        self._live_attempt = 0
        self._pending: asyncio.Future[dict[str, Any]] | None = None
        self._probes: dict[int, asyncio.Future[dict[str, Any]]] = {}
        #: Turn-ending events held back from the metrics until the browser has played the reply out.
        self._playout: list[tuple[dict[str, Any], float]] = []
        self._playout_timer: asyncio.TimerHandle | None = None
        self._last_voiced_output = 0.0
        self._tasks: set[asyncio.Task[Any]] = set()
        #: The loop the notebook's cells run on (known once a cell constructs or connects the call).
        self._loop = _running_loop()
        self.on_msg(self._on_browser_message)

    _log_name = "browser call"
    _logger = log

    # -- observable state (the same shapes as RealtimeSession) ------------------------------
    @property
    def transport_name(self) -> str | None:
        return self.transport or None

    @property
    def frontend_connected(self) -> bool:
        """Whether a browser page showing this widget has said hello."""
        return self._frontend is not None

    def _state_changed(self, change: StateChange) -> None:
        state, error, reason = change.state, change.error, change.reason
        self.status = state
        if state == "failed":
            self._post({"kind": "hangup"})  # releases the microphone: its light should not stay on
            self._show(str(error) if error else reason or "The call failed.", "error")
        elif state == "disconnected" and reason and not self._closing:
            self._show(f"Connection lost: {reason} Reconnecting with a fresh key…", "info")
        elif state == "connecting" and change.attempt:
            self._show(f"Reconnecting (attempt {change.attempt} of {self.reconnect_policy.max_attempts})…", "info")
        elif state == "connected":
            # What stays on show once connected: a note from the browser (such as a transport fallback).
            self._show(self._note, "info")
        else:
            self._show("")

    def _show(self, text: str, kind: str = "") -> None:
        self.message, self.message_kind = text, kind if text else ""

    # -- lifecycle ------------------------------------------------------------------------
    async def connect(self) -> None:
        """Mint a key, hand it to the browser and wait until its call has started (or raise, leaving the
        state ``failed``)."""
        await super().connect()

    async def _prepare(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._note = ""

    async def disconnect(self) -> None:
        """Hang up in the browser (the microphone is released too) and stop reconnecting."""
        self._closing = True
        await self._stop_reconnecting()
        if self._pending is not None and not self._pending.done():
            self._pending.cancel()
        self._cancel_waiters()
        self._post({"kind": "hangup"})
        if self._state != "disconnected":
            self._set_state("disconnected", reason="closed")

    def close(self) -> None:
        """Close the widget; a live call in the browser is hung up first, and reconnecting stops."""
        if self.comm is not None:
            self._closing = True
            if self._reconnect_task is not None:
                self._reconnect_task.cancel()
            self._post({"kind": "hangup"})
        super().close()

    async def check_microphone(self) -> None:
        """Ask the browser page for its microphone, as a call would: raises ``MicrophoneDeniedError`` (the
        participant or a policy blocked it) or ``MicrophoneUnavailableError`` (none, or not a secure page)
        with a hint, and leaves a microphone that was not in use closed again."""
        self._loop = asyncio.get_running_loop()
        await self._wait_for_frontend()
        probe = len(self._probes) + self._attempt_id + 1
        while probe in self._probes:
            probe += 1
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._probes[probe] = future
        self._post({"kind": "probe_microphone", "probe": probe, "frontend": self._frontend})
        try:
            report = await asyncio.wait_for(future, self.connect_timeout)
        except TimeoutError:
            raise MicrophoneUnavailableError(
                f"The browser did not answer about its microphone within {self.connect_timeout:g} s.",
                hint="a permission prompt may be waiting in the browser: allow or block the microphone there",
            ) from None
        finally:
            self._probes.pop(probe, None)
        if not report.get("ok"):
            raise self._error_from_browser(report)

    async def _wait_for_frontend(self) -> None:
        if self._frontend is not None:
            return
        self._frontend_ready = self._frontend_ready or asyncio.Event()
        self._frontend_ready.clear()
        try:
            await asyncio.wait_for(self._frontend_ready.wait(), self.frontend_timeout)
        except TimeoutError:
            raise ConfigurationError(
                f"No browser page is showing this widget (waited {self.frontend_timeout:g} s).",
                hint="display it (end a cell with `call`) in JupyterLab or Notebook 7, then connect again",
            ) from None

    async def _establish(self, attempt: int) -> None:
        self._set_state("connecting", attempt=attempt)
        record = ConnectRecord(attempt=attempt + 1)
        started = time.perf_counter()
        try:
            await self._wait_for_frontend()  # after a reload, the new page says hello within seconds
            opened = await self._open_with_one_fresh_key(record)
            record.session_created_ms = round((time.perf_counter() - started) * 1000, 2)
            self.transport = str(opened.get("transport") or "")
            record.transport = self.transport
            timings = opened.get("timings") or {}
            record.offer_ms, record.answer_ms = timings.get("offer_ms"), timings.get("answer_ms")
            record.connected_ms, record.channel_open_ms = timings.get("connected_ms"), timings.get("channel_open_ms")
            if self.config:
                await self._apply_config()
            await self._restore_conversation(attempt)
        except TimeoutError:
            self._abandon_attempt()
            error = NetworkLostError(
                f"The browser did not start the call within {self.connect_timeout:g} s.",
                hint="is the notebook tab still open, and can it reach the Realtime API?",
            )
            self._record_failure(record, started, error)
            raise error from None
        except RtkitError as exc:
            self._record_failure(record, started, exc)
            raise
        self._record_success(record, started, attempt)

    async def _open_with_one_fresh_key(self, record: ConnectRecord) -> dict[str, Any]:
        """Open the browser's call; a key the API refuses (expired on the way) earns one fresh key, not a loop:
        a provider that hands back the same dead key is a real failure."""
        value = await self._mint(record)
        try:
            return await self._open(value)
        except AuthenticationError as first:
            fresh = await self._mint_after_refusal(record, value, first)
        try:
            return await self._open(fresh)
        except AuthenticationError as second:
            raise self._refused_again(second) from second

    async def _open(self, key: str) -> dict[str, Any]:
        """One attempt in the browser with ``key``: the reply is its ``opened`` message, or the mapped error."""
        self._attempt_id += 1
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending = future
        # The only place a key leaves the kernel: a custom message to the one page that makes the calls.
        self._post(
            {
                "kind": "open",
                "attempt": self._attempt_id,
                "frontend": self._frontend,
                "key": key,
                "transport": self.transport_choice,
            }
        )
        try:
            opened = await asyncio.wait_for(future, self.connect_timeout)
        finally:
            if self._pending is future:
                self._pending = None
        self._live_attempt = self._attempt_id
        return opened

    def _abandon_attempt(self) -> None:
        self._post({"kind": "hangup", "attempt": self._attempt_id})

    def _on_lost(self, error: RtkitError) -> None:
        if self._closing or self._state != "connected":
            return
        self._flush_playout()
        self._lost(error, error.message)

    # -- messages from the browser --------------------------------------------------------
    def _on_browser_message(self, _widget: Any, content: Any, _buffers: Any) -> None:
        # JupyterLab 4.4+ may deliver widget messages on a kernel *subshell*: another thread, with its own event
        # loop. The futures, the key provider's HTTP client and the plots' timers all belong to the loop the
        # notebook's cells run on, so the message is handled there.
        loop = self._loop
        if loop is not None and not loop.is_closed() and _running_loop() is not loop:
            loop.call_soon_threadsafe(self._on_browser_content, content)
        else:
            self._on_browser_content(content)

    def _on_browser_content(self, content: Any) -> None:
        if not isinstance(content, dict):
            return
        kind = content.get("kind")
        if kind == "hello":
            self._on_hello(str(content.get("frontend")), content.get("origin"))
            return
        if content.get("frontend") != self._frontend:
            return  # from a page that no longer makes the calls (an older tab)
        if kind == "event":
            self._on_event(content["event"])
        elif kind == "levels":
            self._on_levels(content.get("levels") or [])
        elif kind == "stats":
            self.last_stats = CallStats.from_browser(content.get("stats") or {})
            self.stats.publish(self.last_stats)
        elif kind in ("opened", "failed", "lost"):
            self._on_attempt_report(kind, content)
        elif kind == "microphone":
            future = self._probes.get(content.get("probe", -1))
            if future is not None and not future.done():
                future.set_result(content)
        elif kind == "notice" and content.get("type") == "rtkit.barge_in":
            self._barged_in(_barge_in_record(content))
        elif kind == "notice":
            self.events.publish({key: value for key, value in content.items() if key not in ("kind", "message")})
            if content.get("message"):
                self._note = str(content["message"])
                self._show(self._note, "info")
        elif kind == "bye":
            self._frontend = None
            self._on_lost(NetworkLostError("The notebook tab making the call was closed or reloaded."))
        elif kind == "action":
            self._on_button(str(content.get("action")))

    def _on_hello(self, frontend: str, origin: Any) -> None:
        if self.on_frontend is not None and isinstance(origin, str) and origin:
            try:
                self.on_frontend(origin)
            except Exception:  # a page this kernel does not want to serve still gets the API's own answer
                log.exception("on_frontend refused the page origin %r", origin)
        previous, self._frontend = self._frontend, frontend
        if self._frontend_ready is not None:
            self._frontend_ready.set()
        if previous and previous != frontend:
            # A reload, or a second tab showing the notebook: one page makes the calls, the latest to open.
            self._post({"kind": "hangup", "frontend": previous})
            self._on_lost(NetworkLostError("Another notebook tab (or a reload of this one) took over the call."))

    def _on_attempt_report(self, kind: str, content: dict[str, Any]) -> None:
        attempt = content.get("attempt")
        future = self._pending
        if kind == "lost":
            if attempt == self._live_attempt:
                self._on_lost(NetworkLostError(f"The browser lost the call: {content.get('reason', 'no reason')}."))
            return
        if future is None or future.done() or attempt != self._attempt_id:
            return  # a late answer to an attempt that already timed out
        if kind == "opened":
            future.set_result(content)
        else:
            future.set_exception(self._error_from_browser(content))

    def _error_from_browser(self, report: dict[str, Any]) -> RtkitError:
        message = str(report.get("message") or "The browser could not open the call.")
        hint = report.get("hint")
        if report.get("status"):
            # The API refused POST /calls: map its status and JSON body exactly as the kernel's transports do.
            retry_after = None if report.get("retryAfter") is None else str(report["retryAfter"])
            return refusal(int(report["status"]), str(report.get("body") or ""), retry_after, "call from the browser")
        # The page names its failures with rtkit's own codes (microphone_denied, webrtc_unavailable, …).
        return error_for_code(str(report.get("code") or ""), message, hint=None if hint is None else str(hint))

    def _on_button(self, action: str) -> None:
        if action == "connect":
            self._background(self.connect())
        elif action == "disconnect":
            self._background(self.disconnect())

    def _background(self, coro: Any) -> None:
        # A failure is already on show in the widget (the state becomes ``failed``); spawn logs it too.
        task = spawn(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "input_audio_buffer.speech_stopped":
            self._flush_playout()  # a new turn starts: the last one has been heard, whatever the browser plays
        if kind in _REPLY_ENDS:
            # The server is done sending, but the browser still plays what its jitter buffer (WebRTC) or its
            # queue (WebSocket) holds: for the metrics, the reply ends when the browser goes quiet.
            self._receive(event, measure=False)
            self._playout.append((event, time.perf_counter()))
            self._schedule_playout_check()
        else:
            self._receive(event)

    def _schedule_playout_check(self) -> None:
        if self._playout_timer is None and self._loop is not None:
            self._playout_timer = self._loop.call_later(_PLAYOUT_QUIET_S / 2, self._check_playout)

    def _check_playout(self) -> None:
        self._playout_timer = None
        if not self._playout:
            return
        now = time.perf_counter()
        arrived = self._playout[-1][1]
        quiet_since = max(arrived, self._last_voiced_output)
        if now - quiet_since >= _PLAYOUT_QUIET_S or now - arrived >= _PLAYOUT_MAX_S:
            self._flush_playout()
        else:
            self._schedule_playout_check()

    def _flush_playout(self) -> None:
        held, self._playout = self._playout, []
        for event, arrived in held:
            # The last voiced reading, if the browser was still playing after the server's word; else the word.
            self.metrics.server_event(event, max(arrived, self._last_voiced_output))

    def _on_levels(self, readings: list[dict[str, Any]]) -> None:
        """Readings the browser measured and sent at once, stamped on the kernel's clocks when they arrive (the
        browser's clock is another one; over loopback the message takes a millisecond or two)."""
        mono, perf = time.monotonic(), time.perf_counter()
        for reading in readings:
            direction: Direction = "output" if reading.get("direction") == "output" else "input"
            rms, peak = _dbfs(reading.get("rms")), _dbfs(reading.get("peak"))
            level = Level(t=mono, rms_dbfs=rms, peak_dbfs=peak, direction=direction)
            (self.input_meter if direction == "input" else self.output_meter).record(level)
            if direction == "input":
                self.metrics.input_level(rms, at=perf)
            else:
                if rms >= VOICED_DBFS:
                    self._last_voiced_output = perf
                # Each reading stands for one interval of the model's voice: that is how the reply's length adds up.
                samples = round(float(reading.get("ms") or 50) * _BROWSER_RATE / 1000)
                self.metrics.output_audio(rms, samples, _BROWSER_RATE, at=perf)

    # -- client events (the browser sends them on its data channel or WebSocket) -----------
    def send(self, event: dict[str, Any]) -> None:
        """Send one client event as is.

        (This replaces ipywidgets' ``Widget.send`` for custom messages, which the widget uses internally.)
        """
        if self._state not in ("connected", "connecting"):
            raise NetworkLostError("The call is not connected.", hint="await call.connect() first")
        self._post({"kind": "send", "event": event})

    def _post(self, message: dict[str, Any]) -> None:
        """A custom widget message to the browser (ipywidgets' ``send``, which ``send`` above hides)."""
        anywidget.AnyWidget.send(self, message)

    def __repr__(self) -> str:
        return f"BrowserCall({self.base_url!r}, state={self._state!r}, transport={self.transport or None!r})"


def _barge_in_record(content: dict[str, Any]) -> BargeIn:
    """The page's report of a barge-in, as the kernel's session records one."""

    def ms(value: Any) -> int | None:
        return int(value) if isinstance(value, int | float) and math.isfinite(value) else None

    return BargeIn(
        item_id=str(content.get("item_id", "")),
        response_id=content.get("response_id") if isinstance(content.get("response_id"), str) else None,
        content_index=ms(content.get("content_index")) or 0,
        played_ms=ms(content.get("played_ms")) or 0,
        produced_ms=ms(content.get("produced_ms")),
        truncated=content.get("truncated") is True,
        cancelled=content.get("cancelled") is True,
        transport=str(content.get("transport")) if content.get("transport") else None,
    )


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _dbfs(value: Any) -> float:
    """JSON has no -Infinity: the browser sends ``null`` for digital silence."""
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else float("-inf")


if TYPE_CHECKING:  # mypy checks the widget against the protocol that plots and panels are written for
    _browser_shape: type[LiveCall] = BrowserCall
