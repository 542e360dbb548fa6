"""CORS for the one route of the Realtime API that browsers call: ``POST /v1/realtime/calls``.

The service answers that preflight for any origin: every browser app POSTs its SDP offer there with an ``ek_``
key, from wherever it is served (a dev server on another port counts). So does the emulator by default. The
other routes are for an app's server, not its pages: ``client_secrets`` takes the main key, ``hangup`` is a call
control, ``/_rtkit`` is the operator's. None of them answers a preflight here, so the emulator never teaches a
page to hold the main key. Whether the service answers CORS on them too is not documented; refusing is the safe
side of the emulator's promise (what works here works there).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

#: Every origin, as the service allows.
ANY_ORIGIN = "*"
#: What the clients send with the offer: the key, ``application/sdp`` (or a multipart form), and the agents
#: SDK's own header (``@openai/agents-realtime``). A preflight asking for anything else is refused.
ALLOWED_HEADERS = ("Authorization", "Content-Type", "X-OpenAI-Agents-SDK")
#: ``Location`` carries the call id (the agents SDK reads it); ``Retry-After`` comes with a 429 or a 503.
EXPOSED_HEADERS = ("Location", "Retry-After")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def web_origin(value: str) -> str:
    """``value`` as a browser writes it in ``Origin`` (``scheme://host[:port]``: lower case, no default port,
    no path), or ``*``. Raises ``ValueError`` for anything a browser would never send, such as a bare host."""
    if value == ANY_ORIGIN:
        return value
    try:
        parts = urlsplit(value.strip())
        port = parts.port  # raises for a port out of range or not a number
        origin_only = not (parts.path.strip("/") or parts.query or parts.fragment or "@" in parts.netloc)
        ok = parts.scheme.lower() in _DEFAULT_PORTS and bool(parts.hostname) and origin_only
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"not a web origin: {value!r} (give scheme://host[:port], e.g. http://localhost:5173)")
    scheme = parts.scheme.lower()
    host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname
    return f"{scheme}://{host}" + (f":{port}" if port not in (None, _DEFAULT_PORTS[scheme]) else "")


class CallsCors:
    """CORS on ``POST /v1/realtime/calls`` only, for ``origins`` (``*``: any); every other path passes
    through untouched. A preflight from another origin, or asking for another method or header, gets
    Starlette's refusal (400, ``Disallowed CORS ...``), which a browser takes as a failed preflight."""

    PATH = "/v1/realtime/calls"

    def __init__(self, app: ASGIApp, origins: list[str]) -> None:
        self.app = app
        self.origins = [web_origin(origin) for origin in origins]
        self.cors = self._build()

    @property
    def any_origin(self) -> bool:
        return ANY_ORIGIN in self.origins

    def allow(self, origin: str) -> None:
        """Open ``/calls`` to one more origin, from now on (nothing to do when any origin is allowed)."""
        origin = web_origin(origin)
        if not self.any_origin and origin not in self.origins:
            self.origins.append(origin)
            self.cors = self._build()

    def _build(self) -> CORSMiddleware:
        return CORSMiddleware(
            self.app,
            allow_origins=list(self.origins),
            allow_methods=["POST"],
            allow_headers=ALLOWED_HEADERS,
            expose_headers=EXPOSED_HEADERS,
            max_age=600,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == self.PATH:
            await self.cors(scope, receive, send)
        else:
            await self.app(scope, receive, send)
