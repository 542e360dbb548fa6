"""Serving an ASGI app with uvicorn inside the caller's event loop (tests, notebooks, the CLI alike)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import Any

import uvicorn

from rtkit.errors import ConfigurationError


class _DenialNoise(logging.Filter):
    """uvicorn's websockets-sansio protocol logs an error after every WebSocket *denial response* (the HTTP
    401/429 the Realtime API answers a bad upgrade with), although the response went out complete. Our
    apps answer every upgrade with accept or a denial, so this line only ever reports that known quirk."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "returned without completing handshake" not in record.getMessage()


logging.getLogger("uvicorn.error").addFilter(_DenialNoise())


class LoopServer:
    """uvicorn on a socket we bind ourselves, so that port 0 works and a busy port is a clear error."""

    def __init__(self, app: Any, host: str, port: int, *, what: str) -> None:
        self.app = app
        self.host = host
        self.requested_port = port
        self.what = what
        self.port: int | None = None
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        # IPPROTO_TCP, not 0: asyncio only sets TCP_NODELAY on sockets that say they are TCP, and without it
        # every response after the first on a kept-alive connection waits ~40 ms for a delayed ACK.
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.requested_port))
        except OSError as exc:
            sock.close()
            raise ConfigurationError(
                f"The {self.what} cannot listen on {self.host}:{self.requested_port}: {exc.strerror}.",
                hint="pick another --port, or stop what is using this one",
            ) from None
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app, log_level="warning", lifespan="off", ws="websockets-sansio", ws_per_message_deflate=True
        )
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.005)

    @property
    def origin(self) -> str:
        if self.port is None:
            raise ConfigurationError(f"The {self.what} is not running.", hint="await its start() first")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else ("[::1]" if self.host == "::" else self.host)
        host = f"[{host}]" if ":" in host and not host.startswith("[") else host
        return f"http://{host}:{self.port}"

    async def wait(self) -> None:
        if self._task is not None:
            await self._task

    async def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._server = self._task = None
