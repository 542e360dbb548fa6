"""Sources hand out 20 ms mono int16 frames at their own rate, paced on the loop clock, and fail with typed errors."""

from __future__ import annotations

import asyncio
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from rtkit.audio import (
    HELLO_TEXT,
    AudioSource,
    MicrophoneSource,
    PcmSource,
    SilenceSource,
    SpeechSource,
    ToneSource,
    WavFileSource,
    level_dbfs,
    load_hello,
    speech_available,
    tone,
)
from rtkit.errors import (
    AudioUnavailableError,
    ConfigurationError,
    MicrophoneDeniedError,
    MicrophoneUnavailableError,
)

DATA = Path(__file__).resolve().parents[2] / "rtkit" / "audio" / "data"


def write_wav(path: Path, pcm: np.ndarray[Any, Any], rate: int, channels: int = 1) -> Path:
    """A 16-bit PCM WAV written with the stdlib, as any tool would; ``pcm`` is interleaved int16."""
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm.astype("<i2").tobytes())
    return path


async def read_frames(source: AudioSource, count: int) -> list[np.ndarray[Any, Any]]:
    return [await source.read() for _ in range(count)]


async def test_tone_source_releases_fifty_frames_in_about_one_second_of_loop_time() -> None:
    loop = asyncio.get_running_loop()
    source = ToneSource()
    started = loop.time()
    await read_frames(source, 50)
    elapsed = loop.time() - started
    # Frame n is due at n * 20 ms, so the 50th arrives at 0.98 s; the bounds only rule out "unpaced" and "stuck".
    assert 0.9 <= elapsed <= 1.5


async def test_source_that_fell_behind_restarts_its_schedule_instead_of_bursting() -> None:
    loop = asyncio.get_running_loop()
    source = SilenceSource()
    await source.read()
    await asyncio.sleep(0.5)  # a reader that stalled for 25 frames
    started = loop.time()
    await read_frames(source, 5)
    assert loop.time() - started >= 0.07  # 4 paced gaps of 20 ms, not 5 overdue frames at once


Factory = Callable[[int], AudioSource]
FACTORIES: dict[str, Factory] = {
    "tone": lambda rate: ToneSource(sample_rate=rate),
    "silence": lambda rate: SilenceSource(sample_rate=rate),
    "pcm": lambda rate: PcmSource(tone(0.03, rate=rate), rate),
}


@pytest.mark.parametrize("rate", [8_000, 16_000, 24_000, 44_100, 48_000])
@pytest.mark.parametrize("kind", sorted(FACTORIES))
async def test_sources_hand_out_20ms_mono_int16_frames_at_their_own_rate(kind: str, rate: int) -> None:
    source = FACTORIES[kind](rate)
    assert source.sample_rate == rate
    for frame in await read_frames(source, 2):
        assert frame.dtype == np.int16
        assert frame.shape == (rate // 50,)


@pytest.mark.parametrize("rate", [11_025, 0, -8_000])
def test_rate_that_cannot_make_whole_20ms_frames_is_refused_when_the_source_is_built(rate: int) -> None:
    with pytest.raises(ConfigurationError, match="20 ms frames"):
        ToneSource(sample_rate=rate)


async def test_tone_frames_join_into_one_continuous_sine() -> None:
    frames = await read_frames(ToneSource(frequency=997, amplitude=0.5, sample_rate=16_000), 3)
    np.testing.assert_array_equal(np.concatenate(frames), tone(0.06, frequency=997, amplitude=0.5, rate=16_000))


async def test_tone_with_a_duration_turns_to_silence_and_reports_finished() -> None:
    source = ToneSource(seconds=0.03, sample_rate=8_000)
    first, second = await read_frames(source, 2)
    assert level_dbfs(first)[0] == pytest.approx(level_dbfs(tone(0.02, rate=8_000))[0], abs=0.1)
    assert np.count_nonzero(second[80:]) == 0  # 30 ms = 240 samples: half of the second frame is tone
    assert np.count_nonzero(second[:80]) > 0
    assert source.finished


async def test_pcm_source_plays_lead_silence_then_the_buffer_once_then_silence() -> None:
    pcm = np.arange(1, 321, dtype=np.int16)  # exactly two 8 kHz frames
    source = PcmSource(pcm, 8_000, lead_seconds=0.01)
    frames = await read_frames(source, 4)
    played = np.concatenate(frames)
    np.testing.assert_array_equal(played[:80], 0)
    np.testing.assert_array_equal(played[80:400], pcm)
    np.testing.assert_array_equal(played[400:], 0)
    assert source.finished
    assert source.duration == pytest.approx(0.05)


async def test_pcm_source_with_loop_repeats_the_buffer_across_frame_boundaries() -> None:
    pcm = np.arange(1, 101, dtype=np.int16)  # 100 samples do not divide a 160-sample frame
    played = np.concatenate(await read_frames(PcmSource(pcm, 8_000, loop=True), 2))
    np.testing.assert_array_equal(played, np.tile(pcm, 4)[:320])


@pytest.mark.parametrize(
    "pcm", [np.zeros(160, dtype=np.float32), np.zeros((160, 2), dtype=np.int16)], ids=["float", "stereo"]
)
def test_pcm_source_refuses_anything_but_mono_int16(pcm: np.ndarray[Any, Any]) -> None:
    with pytest.raises(ConfigurationError, match="mono int16"):
        PcmSource(pcm, 8_000)


async def test_wav_source_mixes_a_16khz_stereo_file_to_mono_frames_at_its_native_rate(tmp_path: Path) -> None:
    left = tone(0.1, frequency=440, amplitude=0.5, rate=16_000)
    right = (left // 2).astype(np.int16)
    path = write_wav(tmp_path / "stereo.wav", np.column_stack([left, right]).reshape(-1), 16_000, channels=2)
    source = WavFileSource(path)
    assert source.sample_rate == 16_000
    frames = await read_frames(source, 5)
    assert {frame.shape for frame in frames} == {(320,)}
    expected = ((left.astype(np.int32) + right) // 2).astype(np.int16)
    np.testing.assert_array_equal(np.concatenate(frames), expected)


async def test_wav_source_resamples_to_the_rate_asked_for(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "voice.wav", tone(0.2, rate=16_000), 16_000)
    source = WavFileSource(path, sample_rate=24_000)
    assert source.sample_rate == 24_000
    assert source.duration == pytest.approx(0.2, abs=0.01)
    frame = (await read_frames(source, 2))[1]
    assert frame.shape == (480,)
    assert level_dbfs(frame)[0] == pytest.approx(level_dbfs(tone(0.02))[0], abs=0.5)


async def test_wav_source_with_loop_never_runs_out(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "short.wav", tone(0.02, rate=8_000), 8_000)
    frames = await read_frames(WavFileSource(path, loop=True), 3)
    assert all(np.array_equal(frame, frames[0]) for frame in frames)


async def test_wav_source_reads_a_float_wav_that_the_stdlib_cannot(tmp_path: Path) -> None:
    path = tmp_path / "float.wav"
    samples = (tone(0.1, amplitude=0.5, rate=8_000) / 32768).astype(np.float32)
    with av.open(str(path), "w", format="wav") as container:
        stream = container.add_stream("pcm_f32le", rate=8_000, layout="mono")
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="flt", layout="mono")
        frame.sample_rate = 8_000
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    with pytest.raises(wave.Error):
        wave.open(str(path)).close()
    source = WavFileSource(path)
    assert source.sample_rate == 8_000
    played = np.concatenate(await read_frames(source, 5))
    assert np.abs(played.astype(np.int32) - tone(0.1, amplitude=0.5, rate=8_000)).max() <= 2


def test_missing_wav_file_raises_configuration_error_naming_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.wav"
    with pytest.raises(ConfigurationError) as caught:
        WavFileSource(missing)
    assert str(missing) in caught.value.message
    assert caught.value.code == "invalid_configuration"
    assert not isinstance(caught.value, AudioUnavailableError)  # a typo must not trigger "no audio" fallbacks


def test_file_that_is_not_audio_raises_configuration_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.wav"
    path.write_text("these are not samples\n" * 10)
    with pytest.raises(ConfigurationError, match="not an audio file"):
        WavFileSource(path)


@pytest.mark.espeak
@pytest.mark.skipif(not speech_available(), reason="espeak-ng is not installed (apt-get install espeak-ng)")
async def test_speech_source_speaks_its_text_with_espeak_ng() -> None:
    source = SpeechSource("Testing one two three.", sample_rate=16_000)
    frames = await read_frames(source, 10)
    assert source.engine == "espeak-ng"
    assert {frame.shape for frame in frames} == {(320,)}
    assert 0.5 < source.duration < 3.0
    assert max(level_dbfs(frame)[1] for frame in frames) > -20


async def test_speech_source_without_espeak_plays_the_shipped_recording() -> None:
    source = SpeechSource(use_espeak=False)
    await source.start()
    assert source.engine == "recording"
    assert source.text == HELLO_TEXT
    assert 3.0 < source.duration < 5.0
    frames = await read_frames(source, 25)
    assert max(level_dbfs(frame)[0] for frame in frames) > -30  # somebody is speaking in the first half second


def test_shipped_recording_is_a_small_24khz_mono_pcm16_wav() -> None:
    path = DATA / "hello.wav"
    assert path.stat().st_size <= 200_000
    with wave.open(str(path)) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (24_000, 1, 2)
    assert load_hello(48_000).size == pytest.approx(2 * load_hello().size, abs=50)


async def test_closed_source_refuses_to_read() -> None:
    source = ToneSource()
    await source.read()
    await source.close()
    with pytest.raises(RuntimeError, match="closed"):
        await source.read()


async def test_every_source_satisfies_the_audio_source_protocol(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "a.wav", tone(0.02), 24_000)
    sources = [
        ToneSource(),
        SilenceSource(),
        PcmSource(tone(0.02), 24_000),
        WavFileSource(path),
        SpeechSource(use_espeak=False),
        MicrophoneSource(),
    ]
    assert all(isinstance(source, AudioSource) for source in sources)


def _portaudio_devices(kind: str) -> list[Any] | None:
    """This machine's PortAudio devices with ``kind`` channels, or None without PortAudio."""
    try:
        import sounddevice as sd
    except OSError:
        return None
    return [device for device in sd.query_devices() if device[f"max_{kind}_channels"] > 0]


def _assert_workshop_message(err: AudioUnavailableError) -> None:
    assert err.hint
    for leak in ("Traceback", "PortAudioError", "\n", "Error querying device"):
        assert leak not in err.message


def test_microphone_on_a_machine_without_input_devices_raises_microphone_unavailable(
    without_sound_devices: dict[str, Any],
) -> None:
    error = without_sound_devices["microphone"]
    assert error["class"] == "MicrophoneUnavailableError" and error["code"] == "microphone_unavailable", error
    assert "no microphone found" in error["message"].lower()
    assert "SpeechSource" in (error["hint"] or "")
    for leak in ("Traceback", "PortAudioError", "\n", "Error querying device"):
        assert leak not in error["message"]


async def test_microphone_with_an_unknown_device_name_says_nothing_matches() -> None:
    if _portaudio_devices("input") is None:
        pytest.skip("PortAudio is not installed (apt-get install libportaudio2)")
    with pytest.raises(MicrophoneUnavailableError, match="No microphone matches device='no-such-mic'") as caught:
        await MicrophoneSource(device="no-such-mic").start()
    _assert_workshop_message(caught.value)


def test_microphone_without_portaudio_raises_typed_error_with_install_hint(without_portaudio: dict[str, Any]) -> None:
    error = without_portaudio["microphone"]
    assert error["class"] == "MicrophoneUnavailableError"
    assert error["code"] == "microphone_unavailable"
    assert "PortAudio" in error["message"] and "\n" not in error["message"]
    assert "apt-get install libportaudio2" in error["hint"]


def test_microphone_records_20ms_frames_from_a_virtual_alsa_device(virtual_devices: dict[str, Any]) -> None:
    mic = virtual_devices["microphone"]
    assert "code" not in mic, mic
    assert mic["sizes"] == [960]
    assert mic["dtypes"] == ["int16"]
    assert mic["peak"] > 1_000  # the "microphone" plays the shipped recording


def test_portaudio_busy_and_permission_errors_become_typed_microphone_errors() -> None:
    try:
        import sounddevice as sd
    except OSError:
        pytest.skip("PortAudio is not installed (apt-get install libportaudio2)")
    from rtkit.audio._portaudio import open_error

    busy = sd.PortAudioError("Error opening InputStream: Device unavailable [PaErrorCode -9985]", -9985)
    err = open_error(busy, "input", "USB Mic", 48_000)
    assert type(err) is MicrophoneUnavailableError
    assert "busy" in err.message
    denied = sd.PortAudioError(
        "Error opening InputStream: Unanticipated host error [PaErrorCode -9999]: 'Permission denied' [ALSA error -13]",
        -9999,
    )
    assert isinstance(open_error(denied, "input", "USB Mic", 48_000), MicrophoneDeniedError)
    rate = sd.PortAudioError("Error opening InputStream: Invalid sample rate [PaErrorCode -9997]", -9997)
    assert "cannot run at 48000 Hz" in open_error(rate, "input", "USB Mic", 48_000).message
