"""``Broker``: the token broker as a running service (in the caller's loop), and its assembled state."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from rtkit._ids import new_id
from rtkit._serve import LoopServer
from rtkit.broker import page, routes
from rtkit.broker.auth import Authenticator
from rtkit.broker.config import BrokerSettings
from rtkit.broker.errors import BrokerError
from rtkit.broker.metrics import BrokerMetrics
from rtkit.broker.ratelimit import RateLimits
from rtkit.cache import KeyCache, KeyPool, MemoryBackend, RedisBackend, TokenCache
from rtkit.errors import ConfigurationError
from rtkit.tokens import EphemeralKey, TokenIssuer

log = logging.getLogger("rtkit.broker")


@dataclass
class BrokerState:
    settings: BrokerSettings
    issuer: TokenIssuer
    cache: KeyCache
    auth: Authenticator
    limits: RateLimits
    metrics: BrokerMetrics


def build_state(settings: BrokerSettings, issuer: TokenIssuer | None = None) -> BrokerState:
    if issuer is None:
        if settings.api_key is None:
            raise ConfigurationError(
                "The broker has no main API key.", hint="set OPENAI_API_KEY or RTKIT_BROKER_API_KEY in the environment"
            )
        issuer = TokenIssuer(
            settings.api_key,
            base_url=settings.upstream_url,
            timeout=settings.upstream_timeout,
            max_attempts=settings.upstream_attempts,
        )
    metrics = BrokerMetrics()

    async def mint(session: dict[str, Any]) -> EphemeralKey:
        started = time.perf_counter()
        try:
            return await issuer.issue(session, expires_in=settings.key_ttl_seconds)
        finally:
            elapsed = time.perf_counter() - started
            routes.upstream_ms.set(round(elapsed * 1000, 3))
            metrics.upstream_latency.observe(elapsed)

    backend: MemoryBackend | RedisBackend = MemoryBackend()
    limits_secret = None
    if settings.redis_url:
        # No in-process fallback while Redis is down (see RateLimits): both fail closed with a 503.
        # The lock outlives the one mint it guards, which upstream_timeout bounds.
        backend = RedisBackend(
            settings.redis_url,
            secret=issuer.derive_secret("rtkit broker cache"),
            lock_timeout=settings.upstream_timeout + 5.0,
            timeout=settings.redis_timeout,
        )
        limits_secret = issuer.derive_secret("rtkit broker rate limits")
    cache: KeyCache
    if settings.key_policy == "single-use":
        cache = KeyPool(mint, backend=backend, margin=settings.cache_margin_seconds, size=settings.key_pool_size)
    else:
        cache = TokenCache(mint, backend=backend, margin=settings.cache_margin_seconds)
    return BrokerState(
        settings=settings,
        issuer=issuer,
        cache=cache,
        auth=Authenticator(settings),
        limits=RateLimits(settings, secret=limits_secret),
        metrics=metrics,
    )


async def _not_found(request: Request, exc: Exception) -> Response:
    status = getattr(exc, "status_code", 404)
    names = {
        404: ("NotFound", "not_found", "No such endpoint."),
        405: ("MethodNotAllowed", "method_not_allowed", "This endpoint does not accept that method."),
    }
    error, code, message = names.get(status, ("Error", "http_error", "The request failed."))
    return BrokerError(status, error, code, message).response(routes.request_id(request))


_REFUSALS = {
    400: ("InvalidRequest", "invalid_http"),
    408: ("RequestTimeout", "request_timeout"),
    431: ("HeaderFieldsTooLarge", "header_fields_too_large"),
}


def _refusal(status: int, message: str) -> bytes:
    """A refusal made by the HTTP layer, before any route ran, in the broker's error format."""
    error, code = _REFUSALS.get(status, ("InvalidRequest", "invalid_request"))
    return bytes(BrokerError(status, error, code, message).response(new_id("req")).body)


class JsonCors(CORSMiddleware):
    """Starlette's CORS, with a refused preflight answered in the broker's error format like every other
    refusal (Starlette's own is a plain-text 400)."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code < 400:
            return response
        refused = bytes(response.body).decode().removeprefix("Disallowed CORS ")
        origin = "origin" in refused.split(", ")
        return BrokerError(
            403 if origin else 400,
            "Forbidden" if origin else "InvalidRequest",
            "origin_not_allowed" if origin else "cors_preflight_rejected",
            f"Cross-origin request refused: this broker does not allow its {refused} "
            f"(origin {request_headers.get('origin')}).",
        ).response(routes.request_id_from(request_headers))


def build_app(state: BrokerState) -> Starlette:
    s = state.settings
    app = Starlette(
        routes=[
            Route("/api/client-secret", routes.client_secret, methods=["POST"]),
            Route("/healthz", routes.healthz),
            Route("/readyz", routes.readyz),
            Route("/metrics", routes.metrics),
            *page.routes(),
        ],
        middleware=[
            Middleware(
                JsonCors,
                allow_origins=s.allowed_origins,
                allow_methods=["GET", "POST"],
                allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
                expose_headers=["X-Request-ID", "Retry-After"],
                max_age=600,
            )
        ],
        exception_handlers={404: _not_found, 405: _not_found},
    )
    app.state.broker = state
    if s.dev_mode:
        log.warning(
            "DEV MODE: anyone who can reach this broker can mint keys on your account. "
            "Never expose it beyond this machine."
        )
    return app


class Broker:
    """The token broker, served in the current event loop: ``async with Broker(settings) as b: b.url``."""

    def __init__(
        self,
        settings: BrokerSettings | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        issuer: TokenIssuer | None = None,
        **overrides: Any,
    ) -> None:
        self.settings = settings or BrokerSettings(**overrides)
        self.state = build_state(self.settings, issuer)
        self.app = build_app(self.state)
        self._server = LoopServer(self.app, host, port, what="broker", error_body=_refusal)

    @property
    def url(self) -> str:
        return self._server.origin

    async def start(self) -> Broker:
        await self._server.start()
        return self

    async def stop(self) -> None:
        await self._server.stop()
        await self.state.cache.aclose()
        await self.state.issuer.aclose()

    async def serve_forever(self) -> None:
        await self.start()
        await self._server.wait()

    async def __aenter__(self) -> Broker:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
