"""Synthetic speech from espeak-ng: deterministic spoken fixtures and the emulator's voice.

espeak-ng is a Debian package (``apt-get install espeak-ng``); without it ``speak`` raises
``AudioUnavailableError`` and callers fall back to tones.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import shutil
import wave

import numpy as np

from rtkit.audio.media import resample
from rtkit.audio.pcm import PCM, REALTIME_RATE
from rtkit.errors import AudioUnavailableError


def speech_available() -> bool:
    return shutil.which("espeak-ng") is not None


async def speak(text: str, *, voice: str = "en-us", words_per_minute: int = 160, rate: int = REALTIME_RATE) -> PCM:
    """Text spoken by espeak-ng as mono PCM16 at ``rate`` (24 kHz by default)."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise AudioUnavailableError(
            "espeak-ng is not installed, so text cannot be spoken.",
            hint="run `apt-get install espeak-ng` (make setup does this)",
        )
    proc = await asyncio.create_subprocess_exec(
        exe,
        "-v",
        voice,
        "-s",
        str(words_per_minute),
        "--stdout",
        "--",
        text,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await proc.communicate()
    except BaseException:
        # Cancelled (e.g. a response cancelled while it was being voiced): reap espeak-ng now, not when its
        # transport is collected after the loop has closed.
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    if proc.returncode != 0:
        raise AudioUnavailableError(f"espeak-ng failed: {err.decode(errors='replace').strip()}")
    with wave.open(io.BytesIO(out)) as wav:
        source_rate = wav.getframerate()
        pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
    return resample(pcm, source_rate, rate)
