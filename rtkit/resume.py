"""Resume with context: a new physical session continues the conversation where the last one stopped.

A Realtime session ends at its maximum duration (60 minutes; the server sends ``session_expired`` and closes),
when the network drops, or on any reconnection, and its conversation ends with it. The call already comes back
with a fresh key and its session config; the ``Resumer`` then re-creates the earlier turns in the new session
(``conversation.item.create``: text, transcripts of audio, function calls and their outputs), newest first
within a budget, before the call reports ``connected`` — so nothing the application sends lands ahead of them.

The cap is known in advance (``session.expires_at``): with ``proactive_margin_s`` set, the call moves to a fresh
session between turns that long before the cut, instead of losing a turn to it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from rtkit._ids import new_id
from rtkit.conversation import Conversation, Turn
from rtkit.errors import ConfigurationError
from rtkit.metrics import ResumeRecord

if TYPE_CHECKING:
    from rtkit.call import CallCore

__all__ = ["ResumePolicy", "Resumer"]

log = logging.getLogger("rtkit.resume")


@dataclass(frozen=True)
class ResumePolicy:
    """What a new physical session gets of the conversation, and whether to move before the cap.

    ``max_turns`` and ``max_chars`` bound what is re-created (the newest turns are kept; ``None`` is no limit):
    every restored character is input the model reads again on each response. ``proactive_margin_s`` moves the
    call to a fresh session, between turns, that many seconds before ``session.expires_at``; ``None`` waits for
    the server's cut. A session that lives less than twice the margin is never moved early (it would be moved
    again at once).
    """

    restore: bool = True
    max_turns: int | None = 50
    max_chars: int | None = 20_000
    proactive_margin_s: float | None = 60.0

    def __post_init__(self) -> None:
        for name in ("max_turns", "max_chars", "proactive_margin_s"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ConfigurationError(f"ResumePolicy.{name} must be positive or None, not {value!r}.")


class Resumer:
    """Owned by a call (``CallCore``): watches its server events, restores the conversation in each new
    physical session, and asks the call to move on before the cap when it is quiet."""

    def __init__(self, call: CallCore, policy: ResumePolicy, conversation: Conversation) -> None:
        self.call = call
        self.policy = policy
        self.conversation = conversation
        #: Why the current session will end, when known before it does (``session_expired``, ``proactive``).
        self._reason: str | None = None
        #: The physical session the call was last connected to, with its conversation live.
        self._live: str | None = None
        self._waiting: dict[str, str] = {}  # create event id -> item id, until the server confirms the item
        self._confirmed: asyncio.Future[None] | None = None
        self._errors: list[str] = []
        self._responses: set[str] = set()
        self._speaking = False
        self._playing = False
        self._due_for: str | None = None  # the session whose proactive time has come
        self._timer: asyncio.TimerHandle | None = None

    # -- watching --------------------------------------------------------------------------
    @property
    def idle(self) -> bool:
        """Between turns: no response in progress, the user not speaking, no model audio playing."""
        return not (self._responses or self._speaking or self._playing)

    def observe(self, event: dict[str, Any]) -> None:
        """One server event, before the application hears of it."""
        self.conversation.feed(event)
        kind = event.get("type")
        if kind == "session.created":
            self._responses.clear()
            self._speaking = self._playing = False
            self._schedule(event.get("session") or {})
        elif kind == "response.created":
            self._responses.add(str((event.get("response") or {}).get("id")))
        elif kind == "response.done":
            self._responses.discard(str((event.get("response") or {}).get("id")))
        elif kind == "input_audio_buffer.speech_started":
            self._speaking = True
        elif kind in (
            "input_audio_buffer.speech_stopped",
            "input_audio_buffer.committed",
            "input_audio_buffer.cleared",
        ):
            self._speaking = False
        elif kind == "output_audio_buffer.started":
            self._playing = True
        elif kind in ("output_audio_buffer.stopped", "output_audio_buffer.cleared"):
            self._playing = False
        elif kind in ("conversation.item.added", "conversation.item.done"):
            self._confirm(next((e for e, i in self._waiting.items() if i == (event.get("item") or {}).get("id")), None))
        elif kind == "error":
            err = event.get("error") or {}
            if err.get("code") == "session_expired":
                self._reason = "session_expired"
            elif err.get("event_id") in self._waiting:
                self._errors.append(f"{err.get('code')}: {err.get('message')}")
                self._confirm(err.get("event_id"))
        if self._due_for is not None and self.idle:
            self._move_on()

    def _confirm(self, event_id: str | None) -> None:
        if event_id is None:
            return
        self._waiting.pop(event_id, None)
        if not self._waiting and self._confirmed is not None and not self._confirmed.done():
            self._confirmed.set_result(None)

    # -- moving before the cap -------------------------------------------------------------
    def _schedule(self, session: dict[str, Any]) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._due_for = None
        margin, expires_at = self.policy.proactive_margin_s, session.get("expires_at")
        if margin is None or not isinstance(expires_at, int | float) or self.call.reconnect_policy.max_attempts < 1:
            return
        lifetime = expires_at - time.time()
        if lifetime <= 2 * margin:
            log.info("session lives %.1f s: too short to move %.1f s before its cap", lifetime, margin)
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        session_id = str(session.get("id"))
        self._timer = loop.call_later(lifetime - margin, self._due, session_id)

    def _due(self, session_id: str) -> None:
        self._timer = None
        if self.conversation.session_id != session_id:
            return
        self._due_for = session_id
        if self.idle:
            self._move_on()

    def _move_on(self) -> None:
        session_id, self._due_for = self._due_for, None
        call = self.call
        if call.state != "connected" or call._closing or session_id != self.conversation.session_id:
            return
        self._reason = "proactive"
        call._resume_now("the session nears its maximum duration: moving to a fresh one between turns")

    # -- restoring -------------------------------------------------------------------------
    async def restore(self, attempt: int) -> None:
        """In a session that has just started (config applied, not yet ``connected``): re-create the turns of
        the earlier ones, and record the resumption. A refused item does not fail the connection: the record
        says which, and the call's ``errors`` carried the server's word."""
        conversation, new = self.conversation, self.conversation.session_id
        old, self._live = self._live, new
        reason, self._reason = self._reason or ("dropped" if attempt else "reconnected"), None
        if old is None or new is None or old == new:
            return  # the call's first session: nothing to resume
        record = ResumeRecord(reason=reason, attempt=attempt, old_session=old, new_session=new)
        started = time.perf_counter()
        if self.policy.restore:
            turns, record.left_out = conversation.select(self.policy.max_turns, self.policy.max_chars)
            await self._recreate(turns, record)
        else:
            record.left_out = len([t for t in conversation.turns if t.restorable])
        record.restore_ms = round((time.perf_counter() - started) * 1000, 2)
        record.ok = record.error is None
        conversation.resumptions.append(record)
        self.call.metrics.resumed(record)
        log.info(
            "resumed (%s) %s → %s: %d items, %d chars", reason, old, new, record.items_restored, record.chars_restored
        )
        conversation.resumed.publish(record)
        self.call._notice("rtkit.resumed", **{k: v for k, v in asdict(record).items() if k != "kind"})

    async def _recreate(self, turns: list[Turn], record: ResumeRecord) -> None:
        if not turns:
            return
        self._errors = []
        self._confirmed = asyncio.get_running_loop().create_future()
        sent: dict[str, Turn] = {}
        for turn in turns:
            item_id, event_id = new_id("item"), new_id("rtkit_restore", 12)
            self.conversation.expect(item_id, turn)
            self._waiting[event_id] = item_id
            sent[item_id] = turn
            self.call.send({"type": "conversation.item.create", "event_id": event_id, "item": turn.as_item(item_id)})
        try:
            await asyncio.wait_for(asyncio.shield(self._confirmed), self.call.connect_timeout)
        except TimeoutError:
            self._errors.append(f"{len(self._waiting)} items not confirmed within {self.call.connect_timeout:g} s")
        finally:
            self._waiting.clear()
            self._confirmed = None
        session = self.conversation.session_id
        restored = [t for t in sent.values() if session in t.item_ids]
        record.items_restored = len(restored)
        record.chars_restored = sum(t.chars for t in restored)
        if self._errors:
            record.error = "; ".join(self._errors)
            log.warning("restoring the conversation: %s", record.error)
