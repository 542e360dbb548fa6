"""Loudness of the audio going in and out, as events any widget, plot or test can subscribe to.

A meter measures each 20 ms frame with a few numpy reductions and publishes a ``Level`` on its
``Broadcast``; the wrappers put a meter on any source or sink without touching the audio itself.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

from rtkit.audio.base import AudioSink, AudioSource
from rtkit.audio.pcm import PCM, level_dbfs
from rtkit.events import Broadcast

__all__ = ["Direction", "Level", "LevelMeter", "MeteredSink", "MeteredSource"]

Direction = Literal["input", "output"]


@dataclass(frozen=True, slots=True)
class Level:
    """One frame's loudness; ``t`` is ``time.monotonic()``, the clock asyncio's loop also runs on.

    dBFS: 0 is full scale, a full-scale sine is about -3, silence is ``-inf``.
    """

    t: float
    rms_dbfs: float
    peak_dbfs: float
    direction: Direction


class LevelMeter:
    """Measures frames of one direction (``"input"`` = to the API, ``"output"`` = from it) and publishes them.

    Pass a shared ``broadcast`` to merge both directions into one stream of levels.
    """

    def __init__(self, direction: Direction, broadcast: Broadcast[Level] | None = None) -> None:
        self.direction: Direction = direction
        self.levels: Broadcast[Level] = broadcast if broadcast is not None else Broadcast()
        #: The most recent measurement, for code that polls instead of subscribing.
        self.last: Level | None = None

    def measure(self, pcm: PCM) -> Level:
        rms, peak = level_dbfs(pcm)
        return self.record(Level(t=time.monotonic(), rms_dbfs=rms, peak_dbfs=peak, direction=self.direction))

    def record(self, level: Level) -> Level:
        """Publish a level measured elsewhere (by a browser, say) as if this meter had measured it."""
        self.last = level
        self.levels.publish(level)
        return level


class MeteredSource:
    """A source whose every frame is measured on its way out, unchanged."""

    sample_rate: int

    def __init__(self, source: AudioSource, meter: LevelMeter | None = None) -> None:
        self.source = source
        self.meter = meter if meter is not None else LevelMeter("input")
        self.sample_rate = source.sample_rate

    async def start(self) -> None:
        await self.source.start()

    async def read(self) -> PCM:
        pcm = await self.source.read()
        self.meter.measure(pcm)
        return pcm

    async def close(self) -> None:
        await self.source.close()


class MeteredSink:
    """A sink whose every frame is measured on its way in, unchanged."""

    sample_rate: int

    def __init__(self, sink: AudioSink, meter: LevelMeter | None = None) -> None:
        self.sink = sink
        self.meter = meter if meter is not None else LevelMeter("output")
        self.sample_rate = sink.sample_rate

    async def start(self) -> None:
        await self.sink.start()

    def write(self, pcm: PCM) -> None:
        self.meter.measure(pcm)
        self.sink.write(pcm)

    async def close(self) -> None:
        await self.sink.close()
