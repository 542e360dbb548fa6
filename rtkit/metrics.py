"""Latency records: one per connection and one per turn, as plain rows for plots, tables and CSV.

The session feeds this from what it sees (its own clock, ``time.perf_counter``); nothing here talks to
the network. A turn's clock starts at the end of the user's speech as the *client* heard it (the last
loud input frame), which is what a person waiting for an answer experiences.
"""

from __future__ import annotations

import csv
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rtkit.events import Broadcast, next_value

__all__ = ["ConnectRecord", "ErrorRecord", "ResumeRecord", "SessionMetrics", "TurnRecord"]

#: Input or output louder than this (RMS, dBFS) counts as speech for the timing of turns.
VOICED_DBFS = -45.0


@dataclass
class ConnectRecord:
    kind: str = "connect"
    attempt: int = 1
    transport: str = ""
    mint_ms: float | None = None
    offer_ms: float | None = None
    answer_ms: float | None = None
    connected_ms: float | None = None
    channel_open_ms: float | None = None
    session_created_ms: float | None = None
    total_ms: float | None = None
    ok: bool = False
    error: str | None = None
    #: The fingerprint of a key the API refused (401) during this attempt, which cost one fresh mint.
    refused_key: str | None = None


@dataclass
class TurnRecord:
    kind: str = "turn"
    turn: int = 0
    response_id: str | None = None
    #: From the end of the user's speech (last loud input frame) to each step, in ms.
    speech_stopped_ms: float | None = None
    response_created_ms: float | None = None
    first_audio_ms: float | None = None
    reply_end_ms: float | None = None
    reply_seconds: float | None = None
    status: str | None = None
    #: Set when the user spoke over the reply: how much of it had been heard (what it was truncated to).
    heard_ms: int | None = None
    _speech_end: float | None = field(default=None, repr=False)
    _playing: bool = field(default=False, repr=False)


@dataclass
class ResumeRecord:
    """The call carried its conversation into a new physical session (``rtkit.resume``): why, from which session
    to which, and what it cost. ``left_out`` counts restorable turns the budget did not keep."""

    kind: str = "resume"
    reason: str = ""
    attempt: int = 0
    old_session: str | None = None
    new_session: str | None = None
    items_restored: int = 0
    chars_restored: int = 0
    left_out: int = 0
    restore_ms: float | None = None
    ok: bool = False
    error: str | None = None
    at: float = field(default_factory=time.time)


@dataclass
class BargeIn:
    """The user spoke over a reply: playback stopped, and the API was told how much of the item was heard.

    ``played_ms`` is what the sink (or the page's Web Audio) had played, not what had arrived; ``produced_ms``
    is what had arrived of the item (``None`` over WebRTC, where the audio comes without a length).
    ``truncated`` is whether ``conversation.item.truncate`` went out (not for an item nothing of which was
    heard, nor one outside the conversation); ``cancelled`` whether ``response.cancel`` did (only where the
    session's ``interrupt_response`` is false: otherwise the server cancels the response itself).
    """

    kind: str = "barge_in"
    item_id: str = ""
    response_id: str | None = None
    content_index: int = 0
    played_ms: int = 0
    produced_ms: int | None = None
    truncated: bool = False
    cancelled: bool = False
    transport: str | None = None
    at: float = field(default_factory=time.time)


@dataclass
class ErrorRecord:
    """An ``error`` event or a failed ``response.done`` from the API, as it arrived (``time.time()``)."""

    kind: str = "error"
    code: str | None = None
    type: str | None = None
    message: str = ""
    param: str | None = None
    event_id: str | None = None
    at: float = field(default_factory=time.time)


class SessionMetrics:
    """Collects records; every finished record is also published on ``records``."""

    def __init__(self) -> None:
        self.connects: list[ConnectRecord] = []
        self.turns: list[TurnRecord] = []
        self.barge_ins: list[BargeIn] = []
        self.resumptions: list[ResumeRecord] = []
        self.errors: list[ErrorRecord] = []
        self.records: Broadcast[ConnectRecord | TurnRecord] = Broadcast()
        self._last_voiced_input: float | None = None
        self._turn: TurnRecord | None = None
        self._reply_samples = 0
        self._reply_rate = 24_000

    # -- connections ----------------------------------------------------------------------
    def connected(self, record: ConnectRecord) -> None:
        self.connects.append(record)
        self.records.publish(record)

    def resumed(self, record: ResumeRecord) -> None:
        """A row for the table; the call publishes the record itself (``conversation.resumed``, ``rtkit.resumed``),
        so ``records`` stays what the latency plots draw."""
        self.resumptions.append(record)

    def api_error(self, record: ErrorRecord) -> None:
        self.errors.append(record)

    def barge_in(self, record: BargeIn) -> None:
        self.barge_ins.append(record)
        turn = self._turn
        if turn is not None and turn.response_id == record.response_id:
            turn.heard_ms = record.played_ms

    # -- turns ----------------------------------------------------------------------------
    def input_level(self, rms_dbfs: float, at: float | None = None) -> None:
        if rms_dbfs >= VOICED_DBFS:
            self._last_voiced_input = time.perf_counter() if at is None else at

    def output_audio(self, rms_dbfs: float, samples: int, rate: int, at: float | None = None) -> None:
        turn = self._turn
        if turn is None or turn._speech_end is None:
            return
        now = time.perf_counter() if at is None else at
        if turn.response_created_ms is not None:
            self._reply_samples += samples
            self._reply_rate = rate
            if turn.first_audio_ms is None and rms_dbfs >= VOICED_DBFS:
                turn.first_audio_ms = self._ms(turn, now)

    def server_event(self, event: dict[str, Any], at: float | None = None) -> None:
        now = time.perf_counter() if at is None else at
        kind = event.get("type")
        if kind == "input_audio_buffer.speech_stopped":
            self._turn = TurnRecord(turn=len(self.turns) + 1, _speech_end=self._last_voiced_input or now)
            self._turn.speech_stopped_ms = self._ms(self._turn, now)
            self._reply_samples = 0
        turn = self._turn
        if turn is None:
            return
        if kind == "response.created" and turn.response_created_ms is None:
            turn.response_created_ms = self._ms(turn, now)
            turn.response_id = event.get("response", {}).get("id")
        elif kind == "response.done" and event.get("response", {}).get("id") == turn.response_id:
            turn.status = event["response"].get("status")
            if not turn._playing:  # WebSocket, or nothing played: the reply ends with its response
                self._finish(now)
        elif kind == "output_audio_buffer.started" and event.get("response_id") == turn.response_id:
            turn._playing = True
        elif kind in ("output_audio_buffer.stopped", "output_audio_buffer.cleared") and (
            event.get("response_id") == turn.response_id
        ):
            self._finish(now)

    def _finish(self, now: float) -> None:
        turn = self._turn
        if turn is None:
            return
        turn.reply_end_ms = self._ms(turn, now)
        turn.reply_seconds = round(self._reply_samples / self._reply_rate, 3)
        self.turns.append(turn)
        self.records.publish(turn)
        self._turn = None

    @staticmethod
    def _ms(turn: TurnRecord, now: float) -> float:
        assert turn._speech_end is not None
        return round((now - turn._speech_end) * 1000, 1)

    async def wait_for_turns(self, count: int = 1, timeout: float = 30.0) -> list[TurnRecord]:
        """Every finished turn, once there are at least ``count`` (a turn finishes when its reply has been
        played out, which for a browser call is a little after the server's last event)."""
        if len(self.turns) < count:
            await next_value(self.records, lambda _: len(self.turns) >= count, timeout)
        return list(self.turns)

    # -- export ---------------------------------------------------------------------------
    def to_records(self) -> list[dict[str, Any]]:
        """Every record as a dict (connections first, then turns, then resumptions): ready for ``pandas.DataFrame``."""
        rows = [asdict(r) for r in self.connects] + [asdict(t) for t in self.turns]
        rows += [asdict(r) for r in self.resumptions]
        rows += [asdict(b) for b in self.barge_ins]
        rows += [asdict(e) for e in self.errors]
        for row in rows:
            row.pop("_speech_end", None)
            row.pop("_playing", None)
        return rows

    def to_csv(self, path: str | Path) -> None:
        rows = self.to_records()
        fields: list[str] = []
        for row in rows:
            fields.extend(k for k in row if k not in fields)
        with Path(path).open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
