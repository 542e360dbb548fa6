"""PCM16 as MP3, and as an HTML audio player: what a notebook keeps of a sound.

A saved notebook holds its players inline (base64), so the format decides its size: a WAV at 24 kHz is 48 KB a
second per channel, an MP3 at 48 kbit/s 6 KB, and every browser plays MP3. PyAV (already the kit's resampler)
encodes it with libmp3lame.
"""

from __future__ import annotations

import base64
import html
import io

import numpy as np

__all__ = ["audio_player", "encode_mp3"]


def encode_mp3(pcm: np.ndarray, rate: int, kbps: int = 48) -> bytes:
    """Mono ``(n,)`` or stereo ``(n, 2)`` int16 PCM as MP3 (``kbps`` per channel)."""
    import av

    samples = np.asarray(pcm, dtype=np.int16)
    channels = 1 if samples.ndim == 1 else samples.shape[1]
    layout = "mono" if channels == 1 else "stereo"
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp3") as container:
        stream = container.add_stream("libmp3lame", rate=rate)
        stream.bit_rate = kbps * 1000 * channels
        stream.layout = layout
        # Packed s16: one plane, the channels interleaved.
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout=layout)
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()


def audio_player(pcm: np.ndarray, rate: int, label: str) -> str:
    """An HTML ``<audio>`` player for ``pcm`` (mono or stereo), under a bold label with its length."""
    data = base64.b64encode(encode_mp3(pcm, rate)).decode("ascii")
    seconds = np.asarray(pcm).shape[0] / rate
    player = f"<audio controls preload='none' src='data:audio/mpeg;base64,{data}'></audio>"
    return f"<div><b>{html.escape(label)}</b> ({seconds:.1f} s)<br>{player}</div>"
