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


def tone(seconds: float, frequency: float = 440.0, amplitude: float = 0.3, rate: int = REALTIME_RATE) -> PCM:
    """A sine tone: the simplest audible, measurable signal."""
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * 32767 * np.sin(2 * np.pi * frequency * t)).astype(np.int16)
