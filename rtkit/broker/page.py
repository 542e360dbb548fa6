"""The broker's demo page: ``GET /`` (a plain HTML + JavaScript voice client), ``/config.json`` and ``/static``.

The page asks this broker for an ephemeral key and opens its call straight to the Realtime API, so
all it needs to be told is where that API is. It is never told the main key.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

if TYPE_CHECKING:
    from rtkit.broker.server import BrokerState

STATIC = Path(__file__).with_name("static")
#: The browser client this page shares with the notebook's BrowserCall (``PageCall``: the call, minus its UI).
SHARED_JS = Path(__file__).parents[1] / "static" / "realtime.js"
#: Revalidate on every load, so a workshop that edits app.js sees the edit on the next reload.
_NO_CACHE = {"Cache-Control": "no-cache"}


def _state(request: Request) -> BrokerState:
    return request.app.state.broker  # type: ignore[no-any-return]


async def index(request: Request) -> Response:
    return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8", headers=_NO_CACHE)


async def shared_js(request: Request) -> Response:
    return FileResponse(SHARED_JS, media_type="text/javascript; charset=utf-8", headers=_NO_CACHE)


async def config(request: Request) -> Response:
    """What a browser needs besides its key: the Realtime API's base URL (``…/v1``) and the model."""
    settings = _state(request).settings
    realtime_url = (settings.realtime_url or settings.upstream_url).rstrip("/")
    return JSONResponse({"realtimeUrl": realtime_url, "model": settings.model}, headers=_NO_CACHE)


def routes() -> list[BaseRoute]:
    return [
        Route("/", index),
        Route("/config.json", config),
        Route("/static/realtime.js", shared_js),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
