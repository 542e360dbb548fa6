"""The emulator as an ASGI app, assembled from its route modules."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute

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
