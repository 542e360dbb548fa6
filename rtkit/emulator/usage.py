"""What a response costs in tokens, and where ``max_output_tokens`` stops it.

The service bills about 10 input audio tokens a second and 20 output audio tokens a second (1 per 50 ms of
assistant audio), text about 4 characters a token (OpenAI's "Realtime costs" guide). A response's output
tokens are its audio's plus its text's (the transcript of spoken audio, or a function call's arguments), and
``max_output_tokens`` bounds that sum, "inclusive of tool calls" (the SDK's docstring).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["AUDIO_MS_PER_TOKEN", "OutputBudget", "audio_tokens", "text_tokens", "usage"]

AUDIO_MS_PER_TOKEN = 50
_CHARS_PER_TOKEN = 4
#: Instructions and the other text of every input, as a fixed stand-in.
_TEXT_INPUT_TOKENS = 120


def audio_tokens(audio_ms: int) -> int:
    return audio_ms // AUDIO_MS_PER_TOKEN


def text_tokens(text: str) -> int:
    return max(1, len(text) // _CHARS_PER_TOKEN) if text else 0


def usage(input_audio_tokens: int, audio_ms: int, text: str) -> dict[str, Any]:
    """``response.done``'s ``usage`` for a response that produced ``audio_ms`` of audio and ``text``."""
    audio_out = audio_tokens(audio_ms)
    text_out = text_tokens(text)
    total_in = input_audio_tokens + _TEXT_INPUT_TOKENS
    return {
        "total_tokens": total_in + audio_out + text_out,
        "input_tokens": total_in,
        "output_tokens": audio_out + text_out,
        "input_token_details": {
            "text_tokens": _TEXT_INPUT_TOKENS,
            "audio_tokens": input_audio_tokens,
            "cached_tokens": 0,
            "image_tokens": 0,
            "cached_tokens_details": {"text_tokens": 0, "audio_tokens": 0, "image_tokens": 0},
        },
        "output_token_details": {"text_tokens": text_out, "audio_tokens": audio_out},
    }


@dataclass(frozen=True)
class OutputBudget:
    """A response's ``max_output_tokens`` (``None``: ``"inf"``), asked before each piece of output is sent."""

    limit: int | None

    @classmethod
    def of(cls, value: Any) -> OutputBudget:
        return cls(value if isinstance(value, int) and not isinstance(value, bool) else None)

    def text_that_fits(self, text: str, delta: str) -> str:
        """The head of ``delta`` that may follow ``text`` (all of it when it fits)."""
        if self.limit is None:
            return delta
        room = self.limit * _CHARS_PER_TOKEN + _CHARS_PER_TOKEN - 1 - len(text)
        return delta[: max(0, room)]

    def fits(self, audio_ms: int, text: str) -> bool:
        return self.limit is None or audio_tokens(audio_ms) + text_tokens(text) <= self.limit

    def audio_ms_left(self, audio_ms: int, text: str) -> int:
        """How many more ms of audio fit after ``audio_ms`` of it and ``text``, in whole tokens."""
        if self.limit is None:
            raise ValueError("an unlimited budget has no end")
        tokens_left = self.limit - text_tokens(text) - audio_tokens(audio_ms)
        return max(0, tokens_left) * AUDIO_MS_PER_TOKEN
