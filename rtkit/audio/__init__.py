"""Audio helpers: PCM conversion and resampling, levels, and synthetic speech for tests and demos."""

from rtkit.audio.pcm import (
    REALTIME_RATE,
    Resampler,
    frames_from_pcm,
    level_dbfs,
    pcm_from_frame,
    tone,
)
from rtkit.audio.speech import speak, speech_available

__all__ = [
    "REALTIME_RATE",
    "Resampler",
    "frames_from_pcm",
    "level_dbfs",
    "pcm_from_frame",
    "speak",
    "speech_available",
    "tone",
]
