"""Serving an ASGI app with uvicorn inside the caller's event loop (tests, notebooks, the CLI alike)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from rtkit.errors import ConfigurationError


class _DenialNoise(logging.Filter):
    """uvicorn's websockets-sansio protocol logs an error after every WebSocket *denial response* (the HTTP
    401/429 the Realtime API answers a bad upgrade with), although the response went out complete. Our
    apps answer every upgrade with accept or a denial, so this line only ever reports that known quirk."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "returned without completing handshake" not in record.getMessage()


logging.getLogger("uvicorn.error").addFilter(_DenialNoise())


#: Request line and headers together; what Node allows by default (nginx: 1 KiB, growing to 4 × 8 KiB).
MAX_HEADER_BYTES = 16 * 1024
#: Header fields per request (Apache's ``LimitRequestFields``).
MAX_HEADER_FIELDS = 100
#: Seconds a client has, from connecting (or from its previous response), to send a request's headers.
HEADER_TIMEOUT = 10.0

#: ``(status, message) -> body``: the error shape of the app being served, for refusals made before
#: the app sees the request.
ErrorBody = Callable[[int, str], bytes]


def _raw_response(status: int, body: bytes) -> bytes:
    phrase = {400: "Bad Request", 408: "Request Timeout", 431: "Request Header Fields Too Large"}[status]
    head = (
        f"HTTP/1.1 {status} {phrase}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


class _HeadTooLarge(Exception):
    """Raised from a parser callback: httptools turns it into ``HttpParserCallbackError``, which uvicorn
    answers through ``send_400_response``, where the reason is picked up again."""


class _GuardedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol with the guards it lacks: a deadline for each request's headers
    (uvicorn times out idle keep-alive connections, not a request whose headers never finish: the
    slowloris attack), limits on the size and number of header fields (llhttp has none; a 1 MB header
    or 10,000 of them were read whole), and every refusal in the app's own error shape (uvicorn's are
    plain text)."""

    error_body: ErrorBody
    header_timeout: float = HEADER_TIMEOUT

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_bytes = 0
        self._head_fields = 0
        self._refusal: tuple[int, str] | None = None
        self._header_timer: asyncio.TimerHandle | None = None
        self._arm()

    def _arm(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout, self._too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = self._head_fields = 0
        self._arm()  # a kept-alive connection's next request gets the same deadline

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        # llhttp may report one field in pieces; each piece counts its bytes, each name a field.
        self._head_fields += bool(name)
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def _count(self, size: int) -> None:
        self._head_bytes += size
        if self._head_fields > MAX_HEADER_FIELDS:
            self._refusal = (431, f"A request may carry at most {MAX_HEADER_FIELDS} header fields.")
        elif self._head_bytes > MAX_HEADER_BYTES:
            self._refusal = (431, f"The request headers are larger than {MAX_HEADER_BYTES} bytes.")
        if self._refusal is not None:
            raise _HeadTooLarge

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _too_slow(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self._refuse(408, f"The request headers did not arrive within {self.header_timeout:g} s.")

    def send_400_response(self, msg: str) -> None:
        self._disarm()
        self._refuse(*(self._refusal or (400, "The request is not valid HTTP/1.1.")))

    def _refuse(self, status: int, message: str) -> None:
        self.transport.write(_raw_response(status, self.error_body(status, message)))
        self.transport.close()


class LoopServer:
    """uvicorn on a socket we bind ourselves, so that port 0 works and a busy port is a clear error."""

    def __init__(
        self, app: Any, host: str, port: int, *, what: str, error_body: ErrorBody, ws_max_size: int = 16 * 2**20
    ) -> None:
        self.app = app
        #: The largest WebSocket message taken; a bigger one is closed with 1009 and a reason naming the limit.
        self.ws_max_size = ws_max_size
        self._protocol = type("GuardedHttpTools", (_GuardedHttpTools,), {"error_body": staticmethod(error_body)})
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
            self.app,
            log_level="warning",
            lifespan="off",
            http=self._protocol,
            ws="websockets-sansio",
            ws_max_size=self.ws_max_size,
            ws_per_message_deflate=True,
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
