"""What a response costs in tokens, and where ``max_output_tokens`` stops it.

The service bills 1 input audio token per 100 ms of a user's audio and 1 per 50 ms of the model's (also when
that audio comes back as input in later responses, up to where it was truncated), text about 4 characters a
token, plus a few special tokens per message (OpenAI's "Realtime costs" guide). The whole conversation is the
input of every response, so later turns cost more; the part of it the previous response already read is
billed as *cached* input, by the rule of OpenAI's prompt-caching guide: a prefix of at least 1,024 tokens,
counted in steps of 128. A response's output tokens are its audio's plus its text's (the transcript of spoken
audio, or a function call's arguments), and ``max_output_tokens`` bounds that sum, "inclusive of tool calls"
(the SDK's docstring).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "AUDIO_MS_PER_TOKEN",
    "InputBlock",
    "InputCount",
    "OutputBudget",
    "audio_tokens",
    "count_input",
    "text_tokens",
    "usage",
]

AUDIO_MS_PER_TOKEN = 50
USER_AUDIO_MS_PER_TOKEN = 100
#: The special tokens that frame each message ("a user message with 10 text tokens may count 12", the guide).
ITEM_OVERHEAD_TOKENS = 2
CACHE_MIN_TOKENS = 1024
CACHE_STEP_TOKENS = 128
_CHARS_PER_TOKEN = 4


def audio_tokens(audio_ms: int) -> int:
    return audio_ms // AUDIO_MS_PER_TOKEN


def text_tokens(text: str) -> int:
    return max(1, len(text) // _CHARS_PER_TOKEN) if text else 0


@dataclass(frozen=True)
class InputBlock:
    """One piece of a response's input, in order (the instructions and tools, then each item). ``key`` changes
    whenever the piece does (an item truncated, the instructions updated), which ends the cached prefix there."""

    key: str
    text: int
    audio: int = 0


@dataclass(frozen=True)
class InputCount:
    text: int = 0
    audio: int = 0
    cached_text: int = 0
    cached_audio: int = 0


def count_input(blocks: Sequence[InputBlock], previous: Sequence[InputBlock]) -> InputCount:
    """The input tokens of a response reading ``blocks``, after one that read ``previous``: what both share from
    the start is cached, if it is long enough, in whole steps (text first, in input order)."""
    shared = 0
    for now, before in zip(blocks, previous, strict=False):
        if now.key != before.key:
            break
        shared += now.text + now.audio
    cached = (shared // CACHE_STEP_TOKENS) * CACHE_STEP_TOKENS if shared >= CACHE_MIN_TOKENS else 0
    text = sum(b.text for b in blocks)
    audio = sum(b.audio for b in blocks)
    cached_text = cached_audio = 0
    for block in blocks:
        if cached <= 0:
            break
        take_text = min(block.text, cached)
        cached_text, cached = cached_text + take_text, cached - take_text
        take_audio = min(block.audio, cached)
        cached_audio, cached = cached_audio + take_audio, cached - take_audio
    return InputCount(text, audio, cached_text, cached_audio)


def usage(read: InputCount, audio_ms: int, text: str) -> dict[str, Any]:
    """``response.done``'s ``usage`` for a response that read ``read`` and produced ``audio_ms`` of audio and
    ``text``."""
    audio_out = audio_tokens(audio_ms)
    text_out = text_tokens(text)
    total_in = read.text + read.audio
    return {
        "total_tokens": total_in + audio_out + text_out,
        "input_tokens": total_in,
        "output_tokens": audio_out + text_out,
        "input_token_details": {
            "text_tokens": read.text,
            "audio_tokens": read.audio,
            "cached_tokens": read.cached_text + read.cached_audio,
            "image_tokens": 0,
            "cached_tokens_details": {
                "text_tokens": read.cached_text,
                "audio_tokens": read.cached_audio,
                "image_tokens": 0,
            },
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
