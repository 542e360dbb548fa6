"""rtkit's one media path: PCM cut into 20 ms ``av.AudioFrame``s, paced in real time, resampled as a stream.

Every aiortc track in rtkit (the session's microphone, the emulator's voice, the test probe) and every
in-memory source builds its frames, keeps its schedule and changes its rate here, with PyAV (FFmpeg's
swresample, which aiortc already depends on) used through its public API only.

Tracks that feed an Opus encoder send ``OPUS_RATE`` frames: aiortc's encoder re-frames its input into
960-sample 48 kHz frames through a resampler FIFO, so a 24 kHz frame leaves as a packet one frame (20 ms)
later, while a whole 48 kHz frame passes straight through (aiortc ``codecs/opus.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from fractions import Fraction

import av
import numpy as np

from rtkit.audio.base import FRAME_MS
from rtkit.audio.pcm import PCM, REALTIME_RATE, pcm_from_frame
from rtkit.errors import ConfigurationError

__all__ = [
    "OPUS_RATE",
    "Framer",
    "Pacer",
    "Resampler",
    "frame_samples",
    "frames_from_pcm",
    "resample",
    "resample_frames",
]

#: The rate of Opus's encoder and decoder in aiortc (and of Chromium's capture): frames at this rate
#: pass through aiortc's encoder FIFO without waiting for the next one.
OPUS_RATE = 48_000

_EMPTY = np.zeros(0, dtype=np.int16)


def frame_samples(rate: int, frame_ms: int = FRAME_MS) -> int:
    """Samples in one frame; a rate that cannot make whole frames is refused with a hint."""
    if rate <= 0 or (rate * frame_ms) % 1000:
        raise ConfigurationError(
            f"A sample rate of {rate} Hz cannot be cut into {frame_ms} ms frames.",
            hint="use a multiple of 50 Hz such as 16000, 24000, 44100 or 48000",
        )
    return rate * frame_ms // 1000


def _audio_frame(pcm: PCM, rate: int) -> av.AudioFrame:
    frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = rate
    return frame


def _joined(frames: Iterable[av.AudioFrame]) -> PCM:
    chunks = [pcm_from_frame(f) for f in frames]
    if not chunks:
        return _EMPTY
    return chunks[0] if len(chunks) == 1 else np.concatenate(chunks)


class Framer:
    """Stamps consecutive chunks of one mono stream as ``av.AudioFrame``s: ``pts`` counts samples since
    the stream's first, in a ``1/rate`` time base, as aiortc's RTP sender expects."""

    def __init__(self, rate: int, pts: int = 0) -> None:
        self.rate = rate
        self.pts = pts
        self._time_base = Fraction(1, rate)

    def frame(self, pcm: PCM) -> av.AudioFrame:
        frame = _audio_frame(pcm, self.rate)
        frame.pts = self.pts
        frame.time_base = self._time_base
        self.pts += pcm.size
        return frame


def frames_from_pcm(pcm: PCM, rate: int = REALTIME_RATE, frame_ms: int = FRAME_MS, pts: int = 0) -> list[av.AudioFrame]:
    """Cut mono PCM into ``frame_ms`` frames (zero-padding the last one) with running timestamps."""
    size = frame_samples(rate, frame_ms)
    padded = np.zeros(-(-pcm.size // size) * size, dtype=np.int16)
    padded[: pcm.size] = pcm
    framer = Framer(rate, pts)
    return [framer.frame(padded[start : start + size]) for start in range(0, padded.size, size)]


class Pacer:
    """Releases tick ``n`` at ``start + n * period``; the first at once.

    Scheduling from the start rather than "a period after the last" keeps a long stream from drifting by
    the sleeps' overshoot. A reader more than ``max_lag`` seconds behind (a blocked loop, a paused
    notebook) restarts the schedule instead of getting a burst of overdue ticks; ``None`` always catches up.
    ``clock`` and ``sleep`` default to the running loop's; tests pass fake ones.
    """

    def __init__(
        self,
        period: float = FRAME_MS / 1000,
        *,
        max_lag: float | None = 0.25,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self.period = period
        self.max_lag = max_lag
        self._clock = clock
        self._sleep = sleep
        self._start: float | None = None
        self._released = 0

    async def wait(self) -> None:
        now = self._clock() if self._clock is not None else asyncio.get_running_loop().time()
        if self._start is None:
            self._start, self._released = now, 1
            return
        due = self._start + self._released * self.period
        if self.max_lag is not None and now - due > self.max_lag:
            self._start, self._released = now, 1
            return
        self._released += 1
        if due > now:
            await self._sleep(due - now)


class Resampler:
    """Streaming conversion of audio to mono s16 at ``rate``, with an exact sample count.

    Each chunk in gives ``len * rate / its rate`` samples out, counted over the whole stream, so a 20 ms
    frame in is a 20 ms frame out and downstream sample counts stay the sender's clock. swresample holds
    back its filter delay (2 ms at 8 -> 24 kHz, under 1 ms between 24 and 48 kHz); that is played out once
    as leading silence, so the output runs that much behind the input and never waits for the next chunk
    (streamed output is otherwise sample for sample what ``resample`` makes of the whole buffer).
    ``flush()`` returns the held tail at the end of a stream; a change of input rate or layout starts a
    new stream. Same-rate mono s16 passes through untouched.
    """

    def __init__(self, rate: int = REALTIME_RATE) -> None:
        self.rate = rate
        self._resampler: av.AudioResampler | None = None
        self._source: tuple[int, str, str] | None = None
        self._in = 0
        self._out = 0
        self._flowing = False
        self._held = _EMPTY

    def push(self, pcm: PCM, rate: int) -> PCM:
        """The next chunk of mono int16 at ``rate``, resampled."""
        if rate == self.rate and self._resampler is None:
            return pcm
        return self.convert(_audio_frame(pcm, rate))

    def convert(self, frame: av.AudioFrame) -> PCM:
        """The next frame of any format, layout and rate (e.g. aiortc's 48 kHz stereo Opus output)."""
        source = (frame.sample_rate, frame.format.name, frame.layout.name)
        if source != self._source:
            self.reset()
            self._source = source
        if self._resampler is None:
            if source == (self.rate, "s16", "mono"):
                return pcm_from_frame(frame)
            self._resampler = av.AudioResampler(format="s16", layout="mono", rate=self.rate)
        produced = _joined(self._resampler.resample(frame))
        self._in += frame.samples
        due = self._in * self.rate // frame.sample_rate - self._out
        ready = np.concatenate([self._held, produced]) if self._held.size else produced
        if ready.size < due and not self._flowing:  # the filter is filling: no real sample has come out yet
            ready = np.concatenate([np.zeros(due - ready.size, dtype=np.int16), ready])
        self._flowing = self._flowing or produced.size > 0
        out, self._held = ready[:due], ready[due:]
        self._out += out.size
        return out

    def flush(self) -> PCM:
        """The stream's tail still held (the filter delay); the next chunk starts a new stream."""
        tail = self._held
        if self._resampler is not None:
            tail = np.concatenate([tail, _joined(self._resampler.resample(None))])
        self.reset()
        return tail

    def reset(self) -> None:
        """Forget the stream (a barge-in cut it): no tail, and the next chunk starts afresh."""
        self._resampler = None
        self._source = None
        self._in = self._out = 0
        self._flowing = False
        self._held = _EMPTY


def resample_frames(frames: Iterable[av.AudioFrame], rate: int) -> PCM:
    """A whole stream of frames (a decoded file) as mono s16 at ``rate``, flushed, aligned with its input."""
    resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
    out = [_joined(resampler.resample(frame)) for frame in frames]
    out.append(_joined(resampler.resample(None)))
    return np.concatenate(out).astype(np.int16, copy=False)


def resample(pcm: PCM, from_rate: int, to_rate: int = REALTIME_RATE) -> PCM:
    """Resample a whole mono buffer (files, synthesized speech); streaming code uses ``Resampler``."""
    if from_rate == to_rate or pcm.size == 0:
        return pcm
    return resample_frames([_audio_frame(pcm, from_rate)], to_rate)
