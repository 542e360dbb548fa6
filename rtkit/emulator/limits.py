"""The service's documented limits that the emulator enforces, with the errors it answers at each.

- A session lasts at most 60 minutes (``session.expires_at`` says when); the emulator's cap is
  ``max_session_seconds``, and the error names the cap's real length.
- One ``input_audio_buffer.append`` carries at most 15 MiB of audio (the SDK's docstring), which is ~20 MiB
  of base64 text. A bigger append is refused with an ``error`` event on a connection that stays open; the
  WebSocket's frame limit sits a few MiB above that, so only a frame that could not be an append within
  reach of the limit is closed by the protocol (1009, reason ``... exceeds limit of N bytes``). Parsing one
  frame at the limit holds about four times its size for a moment (text, parsed copy, audio, samples).
"""

from __future__ import annotations

from rtkit.emulator.errors import ApiError

__all__ = [
    "MAX_APPEND_AUDIO_BYTES",
    "MAX_EVENT_FRAME_BYTES",
    "append_too_large",
    "base64_decoded_size",
    "session_expired",
]

#: One append's decoded audio, at most (15 MiB).
MAX_APPEND_AUDIO_BYTES = 15 * 2**20
#: The WebSocket's frame limit: the base64 of a 15 MiB append (20 MiB) plus 4 MiB, so that an append up to
#: 3 MiB over the audio limit still gets the service's error event rather than a close.
MAX_EVENT_FRAME_BYTES = 24 * 2**20


def base64_decoded_size(text: str) -> int:
    """The byte count a padded base64 string decodes to, without decoding it."""
    return len(text) // 4 * 3 - text[-2:].count("=")


def append_too_large(size: int) -> ApiError:
    return ApiError(
        f"Invalid 'audio': audio too large. Expected at most {MAX_APPEND_AUDIO_BYTES} bytes (15 MiB) of audio "
        f"in one input_audio_buffer.append, but got {size} bytes instead.",
        code="invalid_value",
        param="audio",
    )


def _duration(seconds: float) -> str:
    """60 minutes as the service says it; a shorter emulator cap in the unit that states it exactly."""
    whole = round(seconds)
    if abs(seconds - whole) < 1e-9 and whole % 60 == 0 and whole:
        minutes = whole // 60
        return f"{minutes} minute" + ("s" if minutes != 1 else "")
    if seconds < 60:
        return f"{seconds:g} second" + ("s" if seconds != 1 else "")
    minutes, rest = int(seconds // 60), seconds % 60
    return f"{minutes} minute{'s' if minutes != 1 else ''} {rest:g} second{'s' if rest != 1 else ''}"


def session_expired(seconds: float) -> ApiError:
    """The error at the session's cap: ``Your session hit the maximum duration of 60 minutes.`` on the service."""
    return ApiError(f"Your session hit the maximum duration of {_duration(seconds)}.", code="session_expired")
