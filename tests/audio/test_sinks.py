"""Sinks take 20 ms frames without blocking: the recorder keeps them, the speaker plays them, or fails typed."""

from __future__ import annotations

import asyncio
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rtkit.audio import AudioSink, NullSink, RecorderSink, SpeakerSink, tone
from rtkit.audio.sinks import _PlaybackBuffer


async def test_recorder_keeps_every_frame_and_round_trips_through_a_wav(tmp_path: Path) -> None:
    recorder = RecorderSink(sample_rate=16_000)
    await recorder.start()
    signal = tone(0.5, rate=16_000)
    for start in range(0, signal.size, 320):
        recorder.write(signal[start : start + 320])
    await recorder.close()
    np.testing.assert_array_equal(recorder.pcm, signal)
    assert recorder.seconds == pytest.approx(0.5)
    path = recorder.save_wav(tmp_path / "out.wav")
    with wave.open(str(path)) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (16_000, 1, 2)
        np.testing.assert_array_equal(np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2"), signal)


def test_recorder_copies_frames_so_a_reused_buffer_cannot_change_the_recording() -> None:
    recorder = RecorderSink()
    frame = np.full(480, 7, dtype=np.int16)
    recorder.write(frame)
    frame[:] = 0
    recorder.write(frame)
    assert recorder.pcm[:480].tolist() == [7] * 480
    recorder.clear()
    assert recorder.seconds == 0 and recorder.pcm.size == 0


def test_null_sink_discards_audio_but_counts_it() -> None:
    sink = NullSink()
    sink.write(tone(0.02))
    sink.write(tone(0.02))
    assert sink.samples == 960


def test_playback_buffer_plays_in_order_across_writes_and_pads_an_underrun_with_zeros() -> None:
    buffer = _PlaybackBuffer(max_samples=1_000)
    buffer.push(np.arange(1, 4, dtype=np.int16))
    buffer.push(np.arange(4, 8, dtype=np.int16))
    out = np.full(5, -1, dtype=np.int16)
    assert buffer.pull_into(out) == 5
    assert out.tolist() == [1, 2, 3, 4, 5]
    assert buffer.pull_into(out) == 2
    assert out.tolist() == [6, 7, 0, 0, 0]
    assert buffer.pull_into(out) == 0
    assert out.tolist() == [0] * 5


def test_playback_buffer_drops_the_oldest_audio_past_its_limit() -> None:
    buffer = _PlaybackBuffer(max_samples=4)
    buffer.push(np.arange(1, 4, dtype=np.int16))
    buffer.push(np.arange(4, 7, dtype=np.int16))
    assert (buffer.size, buffer.dropped) == (4, 2)
    out = np.zeros(4, dtype=np.int16)
    buffer.pull_into(out)
    assert out.tolist() == [3, 4, 5, 6]


def test_speaker_queues_audio_written_before_start_and_clear_discards_it() -> None:
    speaker = SpeakerSink(sample_rate=24_000)
    speaker.write(tone(0.5))
    assert speaker.buffered_seconds == pytest.approx(0.5)
    assert speaker.clear() == pytest.approx(0.5)
    assert speaker.buffered_seconds == 0


def test_speaker_keeps_at_most_max_buffer_seconds() -> None:
    speaker = SpeakerSink(sample_rate=24_000, max_buffer_seconds=1.0)
    speaker.write(tone(1.5))
    assert speaker.buffered_seconds == pytest.approx(1.0)
    assert speaker.dropped_samples == 12_000


async def test_speaker_drops_audio_written_after_close() -> None:
    speaker = SpeakerSink()
    await speaker.close()
    speaker.write(tone(0.1, rate=48_000))
    assert speaker.buffered_seconds == 0
    with pytest.raises(RuntimeError, match="closed"):
        await speaker.start()


def test_every_sink_satisfies_the_audio_sink_protocol() -> None:
    assert all(isinstance(sink, AudioSink) for sink in (NullSink(), RecorderSink(), SpeakerSink()))


def test_speaker_on_a_machine_without_output_devices_raises_speaker_unavailable(
    without_sound_devices: dict[str, Any],
) -> None:
    error = without_sound_devices["speaker"]
    assert error["class"] == "SpeakerUnavailableError" and error["code"] == "speaker_unavailable", error
    assert "no speaker found" in error["message"].lower()
    assert error["hint"] and "RecorderSink" in error["hint"]
    for leak in ("Traceback", "PortAudioError", "\n", "Error querying device"):
        assert leak not in error["message"]


def test_speaker_without_portaudio_raises_typed_error_with_install_hint(without_portaudio: dict[str, Any]) -> None:
    error = without_portaudio["speaker"]
    assert error["class"] == "SpeakerUnavailableError"
    assert error["code"] == "speaker_unavailable"
    assert "PortAudio" in error["message"] and "\n" not in error["message"]
    assert "apt-get install libportaudio2" in error["hint"]


def test_speaker_plays_everything_written_to_a_virtual_alsa_device(virtual_devices: dict[str, Any]) -> None:
    speaker = virtual_devices["speaker"]
    assert "code" not in speaker, speaker
    assert speaker["queued"] == pytest.approx(0.5)
    assert speaker["left"] == 0


async def test_a_realtime_recorder_plays_at_its_rate_and_a_barge_in_keeps_only_what_was_heard() -> None:
    from rtkit.audio.base import PlayoutSink

    sink = RecorderSink(1000, realtime=True)
    assert isinstance(sink, PlayoutSink)
    sink.write(np.ones(1000, dtype=np.int16))  # one second, arriving at once
    await asyncio.sleep(0.3)
    played = sink.played_samples
    assert 200 <= played <= 900 and sink.written_samples == 1000, played
    dropped = sink.discard_unplayed()
    assert sink.pcm.size == 1000 - dropped and sink.played_samples <= sink.written_samples == sink.pcm.size


def test_sinks_without_a_clock_count_what_they_were_given_as_played() -> None:
    sink = NullSink(1000)
    sink.write(np.ones(480, dtype=np.int16))
    assert sink.played_samples == sink.written_samples == 480 and sink.discard_unplayed() == 0
