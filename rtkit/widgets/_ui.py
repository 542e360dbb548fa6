"""Small shared pieces of the widgets: running coroutines from buttons, throttled redraws, styling."""

from __future__ import annotations

import asyncio
import html
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

import ipywidgets as widgets

from rtkit.errors import RtkitError

log = logging.getLogger("rtkit.widgets")

STATE_COLOURS = {"connecting": "#d4a017", "connected": "#2e7d32", "disconnected": "#757575", "failed": "#c62828"}


def spawn(coro: Coroutine[Any, Any, Any], status: widgets.HTML | None = None) -> asyncio.Task[Any]:
    """Run a button's coroutine on the kernel's loop (``on_click`` cannot await) and show its failure."""
    task = asyncio.ensure_future(coro)

    def done(t: asyncio.Task[Any]) -> None:
        if t.cancelled():
            return
        exc = t.exception()
        if exc is not None and status is not None:
            status.value = error_html(exc)
        elif exc is not None:
            log.error("widget action failed: %s", exc)

    task.add_done_callback(done)
    return task


def error_html(exc: BaseException) -> str:
    if isinstance(exc, RtkitError):
        hint = f"<br><i>{html.escape(exc.hint)}</i>" if exc.hint else ""
        return f"<span style='color:#c62828'>✖ {html.escape(exc.message)}</span>{hint}"
    return f"<span style='color:#c62828'>✖ {html.escape(type(exc).__name__)}: {html.escape(str(exc))}</span>"


def light(state: str) -> str:
    colour = STATE_COLOURS.get(state, "#757575")
    return (
        f"<span style='display:inline-block;width:0.9em;height:0.9em;border-radius:50%;background:{colour};"
        f"vertical-align:middle'></span> <b>{html.escape(state)}</b>"
    )


class Throttle:
    """Calls ``render`` at most ``fps`` times a second, and once more after the last request: widgets redraw
    on a timer, never once per audio frame."""

    def __init__(self, render: Callable[[], None], fps: float = 5.0) -> None:
        self.render = render
        self.interval = 1.0 / fps
        self._last = 0.0
        self._pending: asyncio.TimerHandle | None = None

    def request(self) -> None:
        if self._pending is not None:
            return
        wait = max(0.0, self._last + self.interval - time.monotonic())
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._run()
            return
        self._pending = loop.call_later(wait, self._run)

    def _run(self) -> None:
        self._pending = None
        self._last = time.monotonic()
        try:
            self.render()
        except Exception:
            log.exception("widget redraw failed")

    def flush(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
        self._run()
