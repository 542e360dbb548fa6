"""The emulator as an ASGI app, assembled from its route modules."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from rtkit.emulator import admin, routes
from rtkit.emulator.errors import ApiError

if TYPE_CHECKING:
    from rtkit.emulator.server import Emulator


async def _http_error(request: Request, exc: Exception) -> Response:
    """Unknown paths and methods answer as the service does, in its error shape (Starlette's are text)."""
    status = getattr(exc, "status_code", 400)
    if status in (404, 405):
        message = f"Invalid URL ({request.method} {request.url.path})"
    else:
        message = str(getattr(exc, "detail", "")) or "Invalid request."
    return ApiError(message, status=status).response()


def build_app(emulator: Emulator) -> Starlette:
    app = Starlette(
        routes=[
            Route("/v1/realtime/client_secrets", routes.client_secrets, methods=["POST"]),
            Route("/v1/realtime/calls", routes.create_call, methods=["POST"]),
            Route("/v1/realtime/calls/{call_id}/hangup", routes.hangup_call, methods=["POST"]),
            WebSocketRoute("/v1/realtime", routes.realtime_websocket),
            Route("/_rtkit/health", admin.health),
            Route("/_rtkit/faults", admin.faults, methods=["GET", "POST"]),
            Route("/_rtkit/calls", admin.list_calls),
            Route("/_rtkit/calls/{call_id}/drop", admin.drop_call, methods=["POST"]),
            Route("/_rtkit/keys", admin.list_keys),
            Route("/_rtkit/keys/expire", admin.expire_keys, methods=["POST"]),
        ],
        exception_handlers={HTTPException: _http_error},
    )
    app.state.emulator = emulator
    return app


class CallsCors:
    """CORS for ``/v1/realtime/calls`` only: browsers may open calls from the allowed origins (the
    agents SDK's custom header and ``Authorization`` need a preflight; ``Location`` carries the call id)."""

    PREFIX = "/v1/realtime/calls"

    def __init__(self, app: ASGIApp, origins: list[str]) -> None:
        self.app = app
        self.origins = list(origins)
        self.cors = self._build()

    def allow(self, origin: str) -> None:
        """Open ``/calls`` to one more origin, from now on."""
        if origin not in self.origins:
            self.origins.append(origin)
            self.cors = self._build()

    def _build(self) -> CORSMiddleware:
        return CORSMiddleware(
            self.app,
            allow_origins=list(self.origins),
            allow_methods=["POST"],
            allow_headers=["*"],
            expose_headers=["Location", "Retry-After"],
            max_age=600,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(self.PREFIX):
            await self.cors(scope, receive, send)
        else:
            await self.app(scope, receive, send)
