"""The input audio buffer: what the client appended (or the microphone track sent) and not yet committed.

Positions are in ms of the *input stream* (every sample since the session began), the clock the VAD, the
``audio_start_ms``/``audio_end_ms`` fields and ``idle_timeout_ms`` all count on, so the same audio gives the
same events whether it arrives paced (WebRTC) or in a burst (WebSocket). No I/O.
"""

from __future__ import annotations

import numpy as np

from rtkit.audio.formats import StreamDecoder, WireFormat
from rtkit.audio.pcm import PCM, REALTIME_RATE
from rtkit.emulator.vad import EnergyVad, VadEvent

__all__ = ["SAMPLES_PER_MS", "InputBuffer", "ms"]

SAMPLES_PER_MS = REALTIME_RATE // 1000


def ms(samples: int) -> int:
    return samples // SAMPLES_PER_MS


class InputBuffer:
    """Buffered input audio (24 kHz PCM), its place in the input stream, and the VAD that listens to it."""

    def __init__(self) -> None:
        self.vad = EnergyVad()
        self._chunks: list[PCM] = []
        #: Samples buffered now.
        self.samples = 0
        #: Input-stream position of the buffer's first sample.
        self._start_ms = 0
        #: Every sample ever appended.
        self._stream_samples = 0
        #: Appended audio in the session's input format -> 24 kHz PCM (a G.711 decoder keeps resampler state).
        self._decoder: StreamDecoder | None = None

    @property
    def stream_ms(self) -> int:
        """The input stream's length: the position of the next sample."""
        return ms(self._stream_samples)

    def decode(self, data: bytes, fmt: WireFormat) -> PCM:
        """``input_audio_buffer.append``'s bytes, in the session's input format, to 24 kHz PCM."""
        if self._decoder is None or self._decoder.format != fmt:
            self._decoder = fmt.decoder()
        return self._decoder.feed(data)

    def append(self, pcm: PCM, *, listen: bool) -> list[VadEvent]:
        """Buffer ``pcm``; with ``listen`` (server or semantic VAD on), what the VAD heard in it."""
        self._chunks.append(pcm)
        self.samples += pcm.size
        self._stream_samples += pcm.size
        return self.vad.feed(pcm) if listen else []

    def trim(self, start_ms: int) -> None:
        """Drop buffered audio before ``start_ms`` (the VAD's prefix padding keeps what precedes speech)."""
        pcm = self._all()
        drop = max(0, (start_ms - self._start_ms) * SAMPLES_PER_MS)
        kept = pcm[drop:]
        self._chunks = [kept] if kept.size else []
        self.samples = kept.size
        self._start_ms = start_ms if drop else self._start_ms

    def take(self, upto_ms: int | None) -> PCM:
        """Remove and return the buffered audio up to ``upto_ms`` of the input stream (all of it with None)."""
        buffered = self._all()
        cut = buffered.size if upto_ms is None else max(0, (upto_ms - self._start_ms) * SAMPLES_PER_MS)
        pcm, rest = buffered[:cut], buffered[cut:]
        self._chunks = [rest] if rest.size else []
        self.samples = rest.size
        self._start_ms += ms(pcm.size)
        return pcm

    def clear(self) -> None:
        """``input_audio_buffer.clear``: nothing buffered, the VAD and the decoder start afresh."""
        self._chunks, self.samples = [], 0
        self._start_ms = self.stream_ms
        self.vad.reset()
        self._decoder = None

    def _all(self) -> PCM:
        return np.concatenate(self._chunks) if self._chunks else np.zeros(0, dtype=np.int16)
