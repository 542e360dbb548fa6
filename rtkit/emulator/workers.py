"""Worker processes for WebRTC calls, so that one emulator can use every core.

Each call costs Opus encoding, decoding, SRTP and DTLS on the event loop's thread; one Python process
tops out at about ten calls at 50 frames/s each way (see the benchmarks). With ``workers=N`` the main
process keeps everything cheap (keys, WebSocket sessions, the admin routes) and hands each
``POST /v1/realtime/calls`` to the least busy of N worker processes. A worker is a complete emulator
of its own on a private loopback port: the main process forwards the offer with the main key and the
caller's session config (the SDK's multipart form), and returns the worker's answer. Media then flows
straight between the client and the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import multiprocessing.connection
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from rtkit._process import exit_with_parent
from rtkit.emulator.config import EmulatorConfig
from rtkit.emulator.errors import ApiError
from rtkit.emulator.hosts import LiveCall, Relay, session_config
from rtkit.emulator.sessions import SessionState

_ADMIN = "X-Rtkit-Admin-Token"


def _worker_main(settings: dict[str, Any], conn: multiprocessing.connection.Connection) -> None:
    """Entry point of a worker process: serve an emulator on a free loopback port until terminated."""
    from rtkit.emulator.server import Emulator

    exit_with_parent()

    async def serve() -> None:
        emulator = Emulator(EmulatorConfig(**settings))
        await emulator.start()
        conn.send(emulator.port)
        await emulator._server.wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())


@dataclass
class _Worker:
    process: multiprocessing.process.BaseProcess
    url: str


class WorkerPool:
    """N emulator processes that carry the WebRTC calls of one public emulator: a ``CallHost``.

    The main process learns that a call ended on its own (its peer hung up or vanished) only when it asks
    (``refresh``); until then ``owns`` may still say yes, and the worker answers for the call as for an
    unknown one.
    """

    def __init__(self, count: int, config: EmulatorConfig, admin_token: str) -> None:
        self.count = count
        self._settings = {
            "host": "127.0.0.1",
            "port": 0,
            "api_key": config.api_key.get_secret_value(),
            "admin_token": admin_token,
            "responder": config.responder,
            "cassette": config.cassette,
            "cassette_speed": config.cassette_speed,
            "default_model": config.default_model,
            "generation_speed": config.generation_speed,
            "max_session_seconds": config.max_session_seconds,
            # The calls live in the workers, so their bounds must too.
            "call_connect_timeout": config.call_connect_timeout,
            "call_peer_timeout": config.call_peer_timeout,
            # Media sockets follow the public emulator's choice: loopback in class on one machine, every
            # interface when it serves a LAN.
            "loopback_ice": config.loopback_ice if config.loopback_ice is not None else _loopback(config.host),
        }
        self._api_key = config.api_key.get_secret_value()
        self._admin = admin_token
        self._workers: list[_Worker] = []
        self._owner: dict[str, _Worker] = {}
        self._refreshing: asyncio.Future[list[LiveCall]] | None = None
        self._http = httpx.AsyncClient(timeout=30.0)
        self.on_ended: Callable[[str], None] = lambda call_id: None

    async def start(self) -> None:
        context = multiprocessing.get_context("spawn")
        pending = []
        for _ in range(self.count):
            parent, child = context.Pipe(duplex=False)
            process = context.Process(target=_worker_main, args=(self._settings, child), daemon=True)
            process.start()
            pending.append((process, parent))
        for process, parent in pending:
            if not await asyncio.to_thread(parent.poll, 60):
                raise RuntimeError("an emulator worker did not start within 60 s")
            port = parent.recv()
            self._workers.append(_Worker(process, f"http://127.0.0.1:{port}"))

    async def stop(self) -> None:
        await self._http.aclose()
        for worker in self._workers:
            worker.process.terminate()
        for worker in self._workers:
            await asyncio.to_thread(worker.process.join, 10)
        self._workers.clear()

    def owns(self, call_id: str) -> bool:
        return call_id in self._owner

    def sideband(self, call_id: str) -> Relay | None:
        """The worker's own sideband for a call it carries (``?call_id=``), and how to knock."""
        worker = self._owner.get(call_id)
        if worker is None:
            return None
        url = worker.url.replace("http://", "ws://", 1)
        return Relay(f"{url}/v1/realtime?call_id={call_id}", self._bearer)

    @property
    def calls(self) -> dict[str, str]:
        """Live call id → the worker URL carrying it (as of the last ``refresh``)."""
        return {call_id: worker.url for call_id, worker in self._owner.items()}

    @property
    def _bearer(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}"}

    async def create(self, sdp: str, session: SessionState) -> tuple[str, str]:
        """Forward an offer and the caller's session config to the least busy worker (the SDK's multipart form)."""
        load = {id(w): 0 for w in self._workers}
        for owner in self._owner.values():
            load[id(owner)] += 1
        worker = min(self._workers, key=lambda w: load[id(w)])
        config = json.dumps(session_config(session))
        response = await self._http.post(
            f"{worker.url}/v1/realtime/calls",
            headers=self._bearer,
            files={"sdp": (None, sdp, "application/sdp"), "session": (None, config, "application/json")},
        )
        if response.status_code != 201:
            body = response.json().get("error", {})
            raise ApiError(
                body.get("message", "The call could not be created."),
                status=response.status_code,
                type=body.get("type", "invalid_request_error"),
                code=body.get("code"),
                param=body.get("param"),
            )
        call_id = response.headers["location"].rsplit("/", 1)[-1]
        self._owner[call_id] = worker
        return call_id, response.text

    async def hangup(self, call_id: str) -> bool:
        worker = self._owner.get(call_id)
        if worker is None:
            return False
        response = await self._http.post(f"{worker.url}/v1/realtime/calls/{call_id}/hangup", headers=self._bearer)
        self._forget(call_id)
        return response.status_code == 200

    async def drop(self, call_id: str, *, silent: bool = False) -> bool:
        worker = self._owner.get(call_id)
        if worker is None:
            return False
        response = await self._http.post(
            f"{worker.url}/_rtkit/calls/{call_id}/drop", json={"silent": silent}, headers={_ADMIN: self._admin}
        )
        self._forget(call_id)
        return response.status_code == 200

    async def refresh(self) -> list[LiveCall]:
        """Ask every worker which calls are still live (peers hang up on their own) and forget the others.

        Concurrent callers share one round of requests, so that a flood of health checks costs the workers
        no more than one."""
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.ensure_future(self._refresh())
        return await asyncio.shield(self._refreshing)

    async def _refresh(self) -> list[LiveCall]:
        # Only calls known before asking can have ended: one created meanwhile may be missing from an answer.
        known = set(self._owner)
        live: list[LiveCall] = []
        for worker in self._workers:
            response = await self._http.get(f"{worker.url}/_rtkit/calls", headers={_ADMIN: self._admin})
            live.extend(LiveCall(**{**c, "worker": worker.url}) for c in response.json()["calls"])
        for call_id in known - {c.id for c in live}:
            self._forget(call_id)
        return live

    def _forget(self, call_id: str) -> None:
        if self._owner.pop(call_id, None) is not None:
            self.on_ended(call_id)


def _loopback(host: str) -> bool:
    from rtkit._ice import is_loopback_host

    return is_loopback_host(host)
