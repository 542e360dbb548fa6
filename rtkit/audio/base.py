"""What every audio source and sink promises, so that the session can take any of them.

Audio moves in 20 ms frames of mono PCM16 (``numpy.int16``) at the source's or sink's own rate;
the transports resample (Opus wants 48 kHz, the API's PCM is 24 kHz).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from rtkit.audio.pcm import PCM

FRAME_MS = 20


@runtime_checkable
class AudioSource(Protocol):
    """Produces audio in real time: ``read()`` returns the next 20 ms frame when it is due.

    File-like sources pace themselves on the event loop's clock; a microphone is paced by its hardware.
    After the end of a finite source, ``read()`` returns silence (a call outlives its prompt).
    """

    sample_rate: int

    async def start(self) -> None: ...

    async def read(self) -> PCM: ...

    async def close(self) -> None: ...


@runtime_checkable
class AudioSink(Protocol):
    """Consumes audio: ``write()`` must not block the event loop (devices buffer on their own thread)."""

    sample_rate: int

    async def start(self) -> None: ...

    def write(self, pcm: PCM) -> None: ...

    async def close(self) -> None: ...


@runtime_checkable
class PlayoutSink(AudioSink, Protocol):
    """A sink that knows how much of what it was given has been played, so that a barge-in can tell the
    API what the user heard rather than what arrived. Positions count samples since the sink started.

    ``played_samples`` never passes ``written_samples``; audio dropped unheard (overflow, a barge-in) counts
    as passed. ``discard_unplayed()`` silences what is still queued and returns how many samples it dropped.
    """

    @property
    def written_samples(self) -> int: ...

    @property
    def played_samples(self) -> int: ...

    def discard_unplayed(self) -> int: ...
