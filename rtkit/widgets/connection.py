"""The connection panel: connect/disconnect, transport choice, a state light, reconnect attempts, event log.

A browser call brings its own controls (its card: Connect, Mute, Hang up, the state and what went wrong): with
one, the panel shows that card in their place, so that a call has one set of buttons and one status line."""

from __future__ import annotations

import html
import time
from collections import deque
from typing import Any

import ipywidgets as widgets

from rtkit.call import LiveCall, StateChange
from rtkit.widgets._ui import ShowsStaticCopy, StaticCopy, Throttle, error_html, light, spawn
from rtkit.widgets.browser_call import BrowserCall

#: Lines of the event log a static copy keeps (the newest; the count of earlier ones is said).
STATIC_LINES = 120
#: Events too chatty to log one by one by default (they arrive tens of times a second).
NOISY = (
    "response.output_audio.delta",
    "response.output_audio_transcript.delta",
    "response.output_text.delta",
    "input_audio_buffer.append",
)


class ConnectionPanel(ShowsStaticCopy, widgets.VBox):
    """Everything about one call's connection, whether the kernel (``RealtimeSession``) or the browser tab
    (``BrowserCall``, whose card takes the place of the panel's buttons and status) holds the audio.
    ``await panel.connect()`` / ``disconnect()`` do what the buttons do; ``panel.lines`` holds the event log
    lines, ``panel.states`` the transitions seen."""

    def __init__(self, session: LiveCall, *, log_lines: int = 200, show_noisy: bool = False) -> None:
        self.session = session
        self.states: list[StateChange] = []
        self.lines: deque[str] = deque(maxlen=log_lines)
        self.attempts = 0
        self._t0 = time.monotonic()
        self._connect = widgets.Button(description="Connect", icon="plug", button_style="success")
        self._disconnect = widgets.Button(description="Disconnect", icon="times")
        self._transport = widgets.Dropdown(
            options=["auto", "webrtc", "websocket"],
            value=session.transport_choice,
            description="transport",
            layout=widgets.Layout(width="200px"),
        )
        self._light = widgets.HTML(light(session.state))
        self._attempts = widgets.HTML("")
        self._status = widgets.HTML("")
        self._filter = widgets.Text(placeholder="filter events (e.g. response)", layout=widgets.Layout(width="260px"))
        self._noisy = widgets.Checkbox(value=show_noisy, description="show deltas", indent=False)
        self._log = widgets.HTML(
            "", layout=widgets.Layout(max_height="220px", overflow="auto", border="1px solid #ddd")
        )
        self._render = Throttle(self._draw_log, fps=4)
        self._connect.on_click(lambda _: spawn(self.connect(), self._status))
        self._disconnect.on_click(lambda _: spawn(self.disconnect(), self._status))
        self._filter.observe(lambda _: self._render.request(), "value")
        self._noisy.observe(lambda _: self._render.request(), "value")
        self._buttons(session.state)
        session.states.on(self._on_state)
        session.events.on(self._on_event)
        controls: list[widgets.Widget] = [
            widgets.HBox([self._connect, self._disconnect, self._transport, self._light, self._attempts]),
            self._status,
        ]
        #: A browser call's card: the page's half of the call (microphone, speaker, meters, its buttons and
        #: status), which needs to be on show for the page to make calls.
        self.card = session.widget if isinstance(session, BrowserCall) else None
        if self.card is not None:
            controls = [self.card]
        super().__init__([*controls, widgets.HBox([self._filter, self._noisy]), self._log])
        self._copy = StaticCopy(self, lambda: {"text/html": self.static_html()})

    def static_html(self) -> str:
        """The panel as plain HTML, for where widgets do not render (a saved notebook on GitHub, nbviewer, an
        HTML export): the state light, the status line, and the event log **oldest first**, as a log is read
        once it has ended (the live view shows the newest first). The reader's filter applies."""
        lines = self.visible_lines()
        earlier = len(lines) - STATIC_LINES
        shown = lines[-STATIC_LINES:]
        if earlier > 0:
            shown = [f"… {earlier} earlier lines", *shown]
        where = ""
        if self.card is not None:
            where = " · <i>the call ran in the browser tab (its card, microphone and meters are not saved)</i>"
        attempts = f" · {self.attempts} reconnect attempts" if self.attempts else ""
        log = html.escape("\n".join(shown)) or "(no events yet)"
        return (
            f"<div class='rtkit-static'><b>Connection panel</b> · {light(self.session.state)}{attempts}{where}"
            f"<br>{self._status.value}"
            f"<pre style='max-height:22em;overflow:auto;border:1px solid #ddd;font-size:12px'>{log}</pre></div>"
        )

    async def connect(self) -> None:
        if self.card is None:
            self.session.transport_choice = self._transport.value
        if self.session.state == "connected":
            return  # the status already says over what
        self._status.value = ""  # the "connected" state change writes the new one
        try:
            await self.session.connect()
        except Exception as exc:
            self._status.value = error_html(exc)
            raise

    async def disconnect(self) -> None:
        await self.session.disconnect()

    @property
    def state(self) -> str:
        return self.session.state

    def _stamp(self) -> str:
        return f"{time.monotonic() - self._t0:7.2f}s"

    def _on_state(self, change: StateChange) -> None:
        self.states.append(change)
        if change.attempt:
            self.attempts = max(self.attempts, change.attempt)
            self._attempts.value = f"reconnect attempt {change.attempt}"
        self._light.value = light(change.state)
        if change.error is not None and change.state in ("disconnected", "failed"):
            self._status.value = error_html(change.error)
        elif change.state == "disconnected":
            self._status.value = "closed"
        elif change.state == "connected":  # also after a reconnection: the last error is history now
            self._status.value = f"connected over <b>{change.transport or '?'}</b>"
        self._buttons(change.state)
        self.lines.append(f"{self._stamp()}  ● {change.state}" + (f" — {change.reason}" if change.reason else ""))
        self._render.request()

    def _on_event(self, event: dict[str, Any]) -> None:
        kind = str(event.get("type", "?"))
        detail = ""
        if kind == "error":
            detail = f" {event.get('error', {}).get('code')}: {event.get('error', {}).get('message')}"
        elif kind == "response.done":
            detail = f" status={event.get('response', {}).get('status')}"
        elif kind.startswith("rtkit."):
            detail = " " + ", ".join(f"{k}={v}" for k, v in event.items() if k != "type")
        self.lines.append(f"{self._stamp()}  {kind}{detail}")
        self._render.request()

    def visible_lines(self) -> list[str]:
        needle = self._filter.value.strip()
        return [
            line
            for line in self.lines
            if (self._noisy.value or not any(n in line for n in NOISY)) and (not needle or needle in line)
        ]

    def _buttons(self, state: str) -> None:
        self._connect.disabled = state in ("connecting", "connected")
        self._disconnect.disabled = state == "disconnected"
        self._transport.disabled = self._connect.disabled

    def _draw_log(self) -> None:
        # Newest first: an HTML box cannot be scrolled to its end from the kernel, and the latest event is
        # the one a reader is looking for.
        lines = self.visible_lines()[-80:][::-1]
        self._log.value = "<pre style='margin:0;font-size:11px'>" + html.escape("\n".join(lines)) + "</pre>"
