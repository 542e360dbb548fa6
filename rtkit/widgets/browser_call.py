"""``BrowserCall``: talk from the notebook's browser tab, with the kernel as the backend.

In a workshop the kernel often runs where there is no microphone or speaker (a server, a container), while
the participant's browser has both. This call splits the guide's roles along that line:

* the **kernel** is the backend: it asks a key provider for an ephemeral ``ek_`` key (the main key never
  leaves it) and hands *only that key* to the browser, in a custom widget message;
* the **browser tab** is the frontend: it opens the microphone and the WebRTC call straight to the Realtime
  API (or the emulator) with that key, and plays the reply.

Everything the browser sees comes back to the kernel and feeds the same shapes as ``RealtimeSession``
(``states``, ``events``, ``errors``, ``levels``/``output_levels``, ``metrics``, ``wait_for``...), so
``LevelPlot``, ``LatencyPlot`` and code written for a session work with either.

The call is a ``CallCore`` like the session: it owns a widget (``BrowserCallWidget``, the card the page draws)
and a bridge to the page (``PageBridge``, the message protocol); each call the page makes is its transport
(``PageTransport``). See ``rtkit.widgets.page`` and ``static/browser_call.js`` for the page's half.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from rtkit.audio.meter import Direction, Level
from rtkit.call import CallCore, LiveCall, ReconnectPolicy, StateChange, TransportChoice
from rtkit.errors import ConfigurationError, RtkitError
from rtkit.events import Broadcast
from rtkit.keys import KeyProvider
from rtkit.metrics import VOICED_DBFS, BargeIn, ConnectRecord
from rtkit.resume import ResumePolicy
from rtkit.tokens import OPENAI_BASE_URL
from rtkit.widgets._ui import spawn
from rtkit.widgets.page import BrowserCallWidget, PageBridge, PageCallbacks, PageTransport, WidgetBridge

__all__ = ["BrowserCall", "CallStats"]

log = logging.getLogger("rtkit.widgets.browser_call")


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
    #: Since the call began, in ms of the model's voice: what the jitter buffer inserted to wait for late packets
    #: (time-stretching), removed to catch up (acceleration), and made up for packets that never came in time.
    #: Under load a reply plays longer or shorter than it is by these amounts.
    inserted_ms: float | None = None
    removed_ms: float | None = None
    concealed_ms: float | None = None
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


class BrowserCall(CallCore):
    """A Realtime call made by the notebook's browser tab, driven and observed from the kernel.

    ``await call.connect()`` mints a key with ``key_provider`` (any ``async () -> EphemeralKey | str``),
    hands it to the browser, and returns once the browser's call has started (or raises the matching
    ``RtkitError``: ``MicrophoneDeniedError``, ``TokenExpiredError``, ``RateLimitedError``...). The call must
    be on show (end a cell with ``call``, or show a ``ConnectionPanel``) in a live JupyterLab or Notebook 7
    page; it works on any kernel, with or without audio.

    ``base_url`` is the API's address as the *page* sees it: ``https://api.openai.com/v1``, an emulator's
    ``http://127.0.0.1:8765/v1``, or a path on the Jupyter server such as ``proxy/8765/v1`` (the kernel's
    emulator through jupyter-server-proxy, same origin as the page). ``bridge`` carries the messages to and
    from the page (by default over ``widget``'s own; a test passes a scripted page).
    """

    _log_name = "browser call"
    _logger = log

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
        bridge: PageBridge | None = None,
    ) -> None:
        super().__init__(
            key_provider,
            config,
            transport=transport,
            reconnect=reconnect,
            connect_timeout=connect_timeout,
            resume=resume,
        )
        if "://" in base_url and not base_url.startswith(("http://", "https://")):
            raise ConfigurationError(f"Not a Realtime API address: {base_url!r}.", hint="use http(s)://…/v1")
        self.base_url = base_url.rstrip("/")
        self.model = (self.config or {}).get("model", model)
        #: The card the page draws (state, buttons, meters) and the state it shares with the kernel.
        self.widget = BrowserCallWidget(_call_id=secrets.token_hex(8), base_url=self.base_url, model=self.model)
        #: The message protocol with the page that makes the calls.
        self.bridge = bridge if bridge is not None else WidgetBridge(self.widget)
        self.bridge.attach(
            PageCallbacks(
                on_hello=self._on_hello,
                on_levels=self._on_levels,
                on_stats=self._on_stats,
                on_notice=self._on_notice,
                on_action=self._on_button,
            )
        )
        self.frontend_timeout = frontend_timeout
        #: Told the origin of each page that shows the widget (``https://hub.example.org``) before it makes
        #: calls: ``rtkit.lab`` uses it to open the emulator's CORS to that page, and to nothing else.
        self.on_frontend = on_frontend
        self.stats: Broadcast[CallStats] = Broadcast()
        self.last_stats: CallStats | None = None

        self._note = ""
        #: Turn-ending events held back from the metrics until the browser has played the reply out.
        self._playout: list[tuple[dict[str, Any], float]] = []
        self._playout_timer: asyncio.TimerHandle | None = None
        self._last_voiced_output = 0.0
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- what the page shows and shares ----------------------------------------------------
    @property
    def muted(self) -> bool:
        """The page's microphone is muted (its track sends silence; the call stays up): the card's Mute button."""
        return bool(self.widget.muted)

    @muted.setter
    def muted(self, value: bool) -> None:
        self.widget.muted = value

    @property
    def message(self) -> str:
        """What the card tells the participant ("" for nothing): what went wrong, or a note from the page."""
        return str(self.widget.message)

    @property
    def message_kind(self) -> str:
        """``"error"``, ``"info"`` or ``""``."""
        return str(self.widget.message_kind)

    @property
    def frontend_connected(self) -> bool:
        """Whether a browser page showing this call has said hello."""
        return self.bridge.frontend is not None

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        """A cell that ends with the call shows its card (the page needs it on show to make calls)."""
        bundle = self.widget._repr_mimebundle_(**kwargs)
        if isinstance(bundle, tuple):  # anywidget's: (data, metadata)
            return {**bundle[0], "text/plain": repr(self)}, bundle[1]
        return bundle

    def _state_changed(self, change: StateChange) -> None:
        state, error, reason = change.state, change.error, change.reason
        self.widget.status = state
        if state == "failed":
            self.bridge.hangup()  # releases the microphone: its light should not stay on
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
        self.widget.message, self.widget.message_kind = text, kind if text else ""

    # -- lifecycle ------------------------------------------------------------------------
    async def _prepare(self) -> None:
        self.bridge.loop = asyncio.get_running_loop()
        self._note = ""

    async def _before_open(self) -> None:
        await self.bridge.wait_for_page(self.frontend_timeout)  # after a reload, the new page says hello in seconds

    async def _open_transport(self, key: str, record: ConnectRecord) -> None:
        call = PageTransport(
            self.bridge,
            on_event=self._on_event,
            on_closed=self._on_closed,
            choice=self.transport_choice,
            base_url=self.base_url,
            model=self.model,
            connect_timeout=self.connect_timeout,
        )
        await call.connect(key, None)
        self.transport = call
        self.widget.transport = call.name

    async def _hung_up(self) -> None:
        self._cancel_waiters()
        self.bridge.hangup()  # the microphone is released too

    async def close(self) -> None:
        """Hang up (the microphone is released too), stop reconnecting, and close the widget."""
        await super().close()
        self.widget.close()

    async def check_microphone(self) -> None:
        """Ask the browser page for its microphone, as a call would: raises ``MicrophoneDeniedError`` (the
        participant or a policy blocked it) or ``MicrophoneUnavailableError`` (none, or not a secure page)
        with a hint, and leaves a microphone that was not in use closed again."""
        self.bridge.loop = asyncio.get_running_loop()
        await self.bridge.wait_for_page(self.frontend_timeout)
        await self.bridge.probe_microphone(self.connect_timeout)

    def _on_closed(self, error: RtkitError | None) -> None:
        if error is None or self._closing or self._state != "connected":
            return
        self._flush_playout()
        self._lost(error, error.message)

    # -- what the page reports ------------------------------------------------------------
    def _on_hello(self, origin: str | None) -> None:
        if self.on_frontend is not None and origin:
            try:
                self.on_frontend(origin)
            except Exception:  # a page this kernel does not want to serve still gets the API's own answer
                log.exception("on_frontend refused the page origin %r", origin)

    def _on_stats(self, raw: dict[str, Any]) -> None:
        self.last_stats = CallStats.from_browser(raw)
        self.stats.publish(self.last_stats)

    def _on_notice(self, notice: dict[str, Any]) -> None:
        if notice.get("type") == "rtkit.barge_in":
            self._barged_in(_barge_in_record(notice))
            return
        self.events.publish({key: value for key, value in notice.items() if key != "message"})
        if notice.get("message"):
            self._note = str(notice["message"])
            self._show(self._note, "info")

    def _on_button(self, action: str) -> None:
        if action == "connect":
            self._background(self.connect())
        elif action == "disconnect":
            self._background(self.disconnect())

    def _background(self, coro: Coroutine[Any, Any, None]) -> None:
        # A failure is already on show in the card (the state becomes ``failed``); spawn logs it too.
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
        loop = self.bridge.loop
        if self._playout_timer is None and loop is not None:
            self._playout_timer = loop.call_later(_PLAYOUT_QUIET_S / 2, self._check_playout)

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

    def __repr__(self) -> str:
        return f"BrowserCall({self.base_url!r}, state={self._state!r}, transport={self.transport_name!r})"


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


def _dbfs(value: Any) -> float:
    """JSON has no -Infinity: the browser sends ``null`` for digital silence."""
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else float("-inf")


if TYPE_CHECKING:  # mypy checks the widget against the protocol that plots and panels are written for
    _browser_shape: type[LiveCall] = BrowserCall
