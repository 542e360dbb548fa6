"""Audio for sessions: sources and sinks in 20 ms PCM16 frames, level meters, and the helpers beneath them.

Sources (``ToneSource``, ``WavFileSource``, ``SpeechSource``, ``MicrophoneSource``, ...) feed a session;
sinks (``RecorderSink``, ``SpeakerSink``, ``NullSink``) take what it plays; any of them can be metered.
"""

from rtkit.audio.base import FRAME_MS, AudioSink, AudioSource, PlayoutSink
from rtkit.audio.media import Resampler, frames_from_pcm, resample
from rtkit.audio.meter import Level, LevelMeter, MeteredSink, MeteredSource
from rtkit.audio.pcm import PCM, REALTIME_RATE, level_dbfs, pcm_from_frame, tone
from rtkit.audio.sinks import NullSink, RecorderSink, SpeakerSink
from rtkit.audio.sources import (
    HELLO_TEXT,
    MicrophoneSource,
    PcmSource,
    SilenceSource,
    SpeechSource,
    ToneSource,
    WavFileSource,
    load_hello,
)
from rtkit.audio.speech import speak, speech_available

__all__ = [
    "FRAME_MS",
    "HELLO_TEXT",
    "PCM",
    "REALTIME_RATE",
    "AudioSink",
    "AudioSource",
    "Level",
    "LevelMeter",
    "MeteredSink",
    "MeteredSource",
    "MicrophoneSource",
    "NullSink",
    "PcmSource",
    "PlayoutSink",
    "RecorderSink",
    "Resampler",
    "SilenceSource",
    "SpeakerSink",
    "SpeechSource",
    "ToneSource",
    "WavFileSource",
    "frames_from_pcm",
    "level_dbfs",
    "load_hello",
    "pcm_from_frame",
    "resample",
    "speak",
    "speech_available",
    "tone",
]
