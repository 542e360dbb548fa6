"""Taps: a session's source and sink wrapped so that a recorder sees every frame that went through them.

One mechanism for every recorder (``rtkit.cassette`` keeps replies and the user's audio for replay,
``rtkit.recording`` lays both sides on the call's clock): a tap is put in front of the session's source or
sink, passes everything on unchanged, and tells its listener. Taps stack (each keeps the one it wraps as
``source``/``sink``), so two recorders can follow one call.

A ``SinkTap`` is itself a ``PlayoutSink``: a barge-in's ``discard_unplayed()`` goes through it, so a recorder
learns how much of what it saw written was never heard. In front of a sink that cannot say what it played
(or of none), the tap counts what was written as played, which is what the session assumes of such sinks.
"""

from __future__ import annotations

from collections.abc import Callable

from rtkit.audio.base import AudioSink, AudioSource, PlayoutSink
from rtkit.audio.pcm import PCM, REALTIME_RATE

__all__ = ["SinkTap", "SourceTap"]


def _playout(sink: AudioSink | None) -> PlayoutSink | None:
    while sink is not None:
        if isinstance(sink, PlayoutSink):
            return sink
        sink = getattr(sink, "sink", None)
    return None


class SinkTap:
    """In front of a session's sink (or in place of none): ``on_write(pcm, rate)`` sees every frame written,
    ``on_discard(samples)`` how many of them a barge-in dropped unplayed (counted from the end)."""

    def __init__(
        self,
        sink: AudioSink | None,
        on_write: Callable[[PCM, int], None],
        on_discard: Callable[[int], None] | None = None,
    ) -> None:
        #: The wrapped sink: ``barge_in.playout_sink`` and ``stop()``-style unwrapping look for it.
        self.sink = sink
        self.sample_rate = sink.sample_rate if sink is not None else REALTIME_RATE
        self._on_write = on_write
        self._on_discard = on_discard
        self._written = 0

    async def start(self) -> None:
        if self.sink is not None:
            await self.sink.start()

    def write(self, pcm: PCM) -> None:
        self._on_write(pcm, self.sample_rate)
        self._written += int(pcm.size)
        if self.sink is not None:
            self.sink.write(pcm)

    @property
    def written_samples(self) -> int:
        inner = _playout(self.sink)
        return inner.written_samples if inner is not None else self._written

    @property
    def played_samples(self) -> int:
        inner = _playout(self.sink)
        return inner.played_samples if inner is not None else self._written

    def discard_unplayed(self) -> int:
        inner = _playout(self.sink)
        dropped = inner.discard_unplayed() if inner is not None else 0
        if dropped and self._on_discard is not None:
            self._on_discard(dropped)
        return dropped

    async def close(self) -> None:
        if self.sink is not None:
            await self.sink.close()


class SourceTap:
    """In front of a session's source: ``on_read(pcm, rate)`` sees every frame the transport read (sent)."""

    def __init__(self, source: AudioSource, on_read: Callable[[PCM, int], None]) -> None:
        #: The wrapped source, put back when the recorder stops.
        self.source = source
        self.sample_rate = source.sample_rate
        self._on_read = on_read

    async def start(self) -> None:
        await self.source.start()

    async def read(self) -> PCM:
        pcm = await self.source.read()
        self._on_read(pcm, self.sample_rate)
        return pcm

    async def close(self) -> None:
        await self.source.close()
