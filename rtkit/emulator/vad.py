"""Server VAD: an energy detector driven by the session's ``turn_detection`` settings.

Decisions are made on 20 ms windows of the 24 kHz input and timed in *input audio* milliseconds,
so the same audio gives the same events whether it arrives paced (WebRTC) or in a burst
(WebSocket ``input_audio_buffer.append``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from rtkit.audio.pcm import PCM, REALTIME_RATE, frame_levels_dbfs

WINDOW_MS = 20
_WINDOW = REALTIME_RATE * WINDOW_MS // 1000
#: Speech must last this long before it counts, so a click or a cough does not start a turn.
MIN_SPEECH_MS = 60


def threshold_dbfs(threshold: float) -> float:
    """Map the API's 0..1 ``threshold`` onto an RMS level: 0.5 (the default) is -45 dBFS,
    comfortably above Opus-coded room noise and below quiet speech."""
    return -80.0 + 70.0 * threshold


@dataclass(frozen=True)
class VadEvent:
    kind: Literal["speech_started", "speech_stopped"]
    #: Position in the input audio stream, in ms since the session's first sample.
    ms: int


class EnergyVad:
    def __init__(self, threshold: float = 0.5, silence_duration_ms: int = 500) -> None:
        self.threshold_db = threshold_dbfs(threshold)
        self.silence_ms = silence_duration_ms
        self.speaking = False
        self._pending = np.zeros(0, dtype=np.int16)
        self._pos_ms = 0
        self._voiced_run = 0
        self._silent_run = 0

    def configure(self, threshold: float, silence_duration_ms: int) -> None:
        self.threshold_db = threshold_dbfs(threshold)
        self.silence_ms = silence_duration_ms

    def feed(self, pcm: PCM) -> list[VadEvent]:
        self._pending = np.concatenate([self._pending, pcm]) if self._pending.size else pcm
        events: list[VadEvent] = []
        usable = self._pending.size - self._pending.size % _WINDOW
        if usable == 0:
            return events
        levels = frame_levels_dbfs(self._pending[:usable], REALTIME_RATE, WINDOW_MS)
        self._pending = self._pending[usable:]
        for level in levels:
            self._pos_ms += WINDOW_MS
            voiced = level >= self.threshold_db
            if not self.speaking:
                self._voiced_run = self._voiced_run + WINDOW_MS if voiced else 0
                if self._voiced_run >= MIN_SPEECH_MS:
                    self.speaking = True
                    self._silent_run = 0
                    events.append(VadEvent("speech_started", self._pos_ms - self._voiced_run))
            else:
                self._silent_run = 0 if voiced else self._silent_run + WINDOW_MS
                if self._silent_run >= self.silence_ms:
                    self.speaking = False
                    self._voiced_run = 0
                    events.append(VadEvent("speech_stopped", self._pos_ms))
        return events

    def reset(self) -> None:
        self.speaking = False
        self._voiced_run = self._silent_run = 0
