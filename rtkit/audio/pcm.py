"""PCM16 mono at 24 kHz is the Realtime API's audio currency; these helpers measure and make it.

Framing, pacing and resampling live in ``rtkit.audio.media``.
"""

from __future__ import annotations

import av
import numpy as np
import numpy.typing as npt

#: The API's PCM rate (``audio/pcm``, 24 kHz, mono, 16-bit little-endian).
REALTIME_RATE = 24_000

PCM = npt.NDArray[np.int16]


def pcm_from_frame(frame: av.AudioFrame) -> PCM:
    """Interleaved samples of an s16 frame as one flat array (no resampling)."""
    return frame.to_ndarray().reshape(-1).astype(np.int16, copy=False)


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


def frame_levels_dbfs(pcm: PCM, rate: int = REALTIME_RATE, frame_ms: int = 20) -> npt.NDArray[np.float64]:
    """RMS dBFS of each whole ``frame_ms`` frame of ``pcm`` (a trailing partial frame is left out), the measure of
    ``level_dbfs`` for a whole recording in one numpy pass; a silent frame is -inf."""
    frame = rate * frame_ms // 1000
    if frame <= 0:
        raise ValueError(f"a {frame_ms} ms frame at {rate} Hz holds no sample")
    count = pcm.size // frame
    frames = pcm[: count * frame].reshape(count, frame).astype(np.float64) / 32768.0
    rms = np.sqrt(np.mean(frames * frames, axis=1))
    with np.errstate(divide="ignore"):
        return np.asarray(20 * np.log10(rms), dtype=np.float64)


def tone(seconds: float, frequency: float = 440.0, amplitude: float = 0.3, rate: int = REALTIME_RATE) -> PCM:
    """A sine tone: the simplest audible, measurable signal."""
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * 32767 * np.sin(2 * np.pi * frequency * t)).astype(np.int16)
