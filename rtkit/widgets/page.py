"""The page's half of a ``BrowserCall``, as the kernel sees it.

* ``BrowserCallWidget``: what the page draws (``static/browser_call.js`` and ``.css``) and the state it shares
  with the kernel. Widget state is saved into the notebook, so none of it is secret.
* ``PageBridge``: the message protocol with the page that makes the calls: which page that is, an attempt and
  the page's answer, a microphone probe, and what the page reports. ``WidgetBridge`` carries it over the
  widget's custom messages; a test carries it over a list.
* ``PageRecording``: what the page recorded of its calls (both sides, on its own clock), handed over when asked.
* ``PageTransport``: one call the page made with one key, as a ``Transport``, so that the browser call opens,
  sends and hangs up as the kernel's session does.

Keys travel in messages, never in synced traits: messages are not saved. The message protocol itself is
described at the top of ``static/browser_call.js``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import anywidget
import numpy as np
import traitlets

from rtkit.audio.base import AudioSource
from rtkit.audio.pcm import PCM
from rtkit.call import TransportChoice
from rtkit.errors import ConfigurationError, MicrophoneUnavailableError, NetworkLostError, RtkitError, error_for_code
from rtkit.tokens import OPENAI_BASE_URL
from rtkit.transports.base import ClosedHandler, ConnectTimings, EventHandler, Transport, TransportCallbacks, refusal

__all__ = [
    "BrowserCallWidget",
    "PageBridge",
    "PageCallbacks",
    "PageRecording",
    "PageTransport",
    "WidgetBridge",
    "page_error",
]

_T = TypeVar("_T")
log = logging.getLogger("rtkit.widgets.page")

STATIC = Path(__file__).parent / "static"
#: The browser client both rtkit pages share (``PageCall``: microphone, session, meters, playback, barge-in).
SHARED_JS = Path(__file__).parents[1] / "static" / "realtime.js"


def _module() -> str:
    """The widget's ES module: the shared client, then the widget. anywidget loads one module from a string
    (a relative ``import`` has nothing to resolve against), so the two files are joined here."""
    return SHARED_JS.read_text() + "\n" + (STATIC / "browser_call.js").read_text()


class BrowserCallWidget(anywidget.AnyWidget):
    """The card a ``BrowserCall`` shows: state, Connect / Mute / Hang up, meters, stats, transcript. The call
    the page makes belongs to the widget's model in the page; the kernel's side is the ``BrowserCall``."""

    _esm = _module()
    _css = STATIC / "browser_call.css"

    # What the page needs to draw the card and open calls. None of it is secret: it is saved into the notebook
    # with the widget state. The key travels in a message instead.
    _call_id = traitlets.Unicode("").tag(sync=True)
    base_url = traitlets.Unicode(OPENAI_BASE_URL).tag(sync=True)
    model = traitlets.Unicode("gpt-realtime").tag(sync=True)
    #: The call's connection state, as the card shows it.
    status = traitlets.Unicode("disconnected").tag(sync=True)
    #: What the card tells the participant, in plain words ("" for nothing), and how ("error" or "info").
    message = traitlets.Unicode("").tag(sync=True)
    message_kind = traitlets.Unicode("").tag(sync=True)
    #: The transport the page really uses ("webrtc" or "websocket"; "" before the first call).
    transport = traitlets.Unicode("").tag(sync=True)
    #: Mute the microphone in the page (its track sends silence; the call stays up). Also a button.
    muted = traitlets.Bool(False).tag(sync=True)


@dataclass
class PageCallbacks:
    """What the page reports besides its calls' events, for the call that owns the bridge."""

    #: A page shows the widget, before it makes any call; with the page's origin when it said it.
    on_hello: Callable[[str | None], None]
    #: Level readings (``{direction, rms, peak, ms}``, dBFS; ``None`` for silence), measured in the page.
    on_levels: Callable[[list[dict[str, Any]]], None]
    #: One ``getStats()`` reading of the page's WebRTC connection.
    on_stats: Callable[[dict[str, Any]], None]
    #: An event of the page's own (``{type: "rtkit.…", message?, …}``).
    on_notice: Callable[[dict[str, Any]], None]
    #: A button of the card was pressed: ``"connect"`` or ``"disconnect"``.
    on_action: Callable[[str], None]


Span = tuple[float, float | None]


@dataclass(frozen=True)
class PageRecording:
    """The page's recording of its calls (realtime.js's ``Recorder``), all on its AudioContext's clock (seconds):
    the microphone as sent (``left``) and the reply as played (``right``), 24 kHz PCM16 from ``start``; where each
    connection's input began (``origins``), the user's speech where the server's VAD placed it (``users``) and
    each reply item's playback (``replies``; an end of ``None``: until its sound stops). ``page_now`` is the page's
    clock when it answered, between the kernel's ``time.monotonic()`` ``asked_at`` and ``received_at``."""

    start: float
    left: PCM
    right: PCM
    origins: list[float]
    users: dict[str, Span]
    replies: dict[str, Span]
    page_now: float
    asked_at: float
    received_at: float
    #: The page's ``AudioContext.outputLatency``: what was played reaches the ear this much later.
    output_latency: float = 0.0

    @property
    def kernel_offset(self) -> float:
        """Add it to a page time for the kernel's ``time.monotonic()``: the page answered mid round trip, within
        half of it (a few ms through the Jupyter server on one machine)."""
        return (self.asked_at + self.received_at) / 2 - self.page_now

    @classmethod
    def from_page(cls, content: dict[str, Any], buffers: list[Any], asked_at: float) -> PageRecording:
        pcm = [np.frombuffer(bytes(b), dtype="<i2").astype(np.int16) for b in buffers[:2]]
        while len(pcm) < 2:
            pcm.append(np.zeros(0, dtype=np.int16))

        def spans(raw: Any) -> dict[str, Span]:
            return {
                str(s["item_id"]): (float(s["start"]), None if s.get("end") is None else float(s["end"]))
                for s in raw or []
            }

        return cls(
            start=float(content.get("start") or 0.0),
            left=pcm[0],
            right=pcm[1],
            origins=[float(o["t"]) for o in content.get("origins") or []],
            users=spans(content.get("users")),
            replies=spans(content.get("replies")),
            page_now=float(content.get("now") or 0.0),
            asked_at=asked_at,
            received_at=time.monotonic(),
            output_latency=float(content.get("outputLatency") or 0.0),
        )


def page_error(report: dict[str, Any]) -> RtkitError:
    """The error for the page's ``failed`` (or microphone) report: an HTTP refusal of ``POST /calls`` is mapped
    exactly as the kernel's transports map theirs; the page names its other failures with rtkit's own codes
    (``microphone_denied``, ``webrtc_unavailable``, …)."""
    if report.get("status"):
        retry_after = None if report.get("retryAfter") is None else str(report["retryAfter"])
        return refusal(int(report["status"]), str(report.get("body") or ""), retry_after, "call from the browser")
    message = str(report.get("message") or "The browser could not open the call.")
    hint = report.get("hint")
    return error_for_code(str(report.get("code") or ""), message, hint=None if hint is None else str(hint))


class PageBridge(ABC):
    """The kernel's end of the message protocol with the page. A subclass carries the messages: ``post`` one
    to the page, and hand each one from the page to ``receive``.

    One page makes the calls: the latest to say hello (a reload, or another tab showing the notebook, takes
    over). Messages from any other page are ignored.
    """

    def __init__(self) -> None:
        #: The id of the page that makes the calls (``None`` until one says hello, and after it says bye).
        self.frontend: str | None = None
        #: The loop the notebook's cells run on: messages that arrive on another thread are handled there.
        self.loop = _running_loop()
        self._callbacks: PageCallbacks | None = None
        self._page_ready: asyncio.Event | None = None
        self._attempts = 0
        self._opening: asyncio.Future[dict[str, Any]] | None = None
        #: The page's latest call, opening or open: its events and its loss go there.
        self._call: PageTransport | None = None
        #: Questions to the page awaiting its answer (a microphone probe, a recording), by request number.
        self._asked: dict[int, asyncio.Future[tuple[dict[str, Any], list[Any]]]] = {}

    def attach(self, callbacks: PageCallbacks) -> None:
        self._callbacks = callbacks

    @abstractmethod
    def post(self, message: dict[str, Any]) -> None:
        """Carry one message to the page."""

    # -- to the page ------------------------------------------------------------------------
    async def wait_for_page(self, timeout: float) -> None:
        """Return once a page showing the widget has said hello (after a reload, the new one does within
        seconds); ``ConfigurationError`` if none does within ``timeout``."""
        if self.frontend is not None:
            return
        self._page_ready = self._page_ready or asyncio.Event()
        self._page_ready.clear()
        try:
            await asyncio.wait_for(self._page_ready.wait(), timeout)
        except TimeoutError:
            raise ConfigurationError(
                f"No browser page is showing this widget (waited {timeout:g} s).",
                hint="display it (end a cell with `call`) in JupyterLab or Notebook 7, then connect again",
            ) from None

    async def open(self, call: PageTransport, key: str, timeout: float) -> dict[str, Any]:
        """Ask the page for a call with ``key`` and return its ``opened`` report, or raise the error it failed
        with. This is the only place a key leaves the kernel: in a message to the one page that makes calls."""
        self._attempts += 1
        attempt = self._attempts
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._opening, self._call = future, call
        self.post({"kind": "open", "attempt": attempt, "frontend": self.frontend, "key": key, "transport": call.choice})
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            self.hangup(attempt=attempt)  # the page may still be trying: it stops, and closes what it opened
            raise NetworkLostError(
                f"The browser did not start the call within {timeout:g} s.",
                hint="is the notebook tab still open, and can it reach the Realtime API?",
            ) from None
        finally:
            if self._opening is future:
                self._opening = None

    def send(self, event: dict[str, Any]) -> None:
        """One client event, for the page to send on its data channel or WebSocket."""
        self.post({"kind": "send", "event": event})

    def hangup(self, *, attempt: int | None = None, frontend: str | None = None) -> None:
        """Hang up in the page: one attempt's call, or every call of one page, or (with neither) everything,
        the microphone included (the browser's recording light goes off), and any attempt under way."""
        message: dict[str, Any] = {"kind": "hangup"}
        if attempt is not None:
            message["attempt"] = attempt
        if frontend is not None:
            message["frontend"] = frontend
        if attempt is None and frontend is None and self._opening is not None and not self._opening.done():
            self._opening.cancel()
        self.post(message)

    async def _ask(
        self,
        message: dict[str, Any],
        number: str,
        timeout: float,
        silence: Callable[[], RtkitError],
        read: Callable[[dict[str, Any], list[Any]], _T],
    ) -> _T:
        """Post ``message`` numbered under ``number`` (the key the page answers with) and return what ``read``
        makes of the page's answer and its binary buffers, read as soon as they arrive (a recording's clock is
        the moment of arrival); ``silence()`` is raised if no answer comes within ``timeout`` s."""
        request = max(self._asked, default=0) + 1
        future: asyncio.Future[tuple[dict[str, Any], list[Any]]] = asyncio.get_running_loop().create_future()
        self._asked[request] = future
        self.post({**message, number: request, "frontend": self.frontend})
        try:
            answer = read(*await asyncio.wait_for(future, timeout))  # at once: a recording's clock is its arrival
        except TimeoutError:
            raise silence() from None
        finally:
            self._asked.pop(request, None)
        return answer

    async def probe_microphone(self, timeout: float) -> None:
        """Ask the page for its microphone, as a call would (one that was not in use is closed again): raises
        ``MicrophoneDeniedError`` or ``MicrophoneUnavailableError`` with the page's hint."""
        report = await self._ask(
            {"kind": "probe_microphone"},
            "probe",
            timeout,
            lambda: MicrophoneUnavailableError(
                f"The browser did not answer about its microphone within {timeout:g} s.",
                hint="a permission prompt may be waiting in the browser: allow or block the microphone there",
            ),
            lambda content, _: content,
        )
        if not report.get("ok"):
            raise page_error(report)

    async def fetch_recording(self, timeout: float) -> PageRecording:
        """Ask the page for what it recorded of its calls (it keeps the last minutes; see realtime.js's
        ``Recorder``): ``ConfigurationError`` without a page, ``NetworkLostError`` if it does not answer."""
        if self.frontend is None:
            raise ConfigurationError(
                "No browser page is showing this call: its recording is in the page.",
                hint="display the call (end a cell with `call`) in the tab that made it",
            )
        asked_at = time.monotonic()
        return await self._ask(
            {"kind": "recording"},
            "request",
            timeout,
            lambda: NetworkLostError(
                f"The browser did not hand its recording over within {timeout:g} s.",
                hint="is the notebook tab that made the call still open?",
            ),
            lambda content, buffers: PageRecording.from_page(content, buffers, asked_at),
        )

    # -- from the page ----------------------------------------------------------------------
    def receive(self, content: Any, buffers: list[Any] | None = None) -> None:
        """One message from the page. JupyterLab 4.4+ may deliver widget messages on a kernel *subshell*: another
        thread, with its own event loop. The futures, the key provider's HTTP client and the plots' timers all
        belong to the loop the notebook's cells run on, so the message is handled there."""
        loop = self.loop
        if loop is not None and not loop.is_closed() and _running_loop() is not loop:
            loop.call_soon_threadsafe(self._handle, content, buffers or [])
        else:
            self._handle(content, buffers or [])

    def _handle(self, content: Any, buffers: list[Any]) -> None:
        if not isinstance(content, dict):
            return
        kind = content.get("kind")
        if kind == "hello":
            self._hello(str(content.get("frontend")), content.get("origin"))
            return
        if content.get("frontend") != self.frontend:
            return  # from a page that no longer makes the calls (an older tab)
        call, callbacks = self._call, self._callbacks
        if kind == "event":
            if call is not None:
                call.callbacks.on_event(content["event"])
        elif kind in ("opened", "failed"):
            self._answer(kind, content)
        elif kind == "lost":
            if call is not None and content.get("attempt") == call.attempt:  # not a late word about an older call
                call.lost(NetworkLostError(f"The browser lost the call: {content.get('reason', 'no reason')}."))
        elif kind in ("microphone", "recording"):  # an answer to _ask, under the number it was asked with
            answer = self._asked.get(content.get("probe" if kind == "microphone" else "request", -1))
            if answer is not None and not answer.done():
                answer.set_result((content, buffers))
        elif kind == "bye":
            self.frontend = None
            if call is not None:
                call.lost(NetworkLostError("The notebook tab making the call was closed or reloaded."))
        elif callbacks is None:
            return
        elif kind == "levels":
            callbacks.on_levels(content.get("levels") or [])
        elif kind == "stats":
            callbacks.on_stats(content.get("stats") or {})
        elif kind == "notice":
            callbacks.on_notice({key: value for key, value in content.items() if key != "kind"})
        elif kind == "action":
            callbacks.on_action(str(content.get("action")))

    def _hello(self, frontend: str, origin: Any) -> None:
        if self._callbacks is not None:
            self._callbacks.on_hello(origin if isinstance(origin, str) and origin else None)
        previous, self.frontend = self.frontend, frontend
        if self._page_ready is not None:
            self._page_ready.set()
        if previous and previous != frontend:
            # A reload, or a second tab showing the notebook: one page makes the calls, the latest to open.
            self.hangup(frontend=previous)
            if self._call is not None:
                self._call.lost(NetworkLostError("Another notebook tab (or a reload of this one) took over the call."))

    def _answer(self, kind: str, content: dict[str, Any]) -> None:
        future = self._opening
        if future is None or future.done() or content.get("attempt") != self._attempts:
            return  # a late answer to an attempt that already timed out
        if kind == "opened":
            future.set_result(content)
        else:
            future.set_exception(page_error(content))


class WidgetBridge(PageBridge):
    """The protocol over the widget's custom messages (ipywidgets' comm): what a notebook uses."""

    def __init__(self, widget: BrowserCallWidget) -> None:
        super().__init__()
        self.widget = widget
        widget.on_msg(self._on_msg)

    def _on_msg(self, _widget: Any, content: Any, buffers: Any) -> None:
        # ipykernel hands a message's binary buffers over as memoryviews (the page's recording comes that way).
        self.receive(content, list(buffers or []))

    def post(self, message: dict[str, Any]) -> None:
        self.widget.send(message)


def _no_audio(pcm: PCM, rate: int) -> None:
    """The page plays the model's voice itself: no audio reaches the kernel."""


class PageTransport(Transport):
    """One call the page makes with one key. ``connect`` asks the page and waits for its answer; the call's
    events, and its loss, come back through the bridge. ``name`` is the transport the page used."""

    def __init__(
        self,
        bridge: PageBridge,
        *,
        on_event: EventHandler,
        on_closed: ClosedHandler,
        choice: TransportChoice,
        base_url: str,
        model: str,
        connect_timeout: float,
    ) -> None:
        super().__init__(
            base_url,
            TransportCallbacks(on_event=on_event, on_audio=_no_audio, on_closed=on_closed),
            model=model,
            connect_timeout=connect_timeout,
        )
        self.bridge = bridge
        #: What the page is asked for: ``"auto"`` is WebRTC, else (or when it cannot be set up) the WebSocket.
        self.choice = choice
        self.name = ""
        #: The page's attempt number for this call, once it has opened.
        self.attempt: int | None = None
        self._live = False

    async def connect(self, key: str, source: AudioSource | None) -> None:
        """Open the page's call with ``key`` (``source`` is unused: the page's microphone is the source)."""
        opened = await self.bridge.open(self, key, self.connect_timeout)
        timings = opened.get("timings") or {}
        self.attempt, self.name = opened.get("attempt"), str(opened.get("transport") or "")
        self.timings = ConnectTimings(
            offer_ms=timings.get("offer_ms"),
            answer_ms=timings.get("answer_ms"),
            connected_ms=timings.get("connected_ms"),
            channel_open_ms=timings.get("channel_open_ms"),
        )
        self._live = True

    def send(self, event: dict[str, Any]) -> None:
        self.bridge.send(event)

    async def close(self) -> None:
        if self._live:
            self._live = False
            self.bridge.hangup(attempt=self.attempt)

    def lost(self, error: RtkitError) -> None:
        """The page says this call is gone (or the page itself is): ``on_closed``, once."""
        if self._live:
            self._live = False
            self.callbacks.on_closed(error)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
