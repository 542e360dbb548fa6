"""One emulated conversation on asyncio: the driver of the sans-I/O ``core.Core``.

The core decides everything a session does; ``Engine`` gives it the loop's clock, hands its events to the
listeners (the transports), its reply audio to a ``Player`` (over WebRTC the reply rides the outgoing media
track instead of ``response.output_audio.delta`` events), runs the work it asks for as tasks (the responder,
MCP listings and calls) and feeds their results back, and wakes it at its ``deadline`` with one timer: that
timer paces the reply's 100 ms audio chunks at ``generation_speed`` and ends the session at its maximum
duration.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from rtkit.audio.pcm import PCM
from rtkit.emulator.core import (
    CLIENT_EVENTS,
    CallTool,
    Cancel,
    ClearPlay,
    Core,
    Expire,
    FinishPlay,
    ListTools,
    Output,
    Play,
    Respond,
    TransportKind,
)
from rtkit.emulator.mcp import McpFailure, call_tool, list_tools
from rtkit.emulator.responders import Responder
from rtkit.emulator.sessions import SessionState

__all__ = ["CLIENT_EVENTS", "Engine", "EventListener", "Player", "TransportKind"]

log = logging.getLogger("rtkit.emulator")

#: Takes each server event the session sends (a transport's outbox, the emulator's record).
EventListener = Callable[[dict[str, Any]], None]


class Player(Protocol):
    """The outgoing media track of a WebRTC call, as the engine sees it."""

    def enqueue(self, pcm: PCM, response_id: str) -> None: ...

    def finish(self, response_id: str) -> None: ...

    def clear(self) -> str | None: ...

    @property
    def playing(self) -> bool: ...


class Engine:
    """One Realtime session on the running loop: owns the core's tasks and its timer."""

    def __init__(
        self,
        session: SessionState,
        responder: Responder,
        *,
        transport: TransportKind,
        player: Player | None = None,
        generation_speed: float = 2.0,
        max_session_seconds: float = 3600.0,
        on_expired: Callable[[str], None] | None = None,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self.core = Core(
            session,
            now=self._loop.time(),
            wall=time.time(),
            playback=player is not None,
            generation_speed=generation_speed,
            max_session_seconds=max_session_seconds,
            scripted=getattr(responder, "scripted", False),
        )
        self.responder = responder
        self.transport = transport
        self.player = player
        self._on_expired = on_expired
        self._listeners: list[EventListener] = []
        self._tasks: dict[str, asyncio.Task[Any]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._closed = False

    @property
    def session(self) -> SessionState:
        return self.core.session

    @property
    def expires_at(self) -> int | None:
        """When the session hits its maximum duration (unix seconds), as ``session.expires_at`` says."""
        return self.core.expires_at

    # -- listeners ------------------------------------------------------------------------------------------
    def add_listener(self, listener: EventListener) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: EventListener) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(listener)

    # -- what the transports feed -----------------------------------------------------------------------------
    def start(self) -> None:
        """Announce the session, as the service does first on every new connection."""
        self.core.start(self._loop.time())
        self._pump()

    def handle_text(self, raw: str | bytes) -> None:
        """Handle one client event as it arrived on the wire; never raises for bad input."""
        self.core.receive_text(raw, self._loop.time())
        self._pump()

    def handle(self, event: Any) -> None:
        self.core.receive_event(event, self._loop.time())
        self._pump()

    def feed_audio(self, pcm: PCM) -> None:
        """Input audio (mono PCM16, 24 kHz) from the microphone track or from ``append`` events."""
        self.core.receive_audio(pcm, self._loop.time())
        self._pump()

    # -- called by the WebRTC player --------------------------------------------------------------------------
    def playback_started(self, response_id: str) -> None:
        self.core.playback_started(response_id, self._loop.time())
        self._pump()

    def playback_stopped(self, response_id: str) -> None:
        self.core.playback_stopped(response_id, self._loop.time())
        self._pump()

    async def close(self) -> None:
        self._closed = True
        self.core.close()
        self.core.take()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- doing what the core asks -------------------------------------------------------------------------------
    def _pump(self) -> None:
        """Carry out everything the core produced, in order, then set the timer for its next deadline."""
        while out := self.core.take():
            for item in out:
                self._perform(item)
        # Runs for every 20 ms of input audio: the timer is touched only when the deadline moved.
        deadline = None if self._closed else self.core.deadline
        if deadline != self._timer_at:
            self._schedule(deadline)

    def _perform(self, item: Output) -> None:
        if isinstance(item, dict):
            for listener in list(self._listeners):
                listener(item)
        elif isinstance(item, Play):
            assert self.player is not None
            self.player.enqueue(item.pcm, item.response_id)
        elif isinstance(item, FinishPlay):
            assert self.player is not None
            self.player.finish(item.response_id)
        elif isinstance(item, ClearPlay):
            assert self.player is not None
            self.player.clear()
        elif isinstance(item, Respond):
            self._run(item.key, self.responder.respond(item.turn), self.core.replied)
        elif isinstance(item, ListTools):
            self._run(item.key, list_tools(item.server), self.core.tools_listed)
        elif isinstance(item, CallTool):
            self._run(item.key, call_tool(item.server, item.name, item.arguments), self.core.tool_called)
        elif isinstance(item, Cancel):
            if task := self._tasks.pop(item.key, None):
                task.cancel()
        elif isinstance(item, Expire) and self._on_expired is not None:
            self._on_expired(item.message)

    def _schedule(self, deadline: float | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = deadline
        if deadline is not None:
            self._timer = self._loop.call_at(deadline, self._wake, deadline)

    def _wake(self, deadline: float) -> None:
        self._timer, self._timer_at = None, None
        # The loop runs a timer up to its clock's resolution early: it is due.
        self.core.advance(max(self._loop.time(), deadline))
        self._pump()

    def _run(self, key: str, work: Coroutine[Any, Any, Any], done: Callable[[str, Any, float], None]) -> None:
        """Run ``work`` as a task; its result (or its ``McpFailure``) goes back to the core through ``done``."""
        task = asyncio.create_task(work)
        self._tasks[key] = task

        def finished(task: asyncio.Task[Any]) -> None:
            if self._tasks.get(key) is not task:
                return  # cancelled: the core no longer waits for it
            del self._tasks[key]
            if task.cancelled():
                return
            exc = task.exception()
            if exc is not None and not isinstance(exc, McpFailure):
                log.error("emulator work failed", exc_info=exc)
                return
            done(key, exc if exc is not None else task.result(), self._loop.time())
            self._pump()

        task.add_done_callback(finished)
