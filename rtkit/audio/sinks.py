"""Where a session's incoming audio goes: nowhere, into memory, or out of a speaker.

``write()`` never blocks the event loop: the recorder only appends, and the speaker hands samples to
PortAudio's thread through a lock-protected buffer that the sound card drains at its own pace.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
import wave
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from rtkit.audio import _portaudio
from rtkit.audio.pcm import PCM, REALTIME_RATE

__all__ = ["NullSink", "RecorderSink", "SpeakerSink"]


def _samples(pcm: PCM) -> PCM:
    """A private flat int16 copy, so a caller reusing its buffer cannot change audio already written."""
    return np.array(pcm, dtype=np.int16).reshape(-1)


class _Playhead:
    """Where a device without a clock of its own has got to in what it was given.

    Not ``realtime``, audio counts as played when written (over WebRTC it arrives in real time anyway).
    ``realtime``, it plays at ``rate`` from the moment it has something, like a speaker: a WebSocket reply
    arrives faster than that, and the part still queued is what a barge-in silences.
    """

    def __init__(self, rate: int, realtime: bool) -> None:
        self.rate = rate
        self.realtime = realtime
        self.written = 0
        self._played = 0.0
        self._at = time.monotonic()

    def _advance(self) -> None:
        now = time.monotonic()
        if self.realtime:  # an idle device does not bank time: it cannot play what has not come yet
            self._played = min(float(self.written), self._played + (now - self._at) * self.rate)
        else:
            self._played = float(self.written)
        self._at = now

    def write(self, samples: int) -> None:
        self._advance()
        self.written += samples

    @property
    def played(self) -> int:
        self._advance()
        return int(self._played)

    def discard(self) -> int:
        played = self.played
        dropped, self.written, self._played = self.written - played, played, float(played)
        return dropped


class NullSink:
    """Discards audio (counting it), for sessions whose replies nobody needs to hear.

    ``realtime=True`` makes it consume audio at ``sample_rate`` like a speaker, so that ``played_samples``
    and barge-ins behave as they would with one (see ``PlayoutSink``)."""

    sample_rate: int

    def __init__(self, sample_rate: int = REALTIME_RATE, *, realtime: bool = False) -> None:
        self.sample_rate = sample_rate
        #: Samples written so far.
        self.samples = 0
        self._playhead = _Playhead(sample_rate, realtime)

    async def start(self) -> None:
        """Nothing to open."""

    def write(self, pcm: PCM) -> None:
        size = int(np.asarray(pcm).size)
        self.samples += size
        self._playhead.write(size)

    @property
    def written_samples(self) -> int:
        return self._playhead.written

    @property
    def played_samples(self) -> int:
        return self._playhead.played

    def discard_unplayed(self) -> int:
        return self._playhead.discard()

    async def close(self) -> None:
        """Nothing to release."""


class RecorderSink:
    """Keeps everything written, so a test or notebook can listen to, measure or save what the model said.

    ``realtime=True`` plays at ``sample_rate`` like a speaker: audio cut off by a barge-in before its turn
    came is removed from the recording, which then holds what a listener would have heard."""

    sample_rate: int

    def __init__(self, sample_rate: int = REALTIME_RATE, *, realtime: bool = False) -> None:
        self.sample_rate = sample_rate
        self._chunks: list[PCM] = []
        self._playhead = _Playhead(sample_rate, realtime)

    async def start(self) -> None:
        """Nothing to open."""

    def write(self, pcm: PCM) -> None:
        chunk = _samples(pcm)
        self._chunks.append(chunk)
        self._playhead.write(chunk.size)

    @property
    def written_samples(self) -> int:
        return self._playhead.written

    @property
    def played_samples(self) -> int:
        return self._playhead.played

    def discard_unplayed(self) -> int:
        dropped = self._playhead.discard()
        if dropped:
            pcm = self.pcm
            self._chunks = [pcm[: pcm.size - dropped]]
        return dropped

    async def close(self) -> None:
        """Keeps the recording: closing only means nothing more will be written."""

    @property
    def pcm(self) -> PCM:
        """Everything written so far as one mono int16 array."""
        if len(self._chunks) != 1:
            joined = np.concatenate(self._chunks) if self._chunks else np.zeros(0, dtype=np.int16)
            self._chunks = [joined.astype(np.int16, copy=False)]
        return self._chunks[0]

    @property
    def seconds(self) -> float:
        return sum(chunk.size for chunk in self._chunks) / self.sample_rate

    def clear(self) -> None:
        """Forget the recording (what is played from now on is counted on, not from zero)."""
        self._chunks = []

    def save_wav(self, path: str | PathLike[str]) -> Path:
        """Write the recording as a 16-bit mono WAV at ``sample_rate``; returns the path written."""
        target = Path(path)
        with wave.open(str(target), "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(self.sample_rate)
            wav.writeframes(self.pcm.astype("<i2", copy=False).tobytes())
        return target


class _PlaybackBuffer:
    """Samples waiting for the sound card: the loop pushes, PortAudio's thread pulls, a lock keeps them apart.

    The lock is held only to move references and copy one callback's worth of samples, so neither side
    waits noticeably. Past ``max_samples`` the oldest audio is dropped, keeping playback near real time.
    """

    def __init__(self, max_samples: int) -> None:
        self.max_samples = max_samples
        self.dropped = 0
        #: Samples pushed, and samples gone from the buffer (played, dropped or cleared): stream positions.
        self.pushed = 0
        self.consumed = 0
        self._chunks: collections.deque[PCM] = collections.deque()
        self._head = 0  # samples of _chunks[0] already played
        self._size = 0
        self._lock = threading.Lock()

    @property
    def size(self) -> int:
        return self._size

    def push(self, pcm: PCM) -> None:
        if pcm.size == 0:
            return
        with self._lock:
            self._chunks.append(pcm)
            self._size += pcm.size
            self.pushed += pcm.size
            while self._size > self.max_samples:
                excess = self._size - self.max_samples
                left = self._chunks[0].size - self._head
                if left <= excess:
                    self._chunks.popleft()
                    self._head = 0
                    self._size -= left
                    self.dropped += left
                    self.consumed += left
                else:
                    self._head += excess
                    self._size -= excess
                    self.dropped += excess
                    self.consumed += excess

    def pull_into(self, out: PCM) -> int:
        """Fill ``out`` with the next samples and zeros after them (an underrun plays as silence).

        Returns how many samples were real audio.
        """
        filled = 0
        with self._lock:
            while filled < out.size and self._chunks:
                chunk = self._chunks[0]
                take = min(out.size - filled, chunk.size - self._head)
                out[filled : filled + take] = chunk[self._head : self._head + take]
                filled += take
                self._head += take
                if self._head == chunk.size:
                    self._chunks.popleft()
                    self._head = 0
            self._size -= filled
            self.consumed += filled
        out[filled:] = 0
        return filled

    def clear(self) -> int:
        with self._lock:
            dropped, self._size, self._head = self._size, 0, 0
            self.consumed += dropped
            self._chunks.clear()
        return dropped


class SpeakerSink:
    """An output device through PortAudio; written audio plays as soon as the sound card asks for it.

    The Realtime API sends speech faster than real time, so up to ``max_buffer_seconds`` queue here; when
    the user barges in, ``clear()`` silences what has not been played yet. Failures to open raise
    ``SpeakerUnavailableError`` with a hint.
    """

    sample_rate: int

    def __init__(
        self, device: int | str | None = None, sample_rate: int = 48_000, *, max_buffer_seconds: float = 120.0
    ) -> None:
        self.device = device
        self.sample_rate = sample_rate
        #: PortAudio's name for the opened device, once ``start()`` has succeeded.
        self.device_name: str | None = None
        #: Times PortAudio reported the device ran out of audio because a callback came too late.
        self.underflows = 0
        self._buffer = _PlaybackBuffer(round(max_buffer_seconds * sample_rate))
        self._stream: Any = None
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drained = asyncio.Event()

    async def __aenter__(self) -> SpeakerSink:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self) -> None:
        if self._closed:
            raise RuntimeError("SpeakerSink is closed; create a new one to play again")
        if self._stream is None:
            self._loop = asyncio.get_running_loop()
            self._stream = await asyncio.to_thread(self._open)

    def _open(self) -> Any:
        stream, self.device_name = _portaudio.open_stream("output", self.device, self.sample_rate, self._on_playback)
        return stream

    def _on_playback(self, outdata: Any, frames: int, time: Any, status: Any) -> None:
        # Runs on PortAudio's thread: copy what is there, pad with zeros, never wait for the loop.
        if status.output_underflow:
            self.underflows += 1
        if self._buffer.pull_into(outdata[:, 0]) and not self._buffer.size and self._loop is not None:
            try:
                self._loop.call_soon_threadsafe(self._drained.set)
            except RuntimeError:  # the loop has closed under a still-running stream; close() stops it
                pass

    def write(self, pcm: PCM) -> None:
        """Queue audio for playback; audio written after ``close()`` is dropped (a late frame is harmless)."""
        if not self._closed:
            self._buffer.push(_samples(pcm))

    @property
    def buffered_seconds(self) -> float:
        """Audio written but not yet played: how far behind the speaker is."""
        return self._buffer.size / self.sample_rate

    @property
    def dropped_samples(self) -> int:
        """Samples thrown away because more than ``max_buffer_seconds`` were waiting."""
        return self._buffer.dropped

    def clear(self) -> float:
        """Drop audio not yet played (the user interrupted); returns how many seconds were dropped."""
        return self._buffer.clear() / self.sample_rate

    @property
    def written_samples(self) -> int:
        return self._buffer.pushed

    @property
    def played_samples(self) -> int:
        """How far the sound card has got: samples it took, plus any dropped for overflow or cleared."""
        return self._buffer.consumed

    def discard_unplayed(self) -> int:
        return self._buffer.clear()

    async def drain(self) -> None:
        """Wait until everything written has been handed to the sound card (returns at once if not started)."""
        while self._stream is not None and self._buffer.size:
            self._drained.clear()
            if not self._buffer.size:
                break
            await self._drained.wait()

    async def close(self) -> None:
        """Stop at once, discarding unplayed audio; ``await drain()`` first to let it finish."""
        self._closed = True
        self._buffer.clear()
        self._drained.set()
        stream, self._stream = self._stream, None
        if stream is not None:
            await asyncio.to_thread(stream.close, ignore_errors=True)
