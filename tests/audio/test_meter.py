"""Meters turn frames into Level events on a Broadcast without touching the audio that passes through them."""

from __future__ import annotations

import asyncio
import math
import time

import numpy as np
import pytest

from rtkit.audio import (
    AudioSink,
    AudioSource,
    Level,
    LevelMeter,
    MeteredSink,
    MeteredSource,
    RecorderSink,
    ToneSource,
    tone,
)
from rtkit.audio.pcm import REALTIME_RATE, frame_levels_dbfs, level_dbfs
from rtkit.events import Broadcast


def test_full_scale_sine_measures_about_minus_3_dbfs_rms_and_0_dbfs_peak() -> None:
    level = LevelMeter("input").measure(tone(0.02, frequency=1_000, amplitude=1.0))
    assert level.rms_dbfs == pytest.approx(-3.01, abs=0.1)
    assert level.peak_dbfs == pytest.approx(0.0, abs=0.01)
    assert level.direction == "input"


def test_silence_measures_minus_infinity() -> None:
    level = LevelMeter("output").measure(np.zeros(480, dtype=np.int16))
    assert level.rms_dbfs == -math.inf
    assert level.peak_dbfs == -math.inf


def test_level_time_is_the_monotonic_clock_the_event_loop_uses() -> None:
    before = time.monotonic()
    level = LevelMeter("input").measure(tone(0.02))
    assert before <= level.t <= time.monotonic()


def test_meter_publishes_each_level_to_its_broadcast_and_remembers_the_last() -> None:
    meter = LevelMeter("input")
    seen: list[Level] = []
    meter.levels.on(seen.append)
    first = meter.measure(tone(0.02, amplitude=0.1))
    second = meter.measure(tone(0.02, amplitude=0.5))
    assert seen == [first, second]
    assert meter.last is second
    assert second.rms_dbfs - first.rms_dbfs == pytest.approx(20 * math.log10(5), abs=0.1)


async def test_one_broadcast_carries_both_directions_to_an_async_subscriber() -> None:
    levels: Broadcast[Level] = Broadcast()
    mic, speaker = LevelMeter("input", levels), LevelMeter("output", levels)

    async def collect() -> list[str]:
        return [level.direction async for level in levels]

    task = asyncio.create_task(collect())
    await asyncio.sleep(0)
    mic.measure(tone(0.02))
    speaker.measure(tone(0.02))
    levels.close()
    assert await task == ["input", "output"]


async def test_metered_source_hands_out_exactly_the_frames_of_the_source_it_wraps() -> None:
    metered = MeteredSource(ToneSource(frequency=523))
    assert isinstance(metered, AudioSource)
    await metered.start()
    frames = [await metered.read() for _ in range(3)]
    np.testing.assert_array_equal(np.concatenate(frames), tone(0.06, frequency=523))
    assert metered.meter.last is not None and metered.meter.last.direction == "input"
    await metered.close()


async def test_metered_sink_passes_frames_through_unchanged_and_measures_them_as_output() -> None:
    recorder = RecorderSink()
    meter = LevelMeter("output")
    seen: list[Level] = []
    meter.levels.on(seen.append)
    sink = MeteredSink(recorder, meter)
    assert isinstance(sink, AudioSink)
    await sink.start()
    signal = tone(0.04)
    sink.write(signal[:480])
    sink.write(signal[480:])
    await sink.close()
    np.testing.assert_array_equal(recorder.pcm, signal)
    assert [level.direction for level in seen] == ["output", "output"]


def test_frame_levels_are_level_dbfs_of_each_whole_frame_and_drop_the_partial_tail() -> None:
    pcm = np.concatenate([tone(0.02, amplitude=1.0), np.zeros(480, dtype=np.int16), tone(0.02, amplitude=0.01)])
    pcm = np.concatenate([pcm, tone(0.01)])  # half a frame: not measured
    levels = frame_levels_dbfs(pcm, REALTIME_RATE, frame_ms=20)
    assert levels.shape == (3,)
    for index, level in enumerate(levels):
        assert level == pytest.approx(level_dbfs(pcm[index * 480 : (index + 1) * 480])[0], abs=1e-9)
    assert levels[1] == -math.inf
    assert frame_levels_dbfs(pcm[:479], REALTIME_RATE).shape == (0,)
