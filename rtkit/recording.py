"""Both sides of a call as heard: the user's audio on the left, the model's on the right, on the call's clock.

``record_audio(session)`` taps a ``RealtimeSession``'s source and sink (``rtkit.audio.tap``, as the cassette
recorder does) and places each frame where it was heard: the user's when the transport read it to send, the
model's when the sink got it plus what the sink still held unplayed (a WebSocket reply arrives faster
than a speaker plays it). A frame that comes within one 20 ms frame of where the previous one ends is laid
right after it, so scheduling jitter leaves no clicks; a later one starts where the clock says, after
silence. Silent frames go exactly where the clock says (cut where they would overlap), so a channel that
drifted in a burst of frames or a late read is back on time at the next quiet frame. A barge-in's
``discard_unplayed()`` goes through the tap, so the unheard rest of a reply is cut from the right channel:
it holds what was played, not what arrived.

``clips()`` cuts it per turn of ``call.conversation``: a user utterance where the server's VAD placed it
(``audio_start_ms``/``audio_end_ms`` from the first frame sent on that connection), a reply from its first
to its last voiced frame as played. A ``BrowserCall`` plays and listens in the page: not recorded here yet.
"""

from __future__ import annotations

import time
import wave
from collections.abc import Callable
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any, Literal

import numpy as np

from rtkit.audio.media import frame_samples, resample
from rtkit.audio.pcm import PCM, REALTIME_RATE
from rtkit.audio.tap import SinkTap, SourceTap
from rtkit.errors import ConfigurationError

__all__ = ["AudioRecording", "Clip", "record_audio"]


class _Track:
    """One channel: chunks at the positions (samples at ``rate`` from the recording's start) they were heard."""

    def __init__(self) -> None:
        self.rate: int | None = None
        self.chunks: list[tuple[int, PCM]] = []
        #: One past the last sample placed, and where each run of contiguous audio began.
        self.end = 0
        self.runs: list[int] = []

    def place(self, pcm: PCM, rate: int, seconds: float) -> tuple[int, int]:
        if self.rate is None:
            self.rate = rate
        samples = np.array(pcm, dtype=np.int16).reshape(-1)
        if rate != self.rate:
            samples = resample(samples, rate, self.rate)
        at = max(0, round(seconds * self.rate))
        frame = frame_samples(self.rate)
        if not self.chunks or at > self.end + frame:
            start = max(at, self.end)
            self.runs.append(start)
        elif not samples.any():
            # Silence goes exactly where the clock says: frames that came in a burst and were laid end to end
            # (ahead of the clock) or a little late leave the channel back on time at the next quiet frame.
            start = at
            if start < self.end:
                samples, start = samples[self.end - start :], self.end
            if not samples.size:
                return self.end, self.end
        else:
            start = self.end
        self.chunks.append((start, samples))
        self.end = start + samples.size
        return start, self.end

    def cut(self, samples: int) -> None:
        """Forget the last ``samples`` placed (a barge-in dropped them unplayed)."""
        keep = max(0, self.end - samples)
        while self.chunks and self.chunks[-1][0] >= keep:
            self.chunks.pop()
        if self.chunks and self.chunks[-1][0] + self.chunks[-1][1].size > keep:
            start, pcm = self.chunks[-1]
            self.chunks[-1] = (start, pcm[: keep - start])
        self.end = keep

    def pcm(self, seconds: float) -> PCM:
        """The channel as mono PCM16 at 24 kHz, ``seconds`` long."""
        rate = self.rate or REALTIME_RATE
        out = np.zeros(round(seconds * rate), dtype=np.int16)
        for start, chunk in self.chunks:
            piece = chunk[: max(0, out.size - start)]
            out[start : start + piece.size] = piece
        return out if rate == REALTIME_RATE else resample(out, rate, REALTIME_RATE)[: round(seconds * REALTIME_RATE)]

    def seconds(self, position: int) -> float:
        return position / (self.rate or REALTIME_RATE)


@dataclass(frozen=True)
class Clip:
    """One turn as heard: who, which item, where on the recording (seconds) and its audio (24 kHz mono)."""

    role: Literal["user", "assistant"]
    turn_id: str
    item_id: str
    start: float
    end: float
    pcm: PCM = field(repr=False)
    text: str | None = None
    #: Where the reply was cut by a barge-in (the API's ``truncated``), ``None`` if heard to the end.
    truncated_ms: int | None = None

    def save_wav(self, path: str | PathLike[str]) -> Path:
        """Write the clip as a 16-bit mono WAV at 24 kHz."""
        return _write_wav(path, self.pcm.reshape(-1, 1))


def _write_wav(path: str | PathLike[str], frames: PCM) -> Path:
    target = Path(path)
    with wave.open(str(target), "wb") as wav:
        wav.setnchannels(frames.shape[1])
        wav.setsampwidth(2)
        wav.setframerate(REALTIME_RATE)
        wav.writeframes(np.ascontiguousarray(frames, dtype="<i2").tobytes())
    return target


class AudioRecording:
    """Records a ``RealtimeSession``'s two sides from now on; create it before ``connect()`` to have it all.

    ``left``/``right`` (24 kHz PCM16, equal length), ``save_wav(path)`` (stereo), ``clips()`` (per turn)."""

    def __init__(self, call: Any, *, clock: Callable[[], float] = time.monotonic) -> None:
        if not (hasattr(call, "sink") and hasattr(call, "source")):
            raise ConfigurationError(
                f"record_audio records a call whose audio is in the kernel (a RealtimeSession), "
                f"not a {type(call).__name__}",
                hint="a BrowserCall's microphone and speaker are in the page; use rtkit.cassette.record for its events",
            )
        self.call = call
        self._clock = clock
        self._start = clock()
        #: The wall-clock time (``time.time()``) the recording's zero stands for.
        self.started_at = time.time()
        self._left = _Track()
        self._right = _Track()
        #: The item the right channel is playing, and each reply's voiced span there (sink samples).
        self._playing: str | None = None
        self._audio_items: dict[str, str] = {}
        self._replies: dict[str, list[int]] = {}
        #: Each user item's VAD span (ms from the start of its connection's input) and that connection.
        self._speech: dict[str, list[int | None]] = {}
        self._sessions: list[tuple[int, float]] = []  # (index of its first left run, seconds when created)
        self._runs_seen = 0
        self._sink = SinkTap(call.sink, self._on_played, self._on_discarded)
        call.sink = self._sink
        self._source: SourceTap | None = None
        if call.source is not None:
            self._source = SourceTap(call.source, self._on_sent)
            call.source = self._source
        self._unsubscribe: Callable[[], None] | None = call.events.on(self._on_event)

    def _now(self) -> float:
        return self._clock() - self._start

    def stop(self) -> None:
        """Record no more; the session's own sink and source are put back (if nothing was stacked on them)."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self.call.sink is self._sink:
            self.call.sink = self._sink.sink
        if self._source is not None and self.call.source is self._source:
            self.call.source = self._source.source

    # -- what the taps and events say ------------------------------------------------------
    def _on_sent(self, pcm: PCM, rate: int) -> None:
        self._left.place(pcm, rate, self._now())

    def _on_played(self, pcm: PCM, rate: int) -> None:
        # It plays after what the sink still holds unplayed (a speaker's queue; nothing for a sink without one).
        queued = (self._sink.written_samples - self._sink.played_samples) / rate
        start, end = self._right.place(pcm, rate, self._now() + queued)
        if self._playing is None or not pcm.any():
            return
        span = self._replies.setdefault(self._playing, [start, end])
        span[1] = end

    def _on_discarded(self, samples: int) -> None:
        self._right.cut(samples)
        for span in self._replies.values():
            span[1] = min(span[1], self._right.end)
            span[0] = min(span[0], span[1])

    def _on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "session.created":
            self._sessions.append((self._runs_seen, self._now()))
            self._runs_seen = max(len(self._left.runs), self._runs_seen + 1)
        elif kind == "response.output_audio.delta":  # WebSocket: each delta names its item
            self._playing = str(event.get("item_id"))
        elif kind == "response.content_part.added" and (event.get("part") or {}).get("type") in (
            "audio",
            "output_audio",
        ):
            self._audio_items[str(event.get("response_id"))] = str(event.get("item_id"))
        elif kind == "output_audio_buffer.started":  # WebRTC: the track plays this response's item from now
            self._playing = self._audio_items.get(str(event.get("response_id")))
        elif kind in ("output_audio_buffer.stopped", "output_audio_buffer.cleared"):
            self._playing = None
        elif kind == "input_audio_buffer.speech_started":
            self._speech[str(event.get("item_id"))] = [len(self._sessions) - 1, event.get("audio_start_ms"), None]
        elif kind == "input_audio_buffer.speech_stopped":
            span = self._speech.get(str(event.get("item_id")))
            if span is not None:
                span[2] = event.get("audio_end_ms")

    # -- what was recorded -------------------------------------------------------------------
    @property
    def seconds(self) -> float:
        """How long the recording is: to the end of whichever side ends last."""
        return max(self._left.seconds(self._left.end), self._right.seconds(self._right.end))

    @property
    def left(self) -> PCM:
        """The user's audio as sent, 24 kHz PCM16, as long as ``right``."""
        return self._left.pcm(self.seconds)

    @property
    def right(self) -> PCM:
        """The model's audio as played, 24 kHz PCM16, as long as ``left``."""
        return self._right.pcm(self.seconds)

    def stereo(self) -> PCM:
        """Both sides as one ``(samples, 2)`` array: user left, model right."""
        seconds = self.seconds
        return np.stack([self._left.pcm(seconds), self._right.pcm(seconds)], axis=1)

    def save_wav(self, path: str | PathLike[str]) -> Path:
        """Write a stereo 16-bit WAV at 24 kHz (user left, model right) from the recording's start."""
        return _write_wav(path, self.stereo())

    def _origin(self, session: int) -> float | None:
        """Seconds at which the first frame of connection ``session``'s input was sent."""
        if not 0 <= session < len(self._sessions):
            return None
        first_run, created = self._sessions[session]
        runs = self._left.runs
        return self._left.seconds(runs[first_run]) if first_run < len(runs) else created

    def clips(self) -> list[Clip]:
        """Each turn heard so far, in the conversation's order: the user's utterances, the replies as played."""
        left, right = self.left, self.right
        clips: list[Clip] = []
        for turn in self.call.conversation.turns:
            for item_id in turn.item_ids.values():
                start = end = None
                if turn.role == "assistant" and item_id in self._replies:
                    first, last = self._replies[item_id]
                    start, end = self._right.seconds(first), self._right.seconds(last)
                    source = right
                elif turn.role == "user" and item_id in self._speech:
                    session, begin, finish = self._speech[item_id]
                    origin = self._origin(int(session or 0))
                    if origin is None or begin is None:
                        continue
                    start = origin + begin / 1000
                    end = origin + finish / 1000 if finish is not None else self.seconds
                    source = left
                if start is None or end is None or end <= start:
                    continue
                a, b = round(start * REALTIME_RATE), round(end * REALTIME_RATE)
                clips.append(
                    Clip(
                        turn.role,
                        turn.id,
                        item_id,
                        start,
                        end,
                        source[a:b].copy(),
                        turn.text,
                        turn.truncated_ms,
                    )
                )
                break
        return clips


def record_audio(call: Any) -> AudioRecording:
    """Start recording both sides of ``call`` (a ``RealtimeSession``): ``.save_wav(path)``, ``.clips()``."""
    return AudioRecording(call)
