"""Small shared pieces of the widgets: running coroutines from buttons, throttled redraws, styling."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import html
import logging
import time
import uuid
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


def png_bundle(png: bytes) -> dict[str, str]:
    """A PNG as a notebook output's ``image/png`` entry (base64 text, as nbformat stores it)."""
    return {"image/png": base64.b64encode(png).decode("ascii")}


class ShowsStaticCopy:
    """The display hooks of a widget that keeps a ``StaticCopy`` in ``self._copy``: its mime bundle is the live
    view with the copy beside it, and showing it keeps the copy current. Listed before the ipywidgets base."""

    _copy: StaticCopy

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        return self._copy.bundle(super()._repr_mimebundle_(**kwargs))  # type: ignore[misc]

    def _ipython_display_(self) -> None:
        self._copy.show(super()._repr_mimebundle_())  # type: ignore[misc]


class StaticCopy:
    """A widget's output that still says something where widgets do not render (GitHub, nbviewer, an HTML export).

    The output's mime bundle holds the live view *and* a static copy of the widget's state (``text/html`` or
    ``image/png``): a front end with the widget manager shows the view (it ranks first), any other shows the
    copy. The output gets a display id, and after each cell that changed the copy it is updated in place, so a
    notebook saved at the end holds each panel as it ended. An update re-mounts the live view from the same
    model (the state lives in the model, not the view), once per cell at most.
    """

    def __init__(
        self,
        widget: widgets.Widget,
        render: Callable[[], dict[str, str]],
        key: Callable[[], object] | None = None,
    ) -> None:
        self.widget = widget
        #: The static copy as mime type → data; ``key`` (cheap) says whether it may have changed, for copies
        #: that are costly to render (a plot's PNG).
        self.render = render
        self.key = key
        self._display_ids: list[str] = []
        self._static: dict[str, str] = {}
        self._key: object = None
        self._hooked: Any = None

    def bundle(self, live: dict[str, Any]) -> dict[str, Any]:
        """``live`` (the widget's own bundle) with the static copy beside it."""
        key = self.key() if self.key is not None else None
        if key is None or key != self._key or not self._static:
            try:
                self._static = self.render()
            except Exception:
                log.exception("static copy failed")
            self._key = key
        return {**live, **self._static}

    def show(self, live: dict[str, Any]) -> None:
        """Display the widget with a display id, and keep its static copy current after each cell."""
        from IPython import get_ipython
        from IPython.display import display

        display_id = uuid.uuid4().hex
        self._display_ids.append(display_id)
        display(self.bundle(live), raw=True, display_id=display_id)
        shell = get_ipython()
        if shell is not None and self._hooked is None:
            self._hooked = shell
            shell.events.register("post_run_cell", self._after_cell)

    def _after_cell(self, *_: Any) -> None:
        self.refresh()

    def refresh(self) -> bool:
        """Update every display of the widget if its static copy changed; True if it did."""
        from IPython.display import update_display

        if not self._display_ids or self.widget.comm is None:  # never shown, or closed
            return False
        previous = self._static
        data = self.widget._repr_mimebundle_()
        if self._static == previous:
            return False
        for display_id in self._display_ids:
            update_display(data, raw=True, display_id=display_id)
        return True

    def forget(self) -> None:
        """Stop refreshing (the widget was closed)."""
        if self._hooked is not None:
            with contextlib.suppress(ValueError):
                self._hooked.events.unregister("post_run_cell", self._after_cell)
            self._hooked = None
