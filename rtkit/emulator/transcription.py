"""Input audio transcription, emulated: the real event stream around a placeholder transcript.

The emulator has no speech recogniser, so the transcript of committed audio says only what it is and how long
(``"[speech, 1.23 s]"``). Everything around it is the service's: the streaming models (the ``gpt-4o`` family,
``gpt-transcribe``, ``gpt-live-transcribe``, ``gpt-realtime-whisper``) send
``conversation.item.input_audio_transcription.delta`` events before ``.completed``, ``whisper-1`` sends only
``.completed``; usage is billed by tokens or by duration as each model is; with
``include: ["item.input_audio_transcription.logprobs"]`` the models that have logprobs put them on every
delta and on ``.completed``. A placeholder is certain of itself: each logprob is 0.0 (probability 1).
"""

from __future__ import annotations

import re
from typing import Any

from rtkit.emulator.errors import ApiError

__all__ = ["LOGPROBS", "placeholder", "responses_refused", "transcription_events"]

#: The ``include`` value that asks for logprobs.
LOGPROBS = "item.input_audio_transcription.logprobs"

#: Model families, matched by prefix so dated snapshots (``gpt-4o-mini-transcribe-2025-12-15``) count too.
_STREAMING = (
    "gpt-4o-transcribe",  # and gpt-4o-transcribe-diarize
    "gpt-4o-mini-transcribe",
    "gpt-transcribe",
    "gpt-live-transcribe",
    "gpt-realtime-whisper",
)
#: Billed by audio duration (``usage.type: "duration"``); the others by tokens.
_BY_DURATION = ("whisper-1", "gpt-realtime-whisper")
#: Whisper models have no logprobs ("only returned with the models gpt-4o-transcribe and gpt-4o-mini-transcribe";
#: the newer token-billed models are taken to have them too).
_NO_LOGPROBS = ("whisper-1", "gpt-realtime-whisper")
#: Report the audio's languages in ``.completed`` (the SDK: "returned by gpt-transcribe").
_LANGUAGES = ("gpt-transcribe", "gpt-live-transcribe")
_DIARIZE = "gpt-4o-transcribe-diarize"
#: Input audio tokens per second, as the service bills user audio (1 per 100 ms).
_AUDIO_TOKENS_PER_S = 10


def placeholder(seconds: float) -> str:
    """What the emulator "heard": no words, only that there was speech and how long it lasted."""
    return f"[speech, {seconds:.2f} s]"


def _family(model: str | None, families: tuple[str, ...]) -> bool:
    if not model:
        return False
    return any(model == f or model.startswith(f + "-") for f in families)


def _tokens(text: str) -> list[str]:
    """Word-sized tokens, each with its leading space, as a tokenizer would cut them."""
    return re.findall(r"\s*\S+", text)


def _logprob(token: str) -> dict[str, Any]:
    return {"token": token, "logprob": 0.0, "bytes": list(token.encode("utf-8"))}


def transcription_events(
    item_id: str,
    seconds: float,
    config: dict[str, Any],
    include: list[str] | None,
) -> tuple[str, list[tuple[str, dict[str, Any]]]]:
    """The transcript of ``seconds`` of committed audio in item ``item_id`` and the events that carry it.

    ``config`` is the session's ``audio.input.transcription``; returns ``(transcript, [(type, fields), ...])``
    in the order the service sends them (the caller adds ``event_id``)."""
    model = config.get("model")
    transcript = placeholder(seconds)
    tokens = _tokens(transcript)
    logprobs = LOGPROBS in (include or ()) and _family(model, _STREAMING) and not _family(model, _NO_LOGPROBS)
    events: list[tuple[str, dict[str, Any]]] = []
    if _family(model, _STREAMING):
        for token in tokens:
            delta: dict[str, Any] = {"item_id": item_id, "content_index": 0, "delta": token}
            if logprobs:
                delta["logprobs"] = [_logprob(token)]
            events.append(("conversation.item.input_audio_transcription.delta", delta))
    if _family(model, (_DIARIZE,)):
        # One speaker, labelled as the diarizing model labels them; the emulator cannot tell voices apart.
        segment = {"id": "seg_0", "item_id": item_id, "content_index": 0, "start": 0.0, "end": round(seconds, 3)}
        events.append(
            ("conversation.item.input_audio_transcription.segment", {**segment, "speaker": "A", "text": transcript})
        )
    completed: dict[str, Any] = {
        "item_id": item_id,
        "content_index": 0,
        "transcript": transcript,
        "usage": _usage(model, seconds, config.get("prompt"), len(tokens)),
    }
    if logprobs:
        completed["logprobs"] = [_logprob(token) for token in tokens]
    if _family(model, _LANGUAGES):
        # Only what the client said the audio is in: with no recogniser there is nothing to detect ([] says so).
        said = config.get("languages") or ([config["language"]] if config.get("language") else [])
        completed["languages"] = [{"code": code} for code in said]
    events.append(("conversation.item.input_audio_transcription.completed", completed))
    return transcript, events


def _usage(model: str | None, seconds: float, prompt: str | None, output_tokens: int) -> dict[str, Any]:
    if model is None or _family(model, _BY_DURATION):
        return {"type": "duration", "seconds": round(seconds, 3)}
    audio = int(seconds * _AUDIO_TOKENS_PER_S)
    text = len(_tokens(prompt)) if prompt else 0
    return {
        "type": "tokens",
        "input_tokens": audio + text,
        "output_tokens": output_tokens,
        "total_tokens": audio + text + output_tokens,
        "input_token_details": {"text_tokens": text, "audio_tokens": audio},
    }


def responses_refused() -> ApiError:
    """``response.create`` in a transcription session. The service's wording for this case is not on record;
    this one follows its "Passing a ... is not allowed." refusals of what a session type does not take."""
    return ApiError(
        "Passing a response.create event to a transcription session is not allowed: transcription sessions "
        "transcribe input audio and never create responses.",
        code="invalid_parameter",
        param="type",
    )
