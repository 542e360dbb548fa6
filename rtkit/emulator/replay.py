"""A cassette as the emulator's "model": each session answers its responses with the cassette's turns, in order.

``CassetteReplay`` is what ``Emulator(cassette=path)`` holds; every session gets its own ``CassettePlayer``
(``for_session``), so two clients running the same script hear the same conversation. A turn that says
something replays its recorded audio, or voices its text when it has none (a hand-written or WebRTC-recorded
turn); a turn that calls a function streams that call, whatever ``tool_choice`` and the user said; the
recorded usage is reported as recorded. Once the turns run out, each further response fails plainly: an
``error`` event with code ``cassette_exhausted`` and ``response.done`` with status ``failed``.
"""

from __future__ import annotations

import asyncio
from os import PathLike

from rtkit.cassette import Cassette, CassetteTurn
from rtkit.emulator.errors import ApiError
from rtkit.emulator.responders import Reply, Turn, voice_text
from rtkit.emulator.tools import ToolCall

__all__ = ["CassettePlayer", "CassetteReplay"]

EXHAUSTED = "cassette_exhausted"


class CassetteReplay:
    """A loaded cassette and the pace of its replay; makes one player per session."""

    def __init__(self, cassette: Cassette, *, speed: float = 1.0, name: str = "cassette") -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.cassette = cassette
        self.speed = speed
        self.name = name

    @classmethod
    def load(cls, path: str | PathLike[str], *, speed: float = 1.0) -> CassetteReplay:
        return cls(Cassette.load(path), speed=speed, name=str(path))

    def for_session(self) -> CassettePlayer:
        return CassettePlayer(self.cassette.turns, speed=self.speed, name=self.name)


class CassettePlayer:
    """One session's position in a cassette. ``scripted``: its turns decide the function calls."""

    scripted = True

    def __init__(self, turns: list[CassetteTurn], *, speed: float = 1.0, name: str = "cassette") -> None:
        self.turns = turns
        self.speed = speed
        self.name = name
        self.position = 0

    async def respond(self, turn: Turn) -> Reply:
        if self.position >= len(self.turns):
            message = (
                f"The cassette {self.name} has no more turns: it holds {len(self.turns)} and this is response "
                f"{self.position + 1}. Record a longer conversation, or add turns to the cassette."
            )
            self.position += 1
            return Reply("", None, error=ApiError(message, code=EXHAUSTED))
        recorded = self.turns[self.position]
        self.position += 1
        if recorded.delay_ms:
            await asyncio.sleep(recorded.delay_ms / 1000 / self.speed)
        if recorded.call is not None:
            return Reply("", None, call=ToolCall(recorded.call, recorded.arguments_json), usage=recorded.usage)
        text = recorded.say or ""
        audio = None
        if turn.wants_audio:
            audio = recorded.audio.pcm() if recorded.audio is not None else await voice_text(text)
        return Reply(text, audio, usage=recorded.usage)
