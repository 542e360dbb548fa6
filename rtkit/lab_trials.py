"""Several calls run side by side on the same recording, for a lesson that compares settings or transports.

A comparison is only fair if every call hears the same audio under the same machine load, so ``Trials`` makes
one call per ``{label: session config}`` (each with its own copy of the lesson's source), connects them all at
once, waits until each has *played* a completed reply, and hangs up. Each call keeps a log of what it saw (the
server's events and both directions' levels, stamped with the kernel's clock), from which ``table()`` and
``plot()`` read: how many turns the server found, the committed span of each, the reply's latency, and the
levels with the VAD's spans overlaid.

A lesson uses it in three short cells (a ``BrowserCall`` must be on show before it connects)::

    trials = Trials(backend, {"silence 300 ms": config_300, "silence 1000 ms": config_1000}, source=recording)
    trials                                   # shows one ConnectionPanel per call
    ---
    await trials.run()
    trials.table()
    trials.plot("The same sentence, two silence windows")
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import ipywidgets as widgets
from matplotlib.figure import Figure

from rtkit.audio.base import AudioSource
from rtkit.audio.meter import Level
from rtkit.call import LiveCall
from rtkit.events import next_value
from rtkit.lab import AudioSide, LabBackend
from rtkit.widgets import ConnectionPanel
from rtkit.widgets.plots import FLOOR_DBFS, LABEL_PT, TICK_PT, TITLE_PT, _png

__all__ = ["Trial", "TrialPlot", "TrialTable", "Trials", "turn_detection"]

Seen = tuple[float, "dict[str, Any] | Level"]


def turn_detection(settings: dict[str, Any] | None) -> dict[str, Any]:
    """A session config that sets only ``audio.input.turn_detection``: what a VAD comparison varies."""
    return {"audio": {"input": {"turn_detection": settings}}}


def _completed(event: dict[str, Any]) -> bool:
    return event.get("type") == "response.done" and event.get("response", {}).get("status") == "completed"


@dataclass
class Trial:
    """One call of a comparison and everything it saw, stamped with ``time.monotonic()`` on arrival (levels keep
    their own stamp): the readings of both directions and the server's events share one clock, so a plot can
    lay the VAD's decisions over the levels they were made on."""

    label: str
    call: LiveCall
    panel: ConnectionPanel
    seen: list[Seen] = field(default_factory=list)
    #: When the call connected (``time.monotonic()``), the origin of the plot's time axis.
    t0: float = 0.0

    def __post_init__(self) -> None:
        self.call.events.on(lambda event: self.seen.append((time.monotonic(), event)))
        self.call.levels.on(self._level)
        self.call.output_levels.on(self._level)

    def _level(self, level: Level) -> None:
        self.seen.append((level.t or time.monotonic(), level))

    def events(self, suffix: str = "") -> list[tuple[float, dict[str, Any]]]:
        """The server events whose type ends with ``suffix`` (``"speech_stopped"``; all of them by default), with
        their arrival times."""
        return [(t, e) for t, e in self.seen if isinstance(e, dict) and str(e.get("type", "")).endswith(suffix)]

    @property
    def turns(self) -> list[tuple[int, int]]:
        """Each turn the server found, as its committed span ``(audio_start_ms, audio_end_ms)`` in the stream."""
        starts = [int(e["audio_start_ms"]) for _, e in self.events("input_audio_buffer.speech_started")]
        ends = [int(e["audio_end_ms"]) for _, e in self.events("input_audio_buffer.speech_stopped")]
        return list(zip(starts, ends, strict=False))

    @property
    def latency(self) -> float | None:
        """End of speech → ``response.created`` (ms) of the last completed reply: what the VAD settings move (a
        real model's first audio follows some hundred ms later, whatever the VAD)."""
        done = [t.response_created_ms for t in self.call.metrics.turns if t.status == "completed"]
        return done[-1] if done else None

    def trace(self, direction: str) -> tuple[list[float], list[float]]:
        """(seconds since connected, dBFS floored at -80) of one direction's level readings."""
        points = [
            (t - self.t0, max(x.rms_dbfs, FLOOR_DBFS))
            for t, x in self.seen
            if isinstance(x, Level) and x.direction == direction
        ]
        return [p[0] for p in points], [p[1] for p in points]

    async def run(self, timeout: float) -> None:
        """Connect, wait for a completed reply to be played out (its turn record is finished), and hang up."""
        answered = asyncio.ensure_future(next_value(self.call.events, _completed, timeout))
        try:
            await self.panel.connect()
            self.t0 = time.monotonic()
            reply = (await answered)["response"]["id"]
        finally:
            answered.cancel()
        metrics = self.call.metrics
        if not any(t.response_id == reply for t in metrics.turns):
            await next_value(metrics.records, lambda r: getattr(r, "response_id", None) == reply, timeout)
        await self.panel.disconnect()


@dataclass
class TrialTable:
    """One row per call: turns found, each turn's committed span, and the completed reply's latency. Shown as
    plain text, so it reads the same live and in a saved or exported notebook."""

    rows: list[tuple[str, int, str, float | None]]

    def __repr__(self) -> str:
        width = max([24, *(len(label) for label, *_ in self.rows)])
        lines = [f"{'setting':{width}} {'turns':>5}  {'committed audio (ms into the stream)':38} {'reply latency':>13}"]
        for label, count, spans, latency in self.rows:
            shown = "—" if latency is None else f"{latency:.0f} ms"
            lines.append(f"{label:{width}} {count:>5}  {spans:38} {shown:>13}")
        return "\n".join(lines)


@dataclass
class TrialPlot:
    """The comparison's figure; displayed, a PNG (``image/png``), so a saved notebook keeps the picture with no
    widget manager and no pyplot state in the kernel."""

    figure: Figure

    def _repr_png_(self) -> bytes:
        return _png(self.figure)

    def __repr__(self) -> str:
        return f"<TrialPlot: {self.figure.get_suptitle()}>"


class Trials:
    """One call per ``{label: session config}``, run together on the same recording (see the module's docstring).

    ``source`` makes each call's recorded audio (a fresh source per call: a source is read once); ``options``
    go to every ``backend.call`` (``transport``...), and ``per_call`` adds options to one label's call only
    (``{"webrtc": {"transport": "webrtc"}}``). Displayed, it is the calls' panels, side by side.
    """

    def __init__(
        self,
        backend: LabBackend,
        configs: Mapping[str, dict[str, Any] | None],
        *,
        source: Callable[[], AudioSource] | None = None,
        audio: AudioSide | str | None = None,
        per_call: Mapping[str, dict[str, Any]] | None = None,
        **options: Any,
    ) -> None:
        self.trials: list[Trial] = []
        for label, config in configs.items():
            extra = {**options, **(per_call or {}).get(label, {})}
            call = backend.call(config, audio=audio, source=source() if source else None, **extra)
            self.trials.append(Trial(label, call, ConnectionPanel(call)))

    def __iter__(self) -> Iterator[Trial]:
        return iter(self.trials)

    def __len__(self) -> int:
        return len(self.trials)

    def __getitem__(self, key: int | str) -> Trial:
        if isinstance(key, int):
            return self.trials[key]
        return next(t for t in self.trials if t.label == key)

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(*(trial.panel for trial in self.trials))  # type: ignore[no-untyped-call]

    def panels(self) -> widgets.Box:
        """The panels in one box (for a layout of your own; displaying ``Trials`` shows them one under another)."""
        return widgets.VBox([trial.panel for trial in self.trials])

    async def run(self, timeout: float = 60.0) -> None:
        """Run every call at once, each until its completed reply has played, then hang up: the same load for all."""
        await asyncio.gather(*(trial.run(timeout) for trial in self.trials))

    def table(self) -> TrialTable:
        rows = []
        for trial in self.trials:
            spans = ", ".join(f"{a}→{b}" for a, b in trial.turns)
            rows.append((trial.label, len(trial.turns), spans, trial.latency))
        return TrialTable(rows)

    def plot(self, title: str) -> TrialPlot:
        """One row per call: the microphone's level (blue), the reply's (orange), and in grey each stretch from
        ``speech_started`` to ``speech_stopped`` as they arrived: what the server took for one turn."""
        count = len(self.trials)
        figure = Figure(figsize=(10, 1.7 * count + 1.0), layout="constrained")
        axes = figure.subplots(count, 1, sharex=True, squeeze=False)[:, 0]
        for ax, trial in zip(axes, self.trials, strict=True):
            ax.plot(*trial.trace("input"), color="#1565c0", linewidth=0.8, label="microphone (input)")
            ax.plot(*trial.trace("output"), color="#ef6c00", linewidth=0.8, label="reply (output)")
            started, stopped = trial.events("speech_started"), trial.events("speech_stopped")
            for (start, _), (stop, _) in zip(started, stopped, strict=False):
                ax.axvspan(start - trial.t0, stop - trial.t0, color="#9e9e9e", alpha=0.35)
            ax.set_ylim(FLOOR_DBFS, 0)
            ax.set_ylabel("level (dBFS)", fontsize=LABEL_PT - 1)
            ax.tick_params(labelsize=TICK_PT)
            latency = (
                "no completed reply" if trial.latency is None else f"reply {trial.latency:.0f} ms after the speech"
            )
            ax.set_title(f"{trial.label}: {len(trial.turns)} turn(s), {latency}", fontsize=LABEL_PT, loc="left")
        axes[0].legend(loc="upper right", fontsize=8)
        axes[-1].set_xlabel(
            "seconds since the call connected (grey: speech_started → speech_stopped, as they arrived)",
            fontsize=LABEL_PT,
        )
        figure.suptitle(title, fontsize=TITLE_PT)
        return TrialPlot(figure)
