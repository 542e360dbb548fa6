"""What the emulated "model" says. Pluggable: anything with an async ``respond(turn)`` will do.

Built in: ``EchoResponder`` (the default: speaks the user's own utterance back, so the delay
from mouth to ear is measurable end to end) and ``ToneResponder``. Text is spoken with
espeak-ng where it is installed, else rendered as a short tone per word.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from rtkit.audio.pcm import PCM, REALTIME_RATE, tone
from rtkit.audio.speech import speak, speech_available
from rtkit.emulator.errors import ApiError
from rtkit.emulator.tools import ToolCall


@dataclass(frozen=True)
class Turn:
    """What the responder gets: the latest user input and the session's instructions."""

    user_audio: PCM | None
    user_text: str | None
    instructions: str
    voice: str
    wants_audio: bool


@dataclass(frozen=True)
class Reply:
    text: str
    #: Mono PCM16 at 24 kHz, or None for a text-only reply.
    audio: PCM | None
    #: A function call made instead of speaking; only a ``scripted`` responder's is heeded (see ``Responder``).
    call: ToolCall | None = None
    #: ``response.done``'s ``usage`` as recorded, in place of the emulator's own count (a cassette's replay).
    usage: dict[str, Any] | None = None
    #: The response fails with this (an ``error`` event, ``response.done`` with status ``failed``).
    error: ApiError | None = None


@runtime_checkable
class Responder(Protocol):
    """Says what the "model" says on each turn.

    A responder with ``scripted = True`` also decides the function calls (its ``Reply.call``) in place of the
    emulator's rule in ``tools.py``: a cassette replays the calls it recorded."""

    async def respond(self, turn: Turn) -> Reply: ...


@runtime_checkable
class SessionResponders(Protocol):
    """Makes one responder per session, for a responder whose state is the session's (a cassette's position)."""

    def for_session(self) -> Responder: ...


async def voice_text(text: str) -> PCM:
    """Speak ``text`` with espeak-ng, or stand in with one short beep per word when it is missing."""
    if speech_available():
        return await speak(text)
    words = max(1, len(text.split()))
    beep, gap = tone(0.18, 660.0, 0.25), np.zeros(int(0.07 * REALTIME_RATE), dtype=np.int16)
    return np.concatenate([np.concatenate([beep, gap]) for _ in range(words)])


class EchoResponder:
    """Says back what it heard: the user's audio verbatim, or the user's text spoken aloud."""

    name = "echo"

    async def respond(self, turn: Turn) -> Reply:
        if turn.user_audio is not None and turn.user_audio.size:
            seconds = turn.user_audio.size / REALTIME_RATE
            return Reply(f"[echo of {seconds:.2f} s of your audio]", turn.user_audio if turn.wants_audio else None)
        text = turn.user_text or "Hello from the rtkit emulator."
        return Reply(text, await voice_text(text) if turn.wants_audio else None)


class ToneResponder:
    """Answers every turn with the same tone: a steady, easily detected signal for latency work."""

    name = "tone"

    def __init__(self, seconds: float = 1.0, frequency: float = 440.0) -> None:
        self.seconds = seconds
        self.frequency = frequency

    async def respond(self, turn: Turn) -> Reply:
        text = f"[tone {self.frequency:g} Hz, {self.seconds:g} s]"
        return Reply(text, tone(self.seconds, self.frequency) if turn.wants_audio else None)


RESPONDERS: dict[str, type[EchoResponder] | type[ToneResponder]] = {
    "echo": EchoResponder,
    "tone": ToneResponder,
}
