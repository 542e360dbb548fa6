"""PCM16 mono at 24 kHz is the Realtime API's audio currency; these helpers convert to and from it.

Resampling goes through PyAV (FFmpeg's swresample), which aiortc already depends on.
"""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import numpy.typing as npt

#: The API's PCM rate (``audio/pcm``, 24 kHz, mono, 16-bit little-endian).
REALTIME_RATE = 24_000

PCM = npt.NDArray[np.int16]


class Resampler:
    """Converts any ``av.AudioFrame`` (e.g. aiortc's 48 kHz stereo Opus output) to mono s16 at ``rate``."""

    def __init__(self, rate: int = REALTIME_RATE) -> None:
        self.rate = rate
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)

    def convert(self, frame: av.AudioFrame) -> PCM:
        chunks: list[PCM] = [f.to_ndarray().reshape(-1).astype(np.int16) for f in self._resampler.resample(frame)]
        if not chunks:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate(chunks).astype(np.int16, copy=False)


def resample(pcm: PCM, from_rate: int, to_rate: int = REALTIME_RATE) -> PCM:
    """Resample a whole mono buffer (files, synthesized speech); streaming code uses ``Resampler``."""
    if from_rate == to_rate or pcm.size == 0:
        return pcm
    resampler = Resampler(to_rate)
    frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = from_rate
    out = [resampler.convert(frame)]
    flushed = resampler._resampler.resample(None)
    out.extend(f.to_ndarray().reshape(-1).astype(np.int16) for f in flushed)
    return np.concatenate(out).astype(np.int16, copy=False)


def pcm_from_frame(frame: av.AudioFrame) -> PCM:
    """Interleaved samples of an s16 frame as one flat array (no resampling)."""
    return frame.to_ndarray().reshape(-1).astype(np.int16, copy=False)


def frames_from_pcm(pcm: PCM, rate: int = REALTIME_RATE, frame_ms: int = 20, pts: int = 0) -> list[av.AudioFrame]:
    """Cut mono PCM into ``frame_ms`` frames (zero-padding the last one) with running timestamps."""
    size = rate * frame_ms // 1000
    padded = np.zeros(-(-pcm.size // size) * size, dtype=np.int16)
    padded[: pcm.size] = pcm
    frames = []
    for start in range(0, padded.size, size):
        frame = av.AudioFrame.from_ndarray(padded[start : start + size].reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = rate
        frame.pts = pts + start
        frame.time_base = Fraction(1, rate)
        frames.append(frame)
    return frames


def level_dbfs(pcm: PCM) -> tuple[float, float]:
    """(RMS, peak) of a PCM16 buffer in dBFS; silence is -inf, full scale 0."""
    if pcm.size == 0:
        return float("-inf"), float("-inf")
    samples = pcm.astype(np.float64) / 32768.0
    rms = float(np.sqrt(np.mean(samples * samples)))
    peak = float(np.max(np.abs(samples)))
    with np.errstate(divide="ignore"):
        return float(20 * np.log10(rms)) if rms > 0 else float("-inf"), (
            float(20 * np.log10(peak)) if peak > 0 else float("-inf")
        )


def tone(seconds: float, frequency: float = 440.0, amplitude: float = 0.3, rate: int = REALTIME_RATE) -> PCM:
    """A sine tone: the simplest audible, measurable signal."""
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * 32767 * np.sin(2 * np.pi * frequency * t)).astype(np.int16)
