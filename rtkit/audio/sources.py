"""Where a session's outgoing audio comes from: synthetic signals, files, spoken text, or a microphone.

Every source hands out 20 ms frames of mono int16 at its own ``sample_rate``. Sources whose samples are
already in memory pace themselves on the event loop's clock (``rtkit.audio.media.Pacer``), so a file
reaches the API at the speed a person would have spoken it; the microphone is paced by its hardware.
"""

from __future__ import annotations

import asyncio
import collections
import io
import logging
import wave
from importlib import resources
from os import PathLike
from pathlib import Path
from typing import Any, Literal

import av
import numpy as np

from rtkit.audio import _portaudio
from rtkit.audio.media import Pacer, frame_samples, resample, resample_frames
from rtkit.audio.pcm import PCM, REALTIME_RATE
from rtkit.audio.speech import speak, speech_available
from rtkit.errors import AudioUnavailableError, ConfigurationError, MicrophoneUnavailableError

__all__ = [
    "HELLO_TEXT",
    "MicrophoneSource",
    "PcmSource",
    "SilenceSource",
    "SpeechSource",
    "ToneSource",
    "WavFileSource",
    "load_hello",
]

log = logging.getLogger("rtkit")

#: The sentence in the shipped recording that ``SpeechSource`` plays when espeak-ng is unavailable.
HELLO_TEXT = "Hello from the realtime kit. What is the weather like in Paris today?"

# A running microphone delivers a frame every 20 ms; this long without one means the device went away.
_MICROPHONE_STALL_SECONDS = 2.0


class _PacedSource:
    """Shared machinery of the in-memory sources: frame size, pacing, and closing."""

    sample_rate: int

    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self._frame = frame_samples(sample_rate)
        self._pacer = Pacer()
        self._closed = False

    async def start(self) -> None:
        """Nothing to open: the clock starts at the first ``read()``."""

    async def read(self) -> PCM:
        if self._closed:
            raise RuntimeError(f"{type(self).__name__} is closed; create a new one to read again")
        await self._pacer.wait()
        return self._next_frame()

    async def close(self) -> None:
        self._closed = True

    def _next_frame(self) -> PCM:
        raise NotImplementedError


class SilenceSource(_PacedSource):
    """Digital silence in real time: keeps a call open (and the server's VAD fed) while nobody speaks."""

    def __init__(self, sample_rate: int = REALTIME_RATE) -> None:
        super().__init__(sample_rate)

    def _next_frame(self) -> PCM:
        return np.zeros(self._frame, dtype=np.int16)


class ToneSource(_PacedSource):
    """A sine wave with continuous phase across frames: audible, and exactly measurable (RMS = peak − 3 dB).

    With ``seconds`` it plays that long and then silence, so ``finished`` tells when it is done.
    """

    def __init__(
        self,
        frequency: float = 440.0,
        amplitude: float = 0.3,
        seconds: float | None = None,
        sample_rate: int = REALTIME_RATE,
    ) -> None:
        super().__init__(sample_rate)
        if not 0.0 <= amplitude <= 1.0:
            raise ConfigurationError(f"amplitude={amplitude} is outside 0..1 (1 is full scale).")
        self.frequency = frequency
        self.amplitude = amplitude
        self.seconds = seconds
        self._total = None if seconds is None else round(seconds * sample_rate)
        self._position = 0

    @property
    def finished(self) -> bool:
        return self._total is not None and self._position >= self._total

    def _next_frame(self) -> PCM:
        n = np.arange(self._position, self._position + self._frame)
        t = n / self.sample_rate  # same arithmetic as pcm.tone(), so frames join into exactly that signal
        frame = (self.amplitude * 32767 * np.sin(2 * np.pi * self.frequency * t)).astype(np.int16)
        if self._total is not None:
            frame[n >= self._total] = 0
        self._position += self._frame
        return frame


class PcmSource(_PacedSource):
    """Plays a buffer in real time after ``lead_seconds`` of silence, once (or forever with ``loop``), then silence.

    The lead gives a server-side VAD a quiet stretch to calibrate on before speech starts.
    """

    def __init__(self, pcm: PCM, sample_rate: int, lead_seconds: float = 0.0, *, loop: bool = False) -> None:
        super().__init__(sample_rate)
        if lead_seconds < 0:
            raise ConfigurationError(f"lead_seconds={lead_seconds} is negative.")
        self.loop = loop
        self._lead = round(lead_seconds * sample_rate)
        self._lead_left = self._lead
        self._pcm = _as_mono_int16(pcm)
        self._position = 0

    @property
    def pcm(self) -> PCM:
        """The audio it plays (after its lead), as mono PCM16 at ``sample_rate``."""
        return self._pcm

    @property
    def duration(self) -> float:
        """Seconds of audio in one pass, lead included."""
        return (self._lead + self._pcm.size) / self.sample_rate

    @property
    def finished(self) -> bool:
        """True once the whole buffer has been handed out (never for a looping source)."""
        return not self.loop and self._lead_left == 0 and self._position >= self._pcm.size

    def _next_frame(self) -> PCM:
        frame = np.zeros(self._frame, dtype=np.int16)
        filled = min(self._lead_left, self._frame)
        self._lead_left -= filled
        while filled < self._frame:
            if self._position >= self._pcm.size:
                if not (self.loop and self._pcm.size):
                    break
                self._position = 0
            take = min(self._frame - filled, self._pcm.size - self._position)
            frame[filled : filled + take] = self._pcm[self._position : self._position + take]
            filled += take
            self._position += take
        return frame


class WavFileSource(PcmSource):
    """A WAV file (any rate, width or channel count) played as mono int16 in real time.

    The file is read whole when the source is built, so a wrong path fails at once with
    ``ConfigurationError`` — a caller's mistake, not a missing device, so ``except AudioUnavailableError``
    fallbacks do not hide it. The native rate is kept unless ``sample_rate`` asks for another (or the
    native one cannot make 20 ms frames, e.g. 11025 Hz, in which case it becomes 24 kHz).
    """

    def __init__(
        self,
        path: str | PathLike[str],
        loop: bool = False,
        *,
        sample_rate: int | None = None,
        lead_seconds: float = 0.0,
    ) -> None:
        self.path = Path(path)
        pcm, native_rate = _read_audio_file(self.path)
        if sample_rate is None:
            sample_rate = native_rate if native_rate % 50 == 0 else REALTIME_RATE
        frame_samples(sample_rate)  # refuse a bad rate before spending time resampling
        super().__init__(resample(pcm, native_rate, sample_rate), sample_rate, lead_seconds, loop=loop)


class SpeechSource(PcmSource):
    """``text`` spoken by espeak-ng, or the shipped recording of ``HELLO_TEXT`` where espeak-ng is missing.

    Speech is synthesised in ``start()`` (or the first ``read()``); ``engine`` then says which voice it is.
    ``use_espeak=False`` forces the recording, which is also what a machine without espeak-ng gets.
    """

    def __init__(
        self,
        text: str = HELLO_TEXT,
        *,
        use_espeak: bool = True,
        voice: str = "en-us",
        words_per_minute: int = 160,
        sample_rate: int = REALTIME_RATE,
        lead_seconds: float = 0.0,
    ) -> None:
        super().__init__(np.zeros(0, dtype=np.int16), sample_rate, lead_seconds)
        self.text = text
        self.use_espeak = use_espeak
        self.voice = voice
        self.words_per_minute = words_per_minute
        self.engine: Literal["espeak-ng", "recording"] | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        async with self._lock:
            if self.engine is not None:
                return
            if self.use_espeak and speech_available():
                try:
                    self._pcm = await speak(
                        self.text, voice=self.voice, words_per_minute=self.words_per_minute, rate=self.sample_rate
                    )
                    self.engine = "espeak-ng"
                    return
                except AudioUnavailableError as err:
                    log.warning("%s; SpeechSource plays the shipped recording instead", err)
            if self.text != HELLO_TEXT:
                log.warning("SpeechSource plays the shipped recording of %r instead of %r", HELLO_TEXT, self.text)
            self._pcm = load_hello(self.sample_rate)
            self.engine = "recording"

    async def read(self) -> PCM:
        if self.engine is None and not self._closed:
            await self.start()
        return await super().read()


def load_hello(sample_rate: int = REALTIME_RATE) -> PCM:
    """The shipped recording of ``HELLO_TEXT`` (espeak-ng, 24 kHz) as mono int16 at ``sample_rate``."""
    data = resources.files("rtkit.audio").joinpath("data", "hello.wav").read_bytes()
    with wave.open(io.BytesIO(data)) as wav:
        pcm, rate = _pcm_from_wave(wav)
    return resample(pcm, rate, sample_rate)


class MicrophoneSource:
    """An input device through PortAudio, in 20 ms frames paced by its hardware.

    PortAudio calls back on its own thread; each frame goes into a bounded deque that drops the oldest
    when the loop falls behind (``dropped_frames`` counts them), and the loop is only woken with
    ``call_soon_threadsafe`` — so a busy loop never stalls the audio thread and memory stays bounded.
    Opening happens in ``start()`` on a worker thread; failures raise ``MicrophoneUnavailableError``
    (or its ``MicrophoneDeniedError``) with a hint.
    """

    sample_rate: int

    def __init__(
        self, device: int | str | None = None, sample_rate: int = 48_000, *, max_queued_frames: int = 50
    ) -> None:
        self.device = device
        self.sample_rate = sample_rate
        self._frame = frame_samples(sample_rate)
        #: PortAudio's name for the opened device, once ``start()`` has succeeded.
        self.device_name: str | None = None
        #: Frames thrown away because the reader fell more than ``max_queued_frames`` behind.
        self.dropped_frames = 0
        #: Times PortAudio reported that the device itself overflowed (audio lost before rtkit saw it).
        self.overflows = 0
        self._frames: collections.deque[PCM] = collections.deque(maxlen=max_queued_frames)
        self._ready = asyncio.Event()
        self._wake_pending = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stream: Any = None
        self._closed = False

    async def __aenter__(self) -> MicrophoneSource:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self) -> None:
        if self._closed:
            raise RuntimeError("MicrophoneSource is closed; create a new one to record again")
        if self._stream is None:
            self._loop = asyncio.get_running_loop()
            self._stream = await asyncio.to_thread(self._open)

    def _open(self) -> Any:
        # PortAudio guarantees every callback gets exactly ``blocksize`` frames, so one callback is one frame.
        stream, self.device_name = _portaudio.open_stream(
            "input", self.device, self.sample_rate, self._on_audio, blocksize=self._frame
        )
        return stream

    def _on_audio(self, indata: Any, frames: int, time: Any, status: Any) -> None:
        # Runs on PortAudio's thread: no awaiting, no locks held for long, nothing that can block.
        if status.input_overflow:
            self.overflows += 1
        if len(self._frames) == self._frames.maxlen:
            self.dropped_frames += 1
        self._frames.append(indata[:, 0].copy())
        if not self._wake_pending and self._loop is not None:
            self._wake_pending = True
            try:
                self._loop.call_soon_threadsafe(self._wake)
            except RuntimeError:  # the loop has closed under a still-running stream; close() stops it
                pass

    def _wake(self) -> None:
        self._wake_pending = False
        self._ready.set()

    async def read(self) -> PCM:
        if self._stream is None and not self._closed:
            await self.start()
        while not self._frames:
            if self._closed:
                break
            self._ready.clear()
            if self._frames:
                break
            try:
                await asyncio.wait_for(self._ready.wait(), _MICROPHONE_STALL_SECONDS)
            except TimeoutError:
                raise MicrophoneUnavailableError(
                    f"The microphone {self.device_name!r} stopped delivering audio.",
                    hint="check that it is still connected, then create a new MicrophoneSource",
                ) from None
        if self._closed:
            raise RuntimeError("MicrophoneSource is closed; create a new one to record again")
        return self._frames.popleft()

    async def close(self) -> None:
        self._closed = True
        self._ready.set()
        stream, self._stream = self._stream, None
        if stream is not None:
            await asyncio.to_thread(stream.close, ignore_errors=True)


def _as_mono_int16(pcm: PCM) -> PCM:
    array = np.asarray(pcm)
    if array.dtype != np.int16 or array.ndim != 1:
        raise ConfigurationError(
            f"Expected mono int16 PCM (a 1-D numpy.int16 array), got {array.dtype} with shape {array.shape}.",
            hint="convert floats with (x * 32767).astype(numpy.int16) and mix channels down first",
        )
    return array


def _read_audio_file(path: Path) -> tuple[PCM, int]:
    """Mono int16 samples and the native rate of an audio file: stdlib ``wave`` for PCM, PyAV for the rest."""
    if not path.is_file():
        raise ConfigurationError(
            f"No audio file at {path}.", hint=f"check the path; relative paths start from {Path.cwd()}"
        )
    try:
        with wave.open(str(path), "rb") as wav:
            return _pcm_from_wave(wav)
    except (wave.Error, EOFError):
        pass  # not plain integer PCM (float samples, WAVE_FORMAT_EXTENSIBLE, another format): PyAV decodes it
    except OSError as err:
        raise ConfigurationError(f"Cannot read {path}: {err.strerror or err}.") from err
    try:
        return _decode_with_av(path)
    except (av.FFmpegError, OSError) as err:
        raise ConfigurationError(
            f"{path} is not an audio file rtkit can read.",
            hint="convert it to WAV, e.g. `sox in.xyz -r 24000 -c 1 -b 16 out.wav`",
        ) from err


def _pcm_from_wave(wav: wave.Wave_read) -> tuple[PCM, int]:
    width, channels = wav.getsampwidth(), wav.getnchannels()
    raw = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.uint8)
    if width == 1:  # 8-bit WAV is unsigned
        samples = ((raw.astype(np.int16) - 128) << 8).astype(np.int16)
    else:  # little-endian signed: the two most significant bytes of each sample are its 16-bit value
        samples = np.ascontiguousarray(raw.reshape(-1, width)[:, width - 2 :]).view("<i2").reshape(-1)
    if channels > 1:
        mixed = samples.reshape(-1, channels).astype(np.int32).sum(axis=1) // channels
        samples = mixed.astype(np.int16)
    return samples.astype(np.int16, copy=False), wav.getframerate()


def _decode_with_av(path: Path) -> tuple[PCM, int]:
    with av.open(str(path)) as container:
        if not container.streams.audio:
            raise ConfigurationError(f"{path} has no audio in it.")
        stream = container.streams.audio[0]
        rate = stream.rate
        return resample_frames(container.decode(stream), rate), rate
