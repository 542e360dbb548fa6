"""Side-by-side calls (``rtkit.lab_trials``) against the local emulator, on lesson 11's recording."""

from __future__ import annotations

import numpy as np

from rtkit.audio import REALTIME_RATE, load_hello
from rtkit.audio.sources import PcmSource
from rtkit.lab import LabBackend
from rtkit.lab_trials import Trials, turn_detection

PAUSE_S, LEAD = 0.26, 1.2  # the sentence's own 0.34 s pause stretched to 0.6 s; silence before the speech


def _recording() -> np.ndarray:
    hello = load_hello(REALTIME_RATE)
    cut = int(1.60 * REALTIME_RATE)  # inside the pause after "kit."
    return np.concatenate([hello[:cut], np.zeros(int(PAUSE_S * REALTIME_RATE), np.int16), hello[cut:]])


async def test_two_silence_windows_on_one_recording_split_or_keep_the_sentence_and_order_the_latencies(
    backend: LabBackend,
) -> None:
    recording = _recording()
    trials = Trials(
        backend,
        {f"silence {ms} ms": turn_detection({"type": "server_vad", "silence_duration_ms": ms}) for ms in (300, 1000)},
        audio="recorded",
        source=lambda: PcmSource(recording, REALTIME_RATE, lead_seconds=LEAD),
    )
    await trials.run(timeout=30)

    short, long = trials["silence 300 ms"], trials["silence 1000 ms"]
    assert len(short.turns) == 2  # the 600 ms pause ends the turn mid-sentence
    assert len(long.turns) == 1
    assert short.latency is not None and long.latency is not None
    assert long.latency > short.latency + 400  # every reply waits out the window
    assert all(trial.call.state == "disconnected" for trial in trials)

    table = repr(trials.table())
    assert "silence 300 ms" in table and "silence 1000 ms" in table
    assert [row[1] for row in trials.table().rows] == [2, 1]

    plot = trials.plot("The same sentence, two silence windows")
    figure = plot.figure
    assert figure.get_suptitle() == "The same sentence, two silence windows"
    axes = figure.get_axes()
    assert len(axes) == 2
    assert all(ax.get_title(loc="left").startswith(trial.label) for ax, trial in zip(axes, trials, strict=True))
    assert all(ax.get_ylabel() == "level (dBFS)" for ax in axes)
    assert axes[-1].get_xlabel().startswith("seconds since the call connected")
    assert all(len(ax.lines) == 2 and np.size(ax.lines[0].get_xdata()) > 50 for ax in axes)  # both directions' levels
    assert plot._repr_png_().startswith(b"\x89PNG")  # what a saved notebook keeps
