"""One logical conversation across the physical sessions a call goes through.

A Realtime session keeps its conversation on the server, and loses it when the session ends: at its maximum
duration (``session_expired``), when the network drops, on any reconnection. The call then opens a fresh
session and re-creates the earlier turns there (``rtkit.resume``). ``Conversation`` is what the application
reads meanwhile: each turn once, in order, with its text (or the transcript of its audio), the physical
session it happened in, and the item id it has in every session it lives in.

It is fed only from server events the call receives anyway; nothing here talks to the network.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from rtkit.cost import PRICES, Cost, PriceTable, Usage
from rtkit.events import Broadcast, next_value
from rtkit.metrics import ResumeRecord

__all__ = ["Billed", "Conversation", "PhysicalSession", "Turn"]

Role = Literal["user", "assistant", "system"]
TurnKind = Literal["message", "function_call", "function_call_output"]

_KINDS: tuple[TurnKind, ...] = ("message", "function_call", "function_call_output")
_TEXT_PARTS = ("input_text", "output_text", "text")
_AUDIO_PARTS = ("input_audio", "output_audio", "audio")


@dataclass
class Turn:
    """One item of the logical conversation. ``id`` stays the same across sessions; ``item_ids`` maps each
    physical session id to the item id the turn has there (the first entry is where it happened)."""

    id: str
    kind: TurnKind
    session_id: str
    role: Role | None = None
    #: The text, or the transcript of spoken audio (``spoken``); ``None`` while it is not known.
    text: str | None = None
    spoken: bool = False
    name: str | None = None
    call_id: str | None = None
    arguments: str | None = None
    output: str | None = None
    status: str | None = None
    #: Where the model's audio was cut (``conversation.item.truncated``): the text may say more than was heard.
    truncated_ms: int | None = None
    #: Length of the model's audio for this turn as billed in ``response.done`` (one output audio token per
    #: 50 ms, OpenAI's "Realtime costs" guide): what a truncation is a fraction of.
    audio_ms: int | None = None
    #: What the response that produced this turn was billed (``response.done``); ``None`` for the user's turns.
    usage: Usage | None = None
    #: When the item appeared and when it was done (``time.time()``): the turn's span on the call's clock.
    at: float = field(default_factory=time.time)
    ended_at: float | None = None
    item_ids: dict[str, str] = field(default_factory=dict)

    @property
    def chars(self) -> int:
        """What the turn weighs in a restoration budget."""
        return sum(len(part or "") for part in (self.text, self.name, self.arguments, self.output))

    @property
    def heard_text(self) -> str | None:
        """What the user heard of a reply cut short: its transcript up to the played share of its audio, at a
        word boundary. The API deletes the transcript of a truncated item so that the model's context holds
        nothing unheard; this is the client's estimate of the heard part (speech is taken as evenly paced)."""
        if self.truncated_ms is None or not self.text or not self.audio_ms:
            return self.text
        words = self.text.split()
        share = min(1.0, self.truncated_ms / self.audio_ms)
        return " ".join(words[: round(len(words) * share)])

    @property
    def interrupted(self) -> bool:
        """The turn was cut short: truncated where playback stopped, or ended ``incomplete`` (cancelled)."""
        return self.truncated_ms is not None or self.status == "incomplete"

    @property
    def restorable(self) -> bool:
        """Whether the turn can be re-created as an item: the API takes text, not an assistant's audio."""
        if self.kind == "message":
            return bool(self.text) and self.role is not None
        if self.kind == "function_call":
            return bool(self.call_id and self.name) and self.arguments is not None
        return bool(self.call_id) and self.output is not None

    def as_item(self, item_id: str) -> dict[str, Any]:
        """The ``conversation.item.create`` item that re-creates this turn as ``item_id``. Audio becomes its
        transcript: an assistant item with audio content only is refused (``item.content[0].text``)."""
        if self.kind == "function_call":
            return {
                "type": "function_call",
                "id": item_id,
                "call_id": self.call_id,
                "name": self.name,
                "arguments": self.arguments,
            }
        if self.kind == "function_call_output":
            return {"type": "function_call_output", "id": item_id, "call_id": self.call_id, "output": self.output}
        part = "output_text" if self.role == "assistant" else "input_text"
        # A reply cut short comes back as what was heard of it, as the API's own truncation leaves it.
        text = self.heard_text if self.role == "assistant" else self.text
        return {"type": "message", "id": item_id, "role": self.role, "content": [{"type": part, "text": text}]}


@dataclass
class PhysicalSession:
    """One server-side session (``sess_…``) the call was connected to; times are ``time.time()``."""

    id: str
    started_at: float
    expires_at: float | None = None
    ended_at: float | None = None
    model: str | None = None


@dataclass(frozen=True)
class Billed:
    """One response as the service billed it: every ``response.done`` counts, cancelled and out-of-band ones too
    (a response bills what it generated, whether or not anyone heard it)."""

    response_id: str
    session_id: str | None
    model: str | None
    status: str | None
    usage: Usage
    turn_ids: tuple[str, ...] = ()


class Conversation:
    """The history of a call, across its physical sessions. ``resumed`` publishes a ``ResumeRecord`` each
    time the call carries the conversation into a new session (``resumptions`` keeps them)."""

    def __init__(self) -> None:
        self.turns: list[Turn] = []
        self.sessions: list[PhysicalSession] = []
        self.resumptions: list[ResumeRecord] = []
        self.resumed: Broadcast[ResumeRecord] = Broadcast()
        #: Every response's usage, in order (``usage`` sums them, ``cost()`` prices them).
        self.billed: list[Billed] = []
        self._by_item: dict[str, Turn] = {}
        #: Items asked for in the current session that re-create a known turn (``expect``).
        self._expected: dict[str, Turn] = {}
        self._count = 0

    # -- reading ----------------------------------------------------------------------------
    @property
    def session(self) -> PhysicalSession | None:
        """The physical session the call is (or was last) in."""
        return self.sessions[-1] if self.sessions else None

    @property
    def session_id(self) -> str | None:
        return self.sessions[-1].id if self.sessions else None

    def __len__(self) -> int:
        return len(self.turns)

    def turn_for(self, item_id: str) -> Turn | None:
        """The turn an item id (of any session) stands for."""
        return self._by_item.get(item_id)

    def in_session(self, session_id: str) -> list[Turn]:
        """The turns present in one physical session: those that happened there and those restored there."""
        return [turn for turn in self.turns if session_id in turn.item_ids]

    async def next_resumption(self, timeout: float = 30.0) -> ResumeRecord:
        """The next time the call carries this conversation into a new physical session."""
        return await next_value(self.resumed, lambda _: True, timeout)

    @property
    def usage(self) -> Usage:
        """The tokens of every response so far, across physical sessions."""
        return sum((b.usage for b in self.billed), Usage())

    def cost(self, prices: PriceTable = PRICES, *, model: str | None = None) -> Cost:
        """What the responses so far cost, each priced for its session's model (or ``model``). The emulator
        reports plausible counts, so a lesson's cost has the right order of magnitude, not an invoice."""
        total = Cost()
        for billed in self.billed:
            total += prices.cost(billed.usage, model or billed.model or "gpt-realtime")
        return total

    def to_records(self) -> list[dict[str, Any]]:
        """Every turn as a dict, ready for ``pandas.DataFrame``."""
        return [{**asdict(turn), "interrupted": turn.interrupted} for turn in self.turns]

    def to_dict(self) -> dict[str, Any]:
        """The whole record: physical sessions, turns, every response's usage, the totals. JSON-ready."""
        return {
            "sessions": [asdict(session) for session in self.sessions],
            "turns": self.to_records(),
            "billed": [asdict(billed) for billed in self.billed],
            "usage": asdict(self.usage),
            "resumptions": [asdict(record) for record in self.resumptions],
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    def to_markdown(self) -> str:
        """A transcript for notes: who said what, in order, with seconds from the start of the call, what was
        cut short and what was heard of it, function calls and their outputs."""
        start = self.sessions[0].started_at if self.sessions else (self.turns[0].at if self.turns else 0.0)
        lines = [f"# Conversation: {len(self.turns)} turns in {len(self.sessions)} session(s)", ""]
        for turn in self.turns:
            at = f"{turn.at - start:6.1f} s"
            if turn.kind == "function_call":
                lines.append(f"- `{at}` **model calls** `{turn.name}({turn.arguments or ''})`")
            elif turn.kind == "function_call_output":
                lines.append(f"- `{at}` **function returns** `{turn.output}`")
            else:
                text = turn.text if turn.text is not None else "*(no transcript)*"
                how = " (spoken)" if turn.spoken else ""
                lines.append(f"- `{at}` **{turn.role}**{how}: {text}")
                if turn.truncated_ms is not None:
                    of = f" of {turn.audio_ms} ms" if turn.audio_ms else ""
                    lines.append(f"  - *cut at {turn.truncated_ms} ms{of}; heard:* {turn.heard_text}")
                elif turn.interrupted:
                    lines.append("  - *cancelled before it ended*")
        usage = self.usage
        lines += [
            "",
            f"{len(self.billed)} responses: {usage.input_tokens} input tokens ({usage.cached_tokens} cached), "
            f"{usage.output_tokens} output tokens.",
        ]
        return "\n".join(lines) + "\n"

    def clear(self) -> None:
        """Forget the history: the next session starts a new conversation."""
        self.turns.clear()
        self._by_item.clear()
        self._expected.clear()

    # -- restoring --------------------------------------------------------------------------
    def select(self, max_turns: int | None, max_chars: int | None) -> tuple[list[Turn], int]:
        """The newest restorable turns within the budget, oldest first, and how many restorable ones were left
        out. A function output whose call was left out goes too: the API has nothing to attach it to."""
        current = self.session_id
        candidates = [t for t in self.turns if t.restorable and current not in t.item_ids]
        chosen: list[Turn] = []
        chars = 0
        for turn in reversed(candidates):
            if max_turns is not None and len(chosen) >= max_turns:
                break
            if max_chars is not None and chars + turn.chars > max_chars:
                break
            chosen.append(turn)
            chars += turn.chars
        chosen.reverse()
        calls = {t.call_id for t in chosen if t.kind == "function_call"}
        chosen = [t for t in chosen if t.kind != "function_call_output" or t.call_id in calls]
        return chosen, len(candidates) - len(chosen)

    def expect(self, item_id: str, turn: Turn) -> None:
        """``item_id`` is about to be created in the current session to re-create ``turn``: when the server
        confirms it, it maps to that turn instead of adding one."""
        self._expected[item_id] = turn

    # -- fed by the call --------------------------------------------------------------------
    def feed(self, event: dict[str, Any]) -> None:
        """One server event, as the call received it."""
        kind = event.get("type")
        if kind == "session.created":
            self._new_session(event.get("session") or {})
        elif kind in ("conversation.item.added", "conversation.item.done", "conversation.item.created"):
            self._on_item(event.get("item") or {})
        elif kind == "response.output_item.done":
            # A cancelled response ends its item here only (no conversation.item.done): keep what was said.
            item = event.get("item") or {}
            if item.get("id") in self._by_item:
                self._on_item(item)
        elif kind == "conversation.item.deleted":
            self._forget(event.get("item_id"))
        elif kind == "response.done":
            self._on_response_done(event.get("response") or {})
        else:
            turn = self._by_item.get(event.get("item_id") or "")
            if turn is not None:
                self._on_detail(turn, kind, event)

    def _new_session(self, session: dict[str, Any]) -> None:
        now = time.time()
        if self.sessions and self.sessions[-1].ended_at is None:
            self.sessions[-1].ended_at = now
        expires = session.get("expires_at")
        model = session.get("model") if isinstance(session.get("model"), str) else None
        self.sessions.append(
            PhysicalSession(
                str(session.get("id") or f"session_{len(self.sessions) + 1}"), now, expires or None, model=model
            )
        )
        self._expected.clear()

    def _on_item(self, item: dict[str, Any]) -> None:
        item_id, kind = item.get("id"), item.get("type")
        if not isinstance(item_id, str) or kind not in _KINDS or self.session_id is None:
            return
        turn = self._by_item.get(item_id)
        if turn is None:
            turn = self._expected.pop(item_id, None)
            if turn is not None:  # a restored item: the same turn, in one more session
                turn.item_ids[self.session_id] = item_id
                self._by_item[item_id] = turn
                return
            self._count += 1
            turn = Turn(f"turn_{self._count}", kind, self.session_id, role=item.get("role"))
            turn.item_ids[self.session_id] = item_id
            self._by_item[item_id] = turn
            self.turns.append(turn)
        if turn.session_id != self.session_id:
            return  # a restored copy says nothing new about the turn
        turn.status = item.get("status") or turn.status
        if turn.ended_at is None and turn.status in ("completed", "incomplete"):
            turn.ended_at = time.time()
        turn.name = item.get("name") or turn.name
        turn.call_id = item.get("call_id") or turn.call_id
        if item.get("arguments"):
            turn.arguments = item["arguments"]
        if item.get("output") is not None:
            turn.output = item["output"]
        texts: list[str] = []
        for part in item.get("content") or []:
            if part.get("type") in _TEXT_PARTS and isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif part.get("type") in _AUDIO_PARTS:
                turn.spoken = True
                if isinstance(part.get("transcript"), str):
                    texts.append(part["transcript"])
        if texts and any(texts):
            turn.text = " ".join(t for t in texts if t)

    def _on_detail(self, turn: Turn, kind: Any, event: dict[str, Any]) -> None:
        if kind == "response.output_audio_transcript.delta" and isinstance(event.get("delta"), str):
            # Kept as it streams: a reply cut short ends without a transcript (the API deletes it on truncation).
            turn.text, turn.spoken = (turn.text or "") + event["delta"], True
        elif kind in ("conversation.item.input_audio_transcription.completed", "response.output_audio_transcript.done"):
            turn.text, turn.spoken = event.get("transcript"), True
        elif kind == "response.output_text.done":
            turn.text = event.get("text")
        elif kind == "response.function_call_arguments.done":
            turn.arguments, turn.name, turn.call_id = event.get("arguments"), event.get("name"), event.get("call_id")
        elif kind == "conversation.item.truncated":
            turn.truncated_ms = event.get("audio_end_ms")

    def _on_response_done(self, response: dict[str, Any]) -> None:
        usage = Usage.from_api(response.get("usage"))
        produced = [
            self._by_item[item["id"]]
            for item in response.get("output") or []
            if isinstance(item, dict) and item.get("id") in self._by_item
        ]
        spoken = [turn for turn in produced if turn.kind == "message"]
        if usage.audio_out > 0 and len(spoken) == 1:
            spoken[0].audio_ms = usage.audio_out * 50  # one item: the whole audio is its own
        if produced:
            produced[0].usage = usage  # a response's usage is one bill: on its first turn, not split
        session = self.session
        self.billed.append(
            Billed(
                str(response.get("id") or f"response_{len(self.billed) + 1}"),
                session.id if session else None,
                session.model if session else None,
                response.get("status"),
                usage,
                tuple(turn.id for turn in produced),
            )
        )

    def _forget(self, item_id: Any) -> None:
        """The application deleted the item: it is no part of the conversation any more, here or later."""
        turn = self._by_item.get(item_id) if isinstance(item_id, str) else None
        if turn is None:
            return
        self.turns.remove(turn)
        for other in turn.item_ids.values():
            self._by_item.pop(other, None)
