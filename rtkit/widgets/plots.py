"""Live plots: audio levels over time, and latency per turn.

Level readings arrive 50 times a second in each direction; they only go into ring buffers. Drawing
happens on a timer (a few frames a second) into a PNG shown by an ``Image`` widget, so the kernel never
spends more than a small, fixed share of its time on plots. ``snapshot()`` returns a PNG image for a static
copy that survives in the saved notebook (``figure()`` gives the matplotlib figure itself).
"""

from __future__ import annotations

import io
import time
from collections import deque

import ipywidgets as widgets
from IPython.display import Image

# Figures are built without pyplot: no global backend is touched (the notebook's inline backend stays as it
# is) and nothing piles up in pyplot's figure registry; Figure.savefig renders with Agg on its own.
from matplotlib.figure import Figure

from rtkit.audio.meter import Level
from rtkit.call import LiveCall
from rtkit.metrics import ConnectRecord, SessionMetrics, TurnRecord
from rtkit.widgets._ui import Throttle

FLOOR_DBFS = -80.0


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    return buffer.getvalue()


class LevelPlot(widgets.VBox):
    """Input and output RMS level (dBFS) over the last ``window`` seconds, of a kernel session or a browser call."""

    def __init__(self, session: LiveCall, *, window: float = 10.0, fps: float = 4.0) -> None:
        self.window = window
        size = int(window * 50) + 50
        self.inputs: deque[tuple[float, float]] = deque(maxlen=size)
        self.outputs: deque[tuple[float, float]] = deque(maxlen=size)
        self.redraws = 0
        self._image = widgets.Image(format="png", layout=widgets.Layout(width="640px"))
        self._throttle = Throttle(self._draw, fps=fps)
        session.levels.on(self._on_input)
        session.output_levels.on(self._on_output)
        super().__init__([self._image])

    def _on_input(self, level: Level) -> None:
        self.inputs.append((level.t, max(level.rms_dbfs, FLOOR_DBFS)))
        self._throttle.request()

    def _on_output(self, level: Level) -> None:
        self.outputs.append((level.t, max(level.rms_dbfs, FLOOR_DBFS)))
        self._throttle.request()

    def figure(self) -> Figure:
        fig = Figure(figsize=(8, 2.6))
        ax = fig.subplots()
        now = time.monotonic()
        for series, label, colour in (
            (self.inputs, "input (microphone)", "#1565c0"),
            (self.outputs, "output (model)", "#ef6c00"),
        ):
            points = [(t - now, v) for t, v in series if now - t <= self.window]
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, label=label, color=colour, linewidth=1)
        ax.set_xlim(-self.window, 0)
        ax.set_ylim(FLOOR_DBFS, 0)
        ax.set_xlabel("seconds ago")
        ax.set_ylabel("RMS dBFS")
        ax.axhline(-45, color="#999", linewidth=0.6, linestyle="--")
        ax.legend(loc="upper left", fontsize=8)
        fig.tight_layout()
        return fig

    def _draw(self) -> None:
        self._image.value = _png(self.figure())
        self.redraws += 1

    def snapshot(self) -> Image:
        """A static PNG of the plot now: display it and it stays in the saved notebook."""
        return Image(_png(self.figure()))


_STEPS = (
    ("speech_stopped_ms", "VAD end of speech", "#90caf9"),
    ("response_created_ms", "response.created", "#64b5f6"),
    ("first_audio_ms", "first audio", "#ef6c00"),
    ("reply_end_ms", "reply finished", "#bdbdbd"),
)
_CONNECT = (
    ("mint_ms", "mint"),
    ("answer_ms", "SDP answer"),
    ("connected_ms", "ICE+DTLS"),
    ("channel_open_ms", "data channel"),
    ("session_created_ms", "session.created"),
)


class LatencyPlot(widgets.VBox):
    """Connection steps and per-turn latency as bars, plus a histogram of time to first audio."""

    def __init__(self, metrics: SessionMetrics) -> None:
        self.metrics = metrics
        self._image = widgets.Image(format="png", layout=widgets.Layout(width="720px"))
        self._throttle = Throttle(self._draw, fps=2)
        metrics.records.on(self._on_record)
        super().__init__([self._image])
        self._draw()

    def _on_record(self, record: ConnectRecord | TurnRecord) -> None:
        self._throttle.request()

    def figure(self) -> Figure:
        fig = Figure(figsize=(11, 2.8))
        connect_ax, turn_ax, hist_ax = fig.subplots(1, 3)
        last = next((c for c in reversed(self.metrics.connects) if c.ok), None)
        if last is not None:
            labels = [label for attr, label in _CONNECT if getattr(last, attr) is not None]
            values = [getattr(last, attr) for attr, _ in _CONNECT if getattr(last, attr) is not None]
            connect_ax.barh(labels, values, color="#7e57c2")
            connect_ax.invert_yaxis()
        connect_ax.set_title("connect (ms from start)", fontsize=9)
        turns = self.metrics.turns[-12:]
        for attr, label, colour in reversed(_STEPS):
            values = [getattr(t, attr) or 0 for t in turns]
            turn_ax.bar([str(t.turn) for t in turns], values, color=colour, label=label)
        turn_ax.set_title("per turn (ms after end of speech)", fontsize=9)
        if turns:
            turn_ax.legend(fontsize=7, loc="upper left")
        firsts = [t.first_audio_ms for t in self.metrics.turns if t.first_audio_ms is not None]
        if firsts:
            hist_ax.hist(firsts, bins=min(10, max(3, len(firsts))), color="#ef6c00")
        hist_ax.set_title("time to first audio (ms)", fontsize=9)
        fig.tight_layout()
        return fig

    def _draw(self) -> None:
        self._image.value = _png(self.figure())

    def snapshot(self) -> Image:
        """A static PNG of the plot now: display it and it stays in the saved notebook."""
        return Image(_png(self.figure()))
