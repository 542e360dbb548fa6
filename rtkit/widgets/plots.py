"""Live plots: audio levels over time, and latency per turn.

Level readings arrive 50 times a second in each direction; they only go into ring buffers. Drawing
happens on a timer (a few frames a second) into a PNG shown by an ``Image`` widget, so the kernel never
spends more than a small, fixed share of its time on plots. The widget's output also holds a PNG of the plot as
it ended (see ``StaticCopy``), and ``snapshot()`` returns one to display: both survive in the saved notebook, at
a resolution and font size that read on a projector (``figure()`` gives the matplotlib figure itself).
"""

from __future__ import annotations

import io
import time
from collections import deque
from typing import Any

import ipywidgets as widgets
from IPython.display import Image

# Figures are built without pyplot: no global backend is touched (the notebook's inline backend stays as it
# is) and nothing piles up in pyplot's figure registry; Figure.savefig renders with Agg on its own.
from matplotlib.figure import Figure

from rtkit.audio.meter import Level
from rtkit.call import LiveCall
from rtkit.metrics import VOICED_DBFS, ConnectRecord, SessionMetrics, TurnRecord
from rtkit.widgets._ui import ShowsStaticCopy, StaticCopy, Throttle, png_bundle

FLOOR_DBFS = -80.0
#: Live redraws stay small and cheap; static copies (saved in the notebook, shown on a projector) are sharper.
LIVE_DPI = 80
STATIC_DPI = 110
#: Font sizes (points) that read at the back of a room.
TITLE_PT, LABEL_PT, TICK_PT = 12, 11, 10


def _png(fig: Figure, dpi: int = STATIC_DPI) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def _style(ax: Any, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_title(title, fontsize=TITLE_PT)
    ax.set_xlabel(xlabel, fontsize=LABEL_PT)
    ax.set_ylabel(ylabel, fontsize=LABEL_PT)
    ax.tick_params(labelsize=TICK_PT)


class LevelPlot(ShowsStaticCopy, widgets.VBox):
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
        self._copy = StaticCopy(
            self,
            lambda: png_bundle(_png(self.figure(static=True))),
            key=lambda: (len(self.inputs), self._last(self.inputs), len(self.outputs), self._last(self.outputs)),
        )

    def _on_input(self, level: Level) -> None:
        self.inputs.append((level.t, max(level.rms_dbfs, FLOOR_DBFS)))
        self._throttle.request()

    def _on_output(self, level: Level) -> None:
        self.outputs.append((level.t, max(level.rms_dbfs, FLOOR_DBFS)))
        self._throttle.request()

    @staticmethod
    def _last(series: deque[tuple[float, float]]) -> tuple[float, float] | None:
        return series[-1] if series else None

    def figure(self, *, static: bool = False) -> Figure:
        """The last ``window`` seconds up to now, or with ``static`` up to the last reading (a copy saved
        after the call would otherwise scroll its audio out of view)."""
        fig = Figure(figsize=(9, 3.2))
        ax = fig.subplots()
        now = time.monotonic()
        if static:
            now = max((last[0] for last in (self._last(self.inputs), self._last(self.outputs)) if last), default=now)
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
        # 0 dBFS is the loudest a sample can be; -45 dBFS is where rtkit counts a frame as speech.
        ax.axhline(VOICED_DBFS, color="#555", linewidth=1, linestyle="--")
        ax.text(-self.window, VOICED_DBFS + 1.5, f" speech above {VOICED_DBFS:.0f} dBFS", fontsize=TICK_PT)
        ago = "seconds before the last reading" if static else "seconds ago"
        _style(ax, "Audio level, both directions (RMS)", ago, "level (dBFS)")
        if self.inputs or self.outputs:
            ax.legend(loc="upper right", fontsize=TICK_PT)
        fig.tight_layout()
        return fig

    def _draw(self) -> None:
        self._image.value = _png(self.figure(), LIVE_DPI)
        self.redraws += 1

    def snapshot(self) -> Image:
        """A static PNG of the plot (up to its last reading): display it and it stays in the saved notebook."""
        return Image(_png(self.figure(static=True)))


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


class LatencyPlot(ShowsStaticCopy, widgets.VBox):
    """Connection steps and per-turn latency as bars, plus a histogram of time to first audio.

    ``vad_silence_ms`` (the session's ``turn_detection.silence_duration_ms``, when known) draws the wait the
    server's VAD adds before any reply can start: no turn's ``response.created`` comes earlier."""

    def __init__(self, metrics: SessionMetrics, *, vad_silence_ms: float | None = None) -> None:
        self.metrics = metrics
        self.vad_silence_ms = vad_silence_ms
        self._image = widgets.Image(format="png", layout=widgets.Layout(width="720px"))
        self._throttle = Throttle(self._draw, fps=2)
        metrics.records.on(self._on_record)
        super().__init__([self._image])
        self._draw()
        self._copy = StaticCopy(
            self,
            lambda: png_bundle(_png(self.figure())),
            key=lambda: (len(self.metrics.connects), [(t.turn, t.reply_end_ms) for t in self.metrics.turns]),
        )

    def _on_record(self, record: ConnectRecord | TurnRecord) -> None:
        self._throttle.request()

    def figure(self) -> Figure:
        fig = Figure(figsize=(13, 3.8), layout="constrained")
        connect_ax, turn_ax, hist_ax = fig.subplots(1, 3)
        last = next((c for c in reversed(self.metrics.connects) if c.ok), None)
        if last is not None:
            labels = [label for attr, label in _CONNECT if getattr(last, attr) is not None]
            values = [getattr(last, attr) for attr, _ in _CONNECT if getattr(last, attr) is not None]
            connect_ax.barh(labels, values, color="#7e57c2")
            connect_ax.invert_yaxis()
        _style(connect_ax, "Connecting", "ms from the start", "")
        turns = self.metrics.turns[-12:]
        for attr, label, colour in reversed(_STEPS):
            values = [getattr(t, attr) or 0 for t in turns]
            turn_ax.bar([str(t.turn) for t in turns], values, color=colour, label=label)
        if self.vad_silence_ms is not None:
            turn_ax.axhline(self.vad_silence_ms, color="#555", linewidth=1, linestyle="--")
            turn_ax.text(
                1.0,
                self.vad_silence_ms,
                f"VAD silence {self.vad_silence_ms:.0f} ms ",
                fontsize=TICK_PT,
                ha="right",
                va="bottom",
                transform=turn_ax.get_yaxis_transform(),
            )
        _style(turn_ax, "per turn, from the end of speech", "turn", "ms")
        if turns:
            turn_ax.legend(fontsize=TICK_PT - 1, loc="upper left")
        firsts = [t.first_audio_ms for t in self.metrics.turns if t.first_audio_ms is not None]
        if firsts:
            hist_ax.hist(firsts, bins=min(10, max(3, len(firsts))), color="#ef6c00")
            median = sorted(firsts)[len(firsts) // 2]
            hist_ax.axvline(median, color="#555", linewidth=1, linestyle="--")
            hist_ax.text(
                median, 0.02, f" median {median:.0f} ms", fontsize=TICK_PT, transform=hist_ax.get_xaxis_transform()
            )
        _style(hist_ax, "Time to first audio", "ms after the end of speech", "turns")
        return fig

    def _draw(self) -> None:
        self._image.value = _png(self.figure(), LIVE_DPI)

    def snapshot(self) -> Image:
        """A static PNG of the plot now: display it and it stays in the saved notebook."""
        return Image(_png(self.figure()))
