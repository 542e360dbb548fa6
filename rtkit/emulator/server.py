"""``Emulator``: a running emulator (uvicorn on a loopback port by default), usable from Python,
the CLI and notebooks alike."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import deque
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any

from rtkit._ice import is_loopback_host
from rtkit._ids import new_id
from rtkit._serve import LoopServer
from rtkit.emulator.app import build_app
from rtkit.emulator.config import EmulatorConfig
from rtkit.emulator.cors import CallsCors
from rtkit.emulator.engine import Engine, TransportKind
from rtkit.emulator.errors import ApiError
from rtkit.emulator.faults import Faults
from rtkit.emulator.hosts import CallHost, LocalCalls, Switchboard
from rtkit.emulator.keys import KeyStore
from rtkit.emulator.limits import MAX_EVENT_FRAME_BYTES
from rtkit.emulator.responders import RESPONDERS, Responder, SessionResponders
from rtkit.emulator.sessions import SessionState
from rtkit.emulator.webrtc import ModelAudioTrack, RtcCall
from rtkit.emulator.workers import WorkerPool

log = logging.getLogger("rtkit.emulator")

EventHook = Callable[[dict[str, Any]], None]


def _refusal(status: int, message: str) -> bytes:
    """A refusal made by the HTTP layer, before any route ran, in the service's error shape."""
    code = {408: "request_timeout", 431: "request_header_fields_too_large"}.get(status)
    return bytes(ApiError(message, status=status, code=code).response().body)


class Emulator:
    """A local, wire-faithful stand-in for the Realtime API.

    ``async with Emulator() as emu:`` serves on a free loopback port; point the official SDK at
    ``emu.base_url`` (and ``emu.websocket_url``) with ``emu.api_key`` and it behaves like the real thing.
    """

    def __init__(
        self,
        config: EmulatorConfig | None = None,
        *,
        responder: Responder | SessionResponders | None = None,
        **settings: Any,
    ) -> None:
        self.config = config or EmulatorConfig(**settings)
        self.responder: Responder | SessionResponders = responder or self._configured_responder()
        self.faults = Faults(single_use_keys=self.config.single_use_keys)
        self.keys = KeyStore(self.config.api_key.get_secret_value())
        admin = self.config.admin_token
        self.admin_token = admin.get_secret_value() if admin else secrets.token_urlsafe(24)
        #: Every server event sent on any connection, newest last (bounded): for tests and notebooks.
        self.server_events: deque[dict[str, Any]] = deque(maxlen=20_000)
        self.event_hooks: list[EventHook] = []
        self.app = build_app(self)
        self.cors = CallsCors(self.app, self.config.cors_origins)
        self.asgi = self.cors
        self._server = LoopServer(
            self.asgi,
            self.config.host,
            self.config.port,
            what="emulator",
            error_body=_refusal,
            ws_max_size=MAX_EVENT_FRAME_BYTES,
        )
        self._tasks: set[asyncio.Future[Any]] = set()
        loopback = self.config.loopback_ice
        self.loopback_ice = is_loopback_host(self.config.host) if loopback is None else loopback
        #: The calls this process carries itself (none when workers carry them).
        self.local = LocalCalls(lambda session: self.new_call(session))
        #: The worker processes that carry the calls instead, with ``workers=N``.
        self.pool = WorkerPool(self.config.workers, self.config, self.admin_token) if self.config.workers else None
        host: CallHost = self.pool if self.pool is not None else self.local
        #: Where the routes open, hang up, join, list and drop calls, whichever host carries them.
        self.switchboard = Switchboard(host, self.faults)

    def _configured_responder(self) -> Responder | SessionResponders:
        if self.config.cassette is not None:
            from rtkit.emulator.replay import CassetteReplay

            return CassetteReplay.load(self.config.cassette, speed=self.config.cassette_speed)
        return RESPONDERS[self.config.responder]()

    # -- addresses ------------------------------------------------------------------------
    @property
    def calls(self) -> dict[str, RtcCall]:
        """Live call id → call, for the calls carried in this process (``pool.calls`` lists the workers')."""
        return self.local.calls

    @property
    def api_key(self) -> str:
        return self.config.api_key.get_secret_value()

    @property
    def port(self) -> int:
        return self._server.port or 0

    @property
    def origin(self) -> str:
        return self._server.origin

    @property
    def base_url(self) -> str:
        return f"{self.origin}/v1"

    @property
    def websocket_url(self) -> str:
        return self.base_url.replace("http://", "ws://", 1)

    def allow_origin(self, origin: str) -> None:
        """Let browser pages from ``origin`` POST ``/realtime/calls`` (CORS), as ``cors_origins`` does at start.

        Only an emulator started with a list of origins needs it (by default any origin may, as on the
        service): for a notebook whose page origin is known once the page shows a widget (``BrowserCall``).
        Raises ``ValueError`` for what is not a web origin."""
        self.cors.allow(origin)

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> Emulator:
        await self.switchboard.start()
        await self._server.start()
        log.info("emulator listening on %s", self.origin)
        return self

    async def stop(self) -> None:
        # Calls carried here end before the server, so that their peers hear the hangup; worker processes
        # stop after it, since its routes forward to them.
        await self.local.stop()
        await self._server.stop()
        await self.switchboard.stop()

    async def serve_forever(self) -> None:
        await self.start()
        await self._server.wait()

    async def __aenter__(self) -> Emulator:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # -- connections ----------------------------------------------------------------------
    async def delay(self, endpoint: str) -> None:
        seconds = self.faults.latency.get(endpoint)
        if seconds:
            await asyncio.sleep(seconds)

    def _record(self, event: dict[str, Any]) -> None:
        self.server_events.append(event)
        for hook in self.event_hooks:
            hook(event)

    def new_engine(
        self,
        session: SessionState,
        *,
        transport: TransportKind,
        player: Any = None,
        on_expired: Callable[[str], None] | None = None,
    ) -> Engine:
        responder = self.responder
        if isinstance(responder, SessionResponders):  # a cassette: each session plays it from its start
            responder = responder.for_session()
        engine = Engine(
            session,
            responder,
            transport=transport,
            player=player,
            generation_speed=self.config.generation_speed,
            max_session_seconds=self.config.max_session_seconds,
            on_expired=on_expired,
        )
        engine.add_listener(self._record)
        return engine

    def new_call(self, session: SessionState) -> RtcCall:
        """A WebRTC call of ``session`` carried in this process, not yet answered (``LocalCalls`` keeps it)."""
        track = ModelAudioTrack()
        holder: dict[str, RtcCall] = {}

        def expired(reason: str) -> None:
            self._background(holder["call"].close())

        engine = self.new_engine(session, transport="webrtc", player=track, on_expired=expired)
        call = RtcCall(
            new_id("rtc"),
            engine,
            track,
            loopback_only=self.loopback_ice,
            connect_timeout=self.config.call_connect_timeout,
            peer_timeout=self.config.call_peer_timeout,
        )
        holder["call"] = call
        return call

    def _background(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drop_call(self, call_id: str | None = None, *, silent: bool = False) -> int:
        """Drop one live call (or all of them), whichever process carries it, as a network failure would;
        returns how many."""
        return await self.switchboard.drop(call_id, silent=silent)
