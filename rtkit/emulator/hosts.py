"""Where WebRTC calls are carried, behind one interface, and the one place that opens, hangs up and drops them.

A ``CallHost`` carries calls: ``LocalCalls`` in this process (``RtcCall`` peers on this event loop), or
``WorkerPool`` (``workers.py``) in emulator worker processes. The ``Switchboard`` in front of the host is
what the routes, the admin routes and ``Emulator`` talk to: it applies every fault that touches calls
(``reject_calls``, ``block_media``, ``drop_calls_after``), remembers which ephemeral key opened which call,
and answers a call it may not show exactly like one that does not exist. Neither it nor its callers know
which host they have.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from rtkit.emulator.engine import Engine
from rtkit.emulator.errors import ApiError
from rtkit.emulator.faults import Faults
from rtkit.emulator.keys import Caller
from rtkit.emulator.sessions import SessionState
from rtkit.emulator.webrtc import RtcCall

log = logging.getLogger("rtkit.emulator")


@dataclass(frozen=True)
class LiveCall:
    """One live call as the operator's listing shows it; ``worker`` is the URL of the process carrying it."""

    id: str
    state: str
    session_id: str
    created: float
    worker: str | None = None

    def to_json(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"id": self.id, "state": self.state, "session_id": self.session_id}
        wire["created"] = self.created
        if self.worker is not None:
            wire["worker"] = self.worker
        return wire


@dataclass(frozen=True)
class Relay:
    """A call's sideband in another process: the WebSocket to relay a ``?call_id=`` join to, and its headers."""

    url: str
    headers: dict[str, str]


#: What a ``?call_id=`` WebSocket joins: the call's engine when this process carries it, else a relay.
Sideband = Engine | Relay


class CallHost(Protocol):
    """Carries WebRTC calls. ``on_ended`` is told each call id the host lets go of, whatever ended it."""

    on_ended: Callable[[str], None]

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def create(self, sdp: str, session: SessionState) -> tuple[str, str]:
        """Answer an offer with a new call of ``session``: (call id, SDP answer); ``ApiError`` for a bad offer."""
        ...

    async def hangup(self, call_id: str) -> bool:
        """Hang up a call; False when the host carries no such call."""
        ...

    async def drop(self, call_id: str, *, silent: bool = False) -> bool:
        """Cut a call as a network failure would (``silent``: without a word to the peer); False if unknown."""
        ...

    def owns(self, call_id: str) -> bool:
        """Whether the host believes it carries this call (a call may have ended since it last looked)."""
        ...

    def sideband(self, call_id: str) -> Sideband | None: ...

    async def refresh(self) -> list[LiveCall]:
        """The calls still live, read afresh; the host forgets (and reports) those that ended on their own."""
        ...


def call_not_found(call_id: str) -> ApiError:
    return ApiError(f"Call '{call_id}' not found.", status=404, code="call_not_found")


def session_config(session: SessionState) -> dict[str, Any]:
    """A session's configuration as a client sends it (the SDK's ``session`` field): no id, no expiry."""
    wire = session.to_wire()
    for key in ("id", "object", "expires_at"):
        wire.pop(key, None)
    return wire


class LocalCalls:
    """Calls carried in this process: one ``RtcCall`` each, made by ``new_call`` (looked up on every call, so
    a benchmark may wrap the emulator's factory)."""

    def __init__(self, new_call: Callable[[SessionState], RtcCall]) -> None:
        self._new_call = new_call
        #: Live call id → call.
        self.calls: dict[str, RtcCall] = {}
        self.on_ended: Callable[[str], None] = lambda call_id: None

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        for call in list(self.calls.values()):
            await call.close()

    async def create(self, sdp: str, session: SessionState) -> tuple[str, str]:
        call = self._new_call(session)
        call.on_closed = self._closed
        self.calls[call.call_id] = call
        try:
            answer = await call.answer(sdp)
        except Exception as exc:  # aiortc raises ValueError and friends for SDP it cannot use
            await call.close()
            raise ApiError(f"Invalid SDP offer: {exc}", code="invalid_offer", param="sdp") from None
        return call.call_id, answer

    def _closed(self, call: RtcCall) -> None:
        if self.calls.pop(call.call_id, None) is not None:
            self.on_ended(call.call_id)

    async def hangup(self, call_id: str) -> bool:
        call = self.calls.get(call_id)
        if call is None:
            return False
        await call.close()
        return True

    async def drop(self, call_id: str, *, silent: bool = False) -> bool:
        call = self.calls.get(call_id)
        if call is None:
            return False
        await call.drop(silent=silent)
        return True

    def owns(self, call_id: str) -> bool:
        return call_id in self.calls

    def sideband(self, call_id: str) -> Sideband | None:
        call = self.calls.get(call_id)
        return call.engine if call is not None else None

    async def refresh(self) -> list[LiveCall]:
        return [LiveCall(c.call_id, c.state, c.engine.session.id, c.created) for c in self.calls.values()]


class Switchboard:
    """The one way calls are opened, hung up, joined and dropped, whichever host carries them."""

    def __init__(self, host: CallHost, faults: Faults) -> None:
        self.host = host
        self.faults = faults
        #: Call id → the ephemeral key that opened it. The main key has no entry: it may act on every call.
        self._keys: dict[str, str] = {}
        self._timers: set[asyncio.TimerHandle] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        host.on_ended = self._ended

    async def start(self) -> None:
        await self.host.start()

    async def stop(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.host.stop()

    # -- the caller's side ----------------------------------------------------------------
    def admit(self) -> None:
        """Refuse a new call (or WebSocket session) as planned by ``reject_calls``, before its body is read."""
        if failure := self.faults.take_call_failure():
            raise failure

    async def open(self, sdp: str, session: SessionState, caller: Caller) -> tuple[str, str]:
        """A new call for ``caller``: (call id, SDP answer), with the media faults applied to it."""
        call_id, answer = await self.host.create(sdp, session)
        if caller.secret is not None:
            self._keys[call_id] = caller.secret.value
        if self.faults.block_media:
            await self.host.drop(call_id, silent=True)
        elif self.faults.drop_calls_after is not None:
            self._later(self.faults.drop_calls_after, lambda: self.host.drop(call_id))
        return call_id, answer

    def may_act_on(self, call_id: str, caller: Caller) -> bool:
        """The main key keeps the server's rights on every call; an ephemeral key acts only on the calls it opened.
        A refused caller must be told the call does not exist, so that ids cannot be probed."""
        return caller.secret is None or self._keys.get(call_id) == caller.secret.value

    async def hangup(self, call_id: str, caller: Caller) -> None:
        """Hang up ``caller``'s call; another session's call is answered exactly like an unknown one (404)."""
        if not (self.may_act_on(call_id, caller) and await self.host.hangup(call_id)):
            raise call_not_found(call_id)

    def sideband(self, call_id: str, caller: Caller) -> Sideband:
        """What a ``?call_id=`` WebSocket of ``caller`` joins; 404 as for ``hangup``."""
        joined = self.host.sideband(call_id) if self.may_act_on(call_id, caller) else None
        if joined is None:
            raise call_not_found(call_id)
        return joined

    # -- the operator's side --------------------------------------------------------------
    async def live(self) -> list[LiveCall]:
        """Every live call, read afresh from the host carrying it."""
        return await self.host.refresh()

    async def drop(self, call_id: str | None = None, *, silent: bool = False) -> int:
        """Drop one live call (or all of them) as a network failure would; returns how many were live."""
        ids = [call_id] if call_id is not None else [c.id for c in await self.host.refresh()]
        dropped = 0
        for each in ids:
            dropped += await self.host.drop(each, silent=silent)
        return dropped

    # -- bookkeeping ----------------------------------------------------------------------
    def _ended(self, call_id: str) -> None:
        self._keys.pop(call_id, None)

    def _later(self, delay: float, action: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        """Run ``action`` in ``delay`` s unless the switchboard stops first."""

        def fire() -> None:
            self._timers.discard(timer)
            task = asyncio.ensure_future(action())
            self._tasks.add(task)
            task.add_done_callback(self._finished)

        timer = asyncio.get_running_loop().call_later(delay, fire)
        self._timers.add(timer)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.warning("a planned call fault failed: %r", exc)


__all__ = ["CallHost", "LiveCall", "LocalCalls", "Relay", "Sideband", "Switchboard", "call_not_found"]
