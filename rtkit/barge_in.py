"""The client's half of a barge-in, for the kernel's session: what was heard of the reply the user spoke over.

The API cuts its transcript where the client says the user stopped hearing (``conversation.item.truncate``);
a client that truncates by what it *received* leaves the model believing it said words nobody heard (a
WebSocket reply arrives faster than it plays). So this follows the reply's audio into the sink: which item
each sample belongs to, and where the sink's playhead is in it. The browser page does the same in
``rtkit/static/realtime.js`` with its AudioContext's clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rtkit.audio.base import AudioSink, PlayoutSink
from rtkit.audio.pcm import REALTIME_RATE

__all__ = ["Playout", "playout_sink"]


def playout_sink(sink: AudioSink | None) -> PlayoutSink | None:
    """The sink that can say what it played, through wrappers such as ``MeteredSink``; ``None`` if none can."""
    while sink is not None:
        if isinstance(sink, PlayoutSink):
            return sink
        sink = getattr(sink, "sink", None)
    return None


@dataclass
class _Item:
    item_id: str
    content_index: int
    response_id: str | None
    #: Positions in the sink's stream (samples at the sink's rate): the item's first sample and one past its last.
    start: int | None = None
    end: int = 0
    #: Samples received as the API sent them (24 kHz PCM over the WebSocket; over WebRTC the client cannot see it).
    received: int = 0
    #: No more audio of it will come (WebSocket: its audio or its response is done).
    done: bool = False


@dataclass(frozen=True)
class Interruption:
    """What a barge-in found: the item to truncate and how much of it was played."""

    item_id: str
    content_index: int
    response_id: str | None
    played_ms: int
    received_ms: int | None
    #: The item is in the conversation (a ``conversation: "none"`` reply has nothing to truncate).
    truncatable: bool
    #: The response still generating, for ``response.cancel`` when the server will not cancel it itself.
    active_response: str | None
    interrupt_response: bool


class Playout:
    """Follows server events and the audio written to the sink; ``interrupt()`` says what a barge-in must do.

    Over the WebSocket each delta names its item. Over WebRTC the audio rides a track that never says whose
    it is: a response's audio item plays from ``output_audio_buffer.started`` to ``stopped``/``cleared``,
    starting with the first frame that is not digital silence (the track sends zeros between replies).
    """

    def __init__(self, sink_rate: int) -> None:
        self.sink_rate = sink_rate
        self.interrupt_response = True
        self._assistant_items: set[str] = set()
        self._audio_parts: dict[str, tuple[str, int]] = {}
        self._active_response: str | None = None
        self._playing: _Item | None = None
        self._delta_item: tuple[str, int, str | None] | None = None
        #: Audio still arriving for a reply the user interrupted is not played: its item (WebSocket), or over
        #: WebRTC everything on the track until the next reply starts.
        self._silenced: set[str] = set()

    # -- what the server says ----------------------------------------------------------------
    def event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind in ("session.created", "session.updated"):
            audio = (event.get("session") or {}).get("audio") or {}
            detection = (audio.get("input") or {}).get("turn_detection")
            self.interrupt_response = (
                not isinstance(detection, dict) or detection.get("interrupt_response") is not False
            )
        elif kind in ("conversation.item.added", "conversation.item.created"):
            item = event.get("item") or {}
            if item.get("role") == "assistant" and isinstance(item.get("id"), str):
                self._assistant_items.add(item["id"])
        elif kind == "conversation.item.deleted":
            self._assistant_items.discard(str(event.get("item_id")))
        elif kind == "response.created":
            self._active_response = (event.get("response") or {}).get("id")
        elif kind == "response.done":
            rid = (event.get("response") or {}).get("id")
            if rid == self._active_response:
                self._active_response = None
            if self._playing is not None and self._playing.response_id == rid:
                self._playing.done = True
        elif kind == "response.content_part.added":
            if (event.get("part") or {}).get("type") in ("audio", "output_audio"):
                self._audio_parts[str(event.get("response_id"))] = (
                    str(event.get("item_id")),
                    int(event.get("content_index") or 0),
                )
        elif kind == "response.output_audio.delta":
            self._delta_item = (
                str(event.get("item_id")),
                int(event.get("content_index") or 0),
                event.get("response_id"),
            )
        elif kind == "response.output_audio.done":
            if self._playing is not None and self._playing.item_id == event.get("item_id"):
                self._playing.done = True
        elif kind == "output_audio_buffer.started":
            rid = str(event.get("response_id"))
            self._silenced.clear()  # a new reply: whatever was interrupted has stopped arriving long ago
            part = self._audio_parts.get(rid)
            self._playing = _Item(part[0], part[1], rid) if part else None
        elif kind in ("output_audio_buffer.stopped", "output_audio_buffer.cleared"):
            rid = str(event.get("response_id"))
            # An interrupted reply stays silenced: the frames in flight and in the jitter buffer arrive after this.
            if self._playing is not None and self._playing.response_id == rid:
                self._playing = None  # played out, or cleared: nothing more of it is heard
            self._audio_parts.pop(rid, None)

    # -- what reaches the sink ---------------------------------------------------------------
    def silenced(self, webrtc: bool) -> bool:
        """Drop this audio: it belongs to a reply the user has interrupted."""
        if webrtc:
            return bool(self._silenced)
        return self._delta_item is not None and self._delta_item[0] in self._silenced

    def wrote(self, before: int, after: int, *, received: int, voiced: bool, webrtc: bool) -> None:
        """Audio went into the sink at stream positions ``before``..``after``; ``received`` samples of it as sent."""
        item = self._playing
        if not webrtc:
            if self._delta_item is None:
                return
            item_id, content_index, rid = self._delta_item
            if item is None or item.item_id != item_id:
                item = self._playing = _Item(item_id, content_index, rid)
            item.received += received
        elif item is None or (item.start is None and not voiced):
            return
        if item.start is None:
            item.start = before
        item.end = after

    # -- the user spoke --------------------------------------------------------------------
    def interrupt(self, played_position: int, *, webrtc: bool) -> Interruption | None:
        """The reply being played when the user started speaking, and how much of it was heard (``None`` if
        nothing is playing); from now on the rest of it is dropped. ``played_position`` is the sink's playhead."""
        item = self._playing
        if item is None or item.start is None:
            return None
        length = item.end - item.start
        played = min(max(0, played_position - item.start), length)
        if item.done and played >= length:  # heard in full: nothing to interrupt
            self._playing = None
            return None
        played_ms = played * 1000 // self.sink_rate
        received_ms: int | None = None
        if item.received:
            received_ms = item.received * 1000 // REALTIME_RATE
            played_ms = min(played_ms, received_ms)  # never more than was produced, whatever the resampler did
        self._silenced.add(str(item.response_id) if webrtc else item.item_id)
        self._playing = None
        return Interruption(
            item_id=item.item_id,
            content_index=item.content_index,
            response_id=item.response_id,
            played_ms=played_ms,
            received_ms=received_ms,
            truncatable=item.item_id in self._assistant_items,
            active_response=self._active_response,
            interrupt_response=self.interrupt_response,
        )
