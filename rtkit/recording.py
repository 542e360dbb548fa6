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
to its last voiced frame as played.

A ``BrowserCall`` sends and plays in the page, so the page records (``realtime.js``'s ``Recorder``: the
microphone as sent, muted as silence, and the reply as it went to the speaker, barge-in cuts included, both
on the page's AudioContext clock, so aligned by construction) and notes where the VAD placed each utterance
and when each reply played. ``await recording.fetch()`` asks the page for it and fills the same tracks; the
page's clock is put on the kernel's by the request's round trip. ``fetch()`` is the one async step, a no-op
for a kernel call, so code written for either call is the same: ``rec = record_audio(call)``, the call,
``await rec.fetch()``, then ``left``/``right``/``save_wav``/``clips()``. It is a separate step rather than
part of ``stop()`` because a notebook may look at a recording while the call goes on, and ``stop()`` stays
the synchronous ending it is for a kernel call. The page keeps the last five minutes of its calls.
"""

from __future__ import annotations

import time
import wave
from collections.abc import Callable
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

from rtkit.audio.media import frame_samples, resample
from rtkit.audio.pcm import PCM, REALTIME_RATE
from rtkit.audio.tap import SinkTap, SourceTap
from rtkit.errors import ConfigurationError

if TYPE_CHECKING:
    from rtkit.widgets.page import PageRecording

__all__ = ["AudioRecording", "Clip", "record_audio"]

#: A sample of a reply louder than this (-45 dBFS, the server VAD's default speech level) is sound: a decoded
#: WebRTC track is rarely all zeros, and Opus rings on for tens of ms after a sound at a lower level.
_QUIET = 178


class _Page(Protocol):
    """A ``BrowserCall``'s bridge to its page, as far as a recording needs it (``rtkit.widgets.page``)."""

    async def fetch_recording(self, timeout: float) -> PageRecording: ...


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

    @classmethod
    def whole(cls, pcm: PCM, first: int, last: int | None) -> _Track:
        """A channel handed over in one piece (24 kHz) whose first sample is at ``first``, cut before ``last``."""
        if first < 0:
            pcm, first = pcm[-first:], 0
        if last is not None:
            pcm = pcm[: max(0, last - first)]
        track = cls()
        track.rate = REALTIME_RATE
        if pcm.size:
            track.chunks, track.end, track.runs = [(first, pcm)], first + pcm.size, [first]
        return track


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
    """Records a call's two sides from now on; create it before ``connect()`` to have it all.

    ``left``/``right`` (24 kHz PCM16, equal length), ``save_wav(path)`` (stereo), ``clips()`` (per turn). For a
    ``BrowserCall`` the page records: ``await fetch()`` first (and again for more)."""

    def __init__(self, call: Any, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.call = call
        self._clock = clock
        self._start = clock()
        #: The wall-clock time (``time.time()``) the recording's zero stands for.
        self.started_at = time.time()
        self._left = _Track()
        self._right = _Track()
        #: The page's side (a ``BrowserCall``): its tracks and spans come from the page's hand-over.
        self._page: _Page | None = None
        self._page_spans: dict[str, tuple[float, float]] = {}
        self._stopped_at: float | None = None
        #: From the oldest audio the page kept rather than from now (``rtkit.lab.listen``, after the turns).
        self._from_page_start = False
        #: The item the right channel is playing, and each reply's voiced span there (sink samples).
        self._playing: str | None = None
        self._audio_items: dict[str, str] = {}
        self._replies: dict[str, list[int]] = {}
        #: Each user item's VAD span (ms from the start of its connection's input) and that connection.
        self._speech: dict[str, list[int | None]] = {}
        self._sessions: list[tuple[int, float]] = []  # (index of its first frame sent, seconds when created)
        #: Each frame sent: (where it starts on the left, its samples at the left's rate). The server's
        #: ``audio_start_ms`` counts the samples it got, so that is how a connection's offsets are found.
        self._sent: list[tuple[int, int]] = []
        #: The first frame the latest connection attempt sent (its transport reads from its ``connecting`` on).
        self._attempt_from = 0
        bridge = getattr(call, "bridge", None)
        if hasattr(bridge, "fetch_recording"):
            self._page = bridge
            return
        if not (hasattr(call, "sink") and hasattr(call, "source")):
            raise ConfigurationError(
                f"record_audio records a RealtimeSession or a BrowserCall, not a {type(call).__name__}",
                hint="use rtkit.cassette.record for a call's events",
            )
        self._sink = SinkTap(call.sink, self._on_played, self._on_discarded)
        call.sink = self._sink
        self._source: SourceTap | None = None
        if call.source is not None:
            self._source = SourceTap(call.source, self._on_sent)
            call.source = self._source
        subscriptions = [call.events.on(self._on_event), call.states.on(self._on_state)]

        def unsubscribe() -> None:
            for end in subscriptions:
                end()

        self._unsubscribe: Callable[[], None] | None = unsubscribe

    def _now(self) -> float:
        return self._clock() - self._start

    def stop(self) -> None:
        """Record no more; the session's own sink and source are put back (if nothing was stacked on them). A
        browser call's page records on: what it hands over later is cut here."""
        if self._page is not None:
            self._stopped_at = self._stopped_at or time.monotonic()
            return
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self.call.sink is self._sink:
            self.call.sink = self._sink.sink
        if self._source is not None and self.call.source is self._source:
            self.call.source = self._source.source

    # -- what the taps and events say ------------------------------------------------------
    def _on_sent(self, pcm: PCM, rate: int) -> None:
        _, end = self._left.place(pcm, rate, self._now())
        size = round(pcm.size * (self._left.rate or rate) / rate)
        self._sent.append((end - size, size))

    def _on_state(self, change: Any) -> None:
        if change.state == "connecting":
            self._attempt_from = len(self._sent)

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
            self._sessions.append((self._attempt_from, self._now()))
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

    async def fetch(self, timeout: float = 10.0) -> AudioRecording:
        """Bring a browser call's recording up to date from its page (within ``timeout`` s); a kernel call's is
        always up to date (nothing to do). Returns the recording."""
        if self._page is None:
            return self
        self._take(await self._page.fetch_recording(timeout))
        return self

    def _take(self, got: PageRecording) -> None:
        """Fill the tracks and turns from the page's hand-over: page time ``t`` is ``t + offset`` on the kernel's
        ``time.monotonic()``, and the recording's zero is ``_start`` there (or the oldest sample kept)."""
        offset = got.kernel_offset
        if self._from_page_start:
            self._start = got.start + offset
            self.started_at = time.time() - (time.monotonic() - self._start)
        zero = self._start - offset  # the recording's zero on the page's clock

        def at(t: float) -> int:
            return round((t - zero) * REALTIME_RATE)

        last = None if self._stopped_at is None else at(self._stopped_at - offset)
        self._left = _Track.whole(got.left, at(got.start), last)
        self._right = _Track.whole(got.right, at(got.start), last)
        seconds, spans = self.seconds, {}
        for item_id, (start, end) in got.users.items():  # within what was kept
            spans[item_id] = (max(0.0, start - zero), min(seconds, seconds if end is None else end - zero))
        # A reply plays from its first to its last sound within its span (over WebRTC the span has no end: it
        # runs to the next reply's start, and the track falls silent once the jitter buffer has played out).
        right = self._right.pcm(seconds)
        replies = sorted(got.replies.items(), key=lambda kv: kv[1][0])
        for n, (item_id, (start, end)) in enumerate(replies):
            until = replies[n + 1][1][0] if n + 1 < len(replies) else zero + seconds
            a, b = max(0, at(start)), min(right.size, at(until if end is None else min(end, until)))
            loud = np.flatnonzero(np.abs(right[a:b].astype(np.int32)) > _QUIET) if b > a else np.zeros(0)
            if loud.size:
                spans[item_id] = ((a + loud[0]) / REALTIME_RATE, (a + loud[-1] + 1) / REALTIME_RATE)
        self._page_spans = spans

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

    def _repr_html_(self) -> str:
        """In a notebook: the whole call as one stereo player (headphones: you left, the model right), then one
        player per turn; MP3 inline, so a saved notebook keeps them at a few KB a second."""
        from rtkit.audio.mp3 import audio_player

        if self.seconds == 0:
            return "<p>Nothing recorded yet (a browser call's page hands its audio over on <code>fetch()</code>).</p>"
        parts = [audio_player(self.stereo(), REALTIME_RATE, "the whole call: you on the left, the model on the right")]
        for clip in self.clips():
            who = "you" if clip.role == "user" else "the model"
            cut = f", cut at {clip.truncated_ms} ms" if clip.truncated_ms is not None else ""
            label = f"{who}, {clip.start:.1f}–{clip.end:.1f} s{cut}"
            parts.append(audio_player(clip.pcm, REALTIME_RATE, label))
        return "".join(parts)

    def _input_at(self, session: int, ms: int) -> float | None:
        """Where (seconds) connection ``session``'s input was ``ms`` in: that many ms of samples sent from its first
        frame on, as the server counts them; a frame read late or in a catch-up burst moves on the clock, not in
        the count (after a reconnection the source's pacer bursts: 70-90 ms off when this went by the clock)."""
        if not 0 <= session < len(self._sessions):
            return None
        first, created = self._sessions[session]
        want, position = round(ms * (self._left.rate or REALTIME_RATE) / 1000), None
        for start, size in self._sent[first:]:
            if want < size:
                return self._left.seconds(start + want)
            want, position = want - size, start + size
        return created + ms / 1000 if position is None else self._left.seconds(position + want)

    def _span(self, role: str, item_id: str) -> tuple[float | None, float | None]:
        """Where an item is heard on the recording (seconds), from the taps and events or the page's word."""
        if self._page is not None:
            return self._page_spans.get(item_id, (None, None))
        if role == "assistant" and item_id in self._replies:
            first, last = self._replies[item_id]
            return self._right.seconds(first), self._right.seconds(last)
        if role == "user" and item_id in self._speech:
            session, begin, finish = self._speech[item_id]
            start = None if begin is None else self._input_at(int(session or 0), int(begin))
            if start is None:
                return None, None
            end = None if finish is None else self._input_at(int(session or 0), int(finish))
            return start, self.seconds if end is None else end
        return None, None

    def clips(self) -> list[Clip]:
        """Each turn heard so far, in the conversation's order: the user's utterances, the replies as played."""
        left, right = self.left, self.right
        clips: list[Clip] = []
        for turn in self.call.conversation.turns:
            for item_id in turn.item_ids.values():
                start, end = self._span(turn.role, item_id)
                source = right if turn.role == "assistant" else left
                if start is None or end is None or end <= start:
                    continue
                a, b = max(0, round(start * REALTIME_RATE)), min(source.size, round(end * REALTIME_RATE))
                if b <= a:  # outside what was recorded (it began after the turn, or was stopped before it)
                    continue
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
    """Start recording both sides of ``call`` (a ``RealtimeSession`` or a ``BrowserCall``): ``await .fetch()``
    (a browser call's page hands its recording over; a no-op for a session), then ``.save_wav(path)``,
    ``.clips()``."""
    return AudioRecording(call)


def _kept_by_page(call: Any) -> AudioRecording:
    """A browser call's recording from the oldest audio its page kept (``fetch()`` it): what ``rtkit.lab.listen``
    replays after the turns are over."""
    recording = AudioRecording(call)
    if recording._page is None:
        raise ConfigurationError(f"Not a browser call: {type(call).__name__}", hint="use record_audio(call)")
    recording._from_page_start = True
    return recording
