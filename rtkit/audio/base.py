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
