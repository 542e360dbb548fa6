"""The Realtime API's three audio formats on the wire, to and from the 24 kHz PCM16 the kit works in.

``audio/pcm`` is PCM16 mono little-endian at 24 kHz; ``audio/pcmu`` and ``audio/pcma`` are G.711 µ-law and
A-law (ITU-T G.711) at 8 kHz, one byte a sample. G.711 is coded by the standard library's ``audioop`` (the
``audioop-lts`` backport on Python 3.13+, where the stdlib module is gone); 8 <-> 24 kHz goes through
``rtkit.audio.media``, like every other rate change in rtkit. Lengths are exact: a G.711 byte is three
24 kHz samples, so a position in ms means the same thing in every format.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np

from rtkit.audio.media import Resampler, resample
from rtkit.audio.pcm import PCM, REALTIME_RATE

with warnings.catch_warnings():
    # Deprecated in 3.11-3.12 and removed in 3.13, where the audioop-lts dependency provides the same module.
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

__all__ = ["G711_RATE", "FormatType", "StreamDecoder", "WireFormat"]

FormatType = Literal["audio/pcm", "audio/pcmu", "audio/pcma"]

#: G.711's sample rate: 8 kHz, one byte a sample.
G711_RATE = 8_000
_FACTOR = REALTIME_RATE // G711_RATE


def _fit(pcm: PCM, size: int) -> PCM:
    """``pcm`` cut or zero-padded to ``size`` samples (a resampler's flush is off by a sample or so)."""
    if pcm.size >= size:
        return pcm[:size]
    return np.concatenate([pcm, np.zeros(size - pcm.size, dtype=np.int16)])


@dataclass(frozen=True)
class WireFormat:
    """One of the API's audio formats, as named by a session's ``audio.input.format``/``audio.output.format``."""

    type: FormatType = "audio/pcm"

    @classmethod
    def of(cls, config: Mapping[str, Any] | None) -> WireFormat:
        kind = (config or {}).get("type") or "audio/pcm"
        for known in get_args(FormatType):
            if kind == known:
                return cls(known)
        raise ValueError(f"unknown audio format {kind!r}")

    @property
    def g711(self) -> bool:
        return self.type != "audio/pcm"

    @property
    def bytes_per_second(self) -> int:
        return G711_RATE if self.g711 else REALTIME_RATE * 2

    def wire_bytes(self, samples: int) -> int:
        """How many wire bytes carry the first ``samples`` 24 kHz samples of a buffer."""
        return samples // _FACTOR if self.g711 else samples * 2

    def encode(self, pcm: PCM) -> bytes:
        """A whole 24 kHz buffer in this format (G.711: one byte for every three samples)."""
        if not self.g711:
            return pcm.astype("<i2").tobytes()
        narrow = _fit(resample(pcm, REALTIME_RATE, G711_RATE), pcm.size // _FACTOR)
        linear = narrow.astype("<i2").tobytes()
        return audioop.lin2ulaw(linear, 2) if self.type == "audio/pcmu" else audioop.lin2alaw(linear, 2)

    def decode(self, data: bytes) -> PCM:
        """A whole buffer in this format as 24 kHz PCM16 (an odd trailing PCM byte is dropped)."""
        if not self.g711:
            return np.frombuffer(data[: len(data) - len(data) % 2], dtype="<i2").astype(np.int16)
        return _fit(resample(_g711_to_linear(self.type, data), G711_RATE, REALTIME_RATE), len(data) * _FACTOR)

    def decoder(self) -> StreamDecoder:
        return StreamDecoder(self)


def _g711_to_linear(kind: FormatType, data: bytes) -> PCM:
    linear = audioop.ulaw2lin(data, 2) if kind == "audio/pcmu" else audioop.alaw2lin(data, 2)
    return np.frombuffer(linear, dtype="<i2").astype(np.int16)


class StreamDecoder:
    """Wire audio as it arrives, in chunks of any size, to 24 kHz PCM: exactly three samples per G.711 byte
    and one per two PCM bytes, so the samples counted downstream are the wire's own clock.

    The media ``Resampler`` plays swresample's filter delay (2 ms at 8 -> 24 kHz) out as leading silence,
    so the decoded audio runs 2 ms behind the wire, never out of step with it."""

    def __init__(self, fmt: WireFormat) -> None:
        self.format = fmt
        self._odd = b""
        self._resampler = Resampler(REALTIME_RATE) if fmt.g711 else None

    def feed(self, data: bytes) -> PCM:
        if self._resampler is None:
            data, self._odd = self._odd + data, b""
            if len(data) % 2:
                data, self._odd = data[:-1], data[-1:]
            return np.frombuffer(data, dtype="<i2").astype(np.int16)
        if not data:
            return np.zeros(0, dtype=np.int16)
        return self._resampler.push(_g711_to_linear(self.format.type, data), G711_RATE)
