"""The broker's routes: ``POST /api/client-secret`` (the guide's backend), health, readiness and metrics."""

from __future__ import annotations

import contextvars
import logging
import re
import time
from collections.abc import Mapping
from datetime import UTC
from typing import TYPE_CHECKING, Any

import httpx
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from rtkit._body import BodyTimeout, BodyTooLarge, read_body
from rtkit._ice import is_loopback_host
from rtkit._ids import fingerprint, new_id
from rtkit._json import JsonError, loads
from rtkit.broker.audit import AuditRecord
from rtkit.broker.errors import BrokerError, bad_request, cache_unavailable, from_upstream
from rtkit.broker.policy import parse_request, session_for
from rtkit.errors import CacheUnavailableError, RtkitError

if TYPE_CHECKING:
    from rtkit.broker.server import BrokerState

log = logging.getLogger("rtkit.broker")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._\-]{1,128}$")
upstream_ms: contextvars.ContextVar[float | None] = contextvars.ContextVar("rtkit_upstream_ms", default=None)


def _state(request: Request) -> BrokerState:
    return request.app.state.broker  # type: ignore[no-any-return]


def request_id(request: Request) -> str:
    return request_id_from(request.headers)


def request_id_from(headers: Mapping[str, str]) -> str:
    """Accept the caller's ``X-Request-ID`` when it is sane (so traces join up), else make one."""
    given = headers.get("x-request-id", "")
    return given if _REQUEST_ID.match(given) else new_id("req")


def own_origins(request: Request) -> set[str]:
    """The origins of the address this connection actually reached (the socket's own address, which no
    header can change): the broker's demo page served from there is same-origin."""
    server = request.scope.get("server")
    if not server or server[1] is None:
        return set()
    host, port = str(server[0]), int(server[1])
    scheme = request.url.scheme
    default = {"http": 80, "https": 443}.get(scheme)
    suffix = "" if port == default else f":{port}"
    hosts = {f"[{host}]" if ":" in host else host}
    if is_loopback_host(host):
        hosts |= {"localhost", "127.0.0.1", "[::1]"}
    return {f"{scheme}://{h}{suffix}" for h in hosts}


def check_origin(request: Request, public: list[str], allowed: list[str]) -> None:
    """Browsers send ``Origin``; it must be one the operator allowed, the broker's configured public
    origin(s) (behind a proxy or a DNS name), or the address the connection reached. The ``Host`` header
    is never trusted for this: ``Origin: http://evil.example`` with ``Host: evil.example`` proves nothing,
    and a DNS-rebound page keeps its own name in ``Origin``."""
    origin = request.headers.get("origin")
    if origin is None or "*" in allowed or origin in allowed or origin in public or origin in own_origins(request):
        return
    raise BrokerError(
        403, "Forbidden", "origin_not_allowed", f"Requests from origin {origin} are not allowed by this broker."
    )


async def read_json(request: Request, max_bytes: int) -> Any:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise BrokerError(
            415,
            "UnsupportedMediaType",
            "unsupported_media_type",
            "Send the request body as JSON with 'Content-Type: application/json'.",
        )
    try:
        return loads(await read_body(request, max_bytes=max_bytes))
    except BodyTooLarge as exc:
        raise BrokerError(413, "PayloadTooLarge", "payload_too_large", str(exc)) from None
    except BodyTimeout as exc:
        raise BrokerError(408, "RequestTimeout", "request_timeout", str(exc)) from None
    except JsonError as exc:
        raise bad_request(f"The request body is not valid JSON: {exc.reason}.", code="invalid_json") from None


async def client_secret(request: Request) -> Response:
    broker = _state(request)
    rid = request_id(request)
    started = time.perf_counter()
    record = AuditRecord(
        requestId=rid,
        ip=request.client.host if request.client else "unknown",
        userAgent=request.headers.get("user-agent", "")[:200],
        method=request.method,
        path=request.url.path,
    )
    upstream_ms.set(None)
    response: Response
    try:
        check_origin(request, broker.settings.public_origins, broker.settings.allowed_origins)
        caller = record.caller = broker.auth.caller(request)
        await broker.limits.check(record.ip, caller)
        body = parse_request(await read_json(request, broker.settings.max_body_bytes))
        record.sessionId = body.sessionId
        session = session_for(body, broker.settings)
        identity = f"{caller}:{body.sessionId}"
        if broker.settings.key_policy == "single-use":
            # A single-use key belongs to no client session until it is handed out: one pool per caller and
            # config, or a page asking under a new sessionId for each call (the demo page) would never hit.
            identity = caller
        try:
            if body.refusedKey is not None:
                # Only the caller's own cached key can go: the identity is theirs, the value must match.
                record.refusedKey = fingerprint(body.refusedKey)
                record.evicted = await broker.cache.forget(identity, session, body.refusedKey)
                if record.evicted:
                    broker.metrics.cache.labels("evicted").inc()
            cached = await broker.cache.get(identity, session)
        except CacheUnavailableError:
            raise cache_unavailable() from None
        except RtkitError as exc:
            broker.metrics.upstream_errors.labels(exc.code).inc()
            raise from_upstream(exc) from None
        key = cached.key
        record.cacheHit = cached.hit
        record.key = key.fingerprint
        record.realtimeSessionId = key.session_id
        broker.metrics.cache.labels("hit" if cached.hit else "miss").inc()
        response = JSONResponse(
            {
                "ephemeralKey": key.value,
                "expiresAt": key.expires_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
                "sessionId": key.session_id,
                "model": key.model,
            },
            headers={"X-Request-ID": rid, "Cache-Control": "no-store"},
        )
        record.status, record.outcome = 200, "ok"
    except BrokerError as err:
        response = err.response(rid)
        record.status, record.outcome = err.status, err.code
    except ClientDisconnect:
        # The caller hung up mid-request: nobody to answer, nothing wrong with the broker (499, as nginx logs it).
        response = Response(status_code=499)
        record.status, record.outcome = 499, "client_disconnected"
    except Exception:
        log.exception("broker failed on request %s", rid)
        internal = BrokerError(500, "InternalError", "internal_error", "The broker failed unexpectedly.")
        response = internal.response(rid)
        record.status, record.outcome = 500, internal.code
    elapsed = time.perf_counter() - started
    record.upstreamMs = upstream_ms.get()
    record.durationMs = round(elapsed * 1000, 3)
    record.emit()
    broker.metrics.requests.labels(record.outcome).inc()
    broker.metrics.latency.observe(elapsed)
    return response


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Ready when the upstream answers HTTP at all (any status) and Redis, if configured, answers PING."""
    broker = _state(request)
    checks: dict[str, str] = {}
    try:
        async with httpx.AsyncClient(timeout=3.0) as http:
            await http.get(broker.settings.upstream_url)
        checks["upstream"] = "ok"
    except httpx.HTTPError as exc:
        checks["upstream"] = f"unreachable ({type(exc).__name__})"
    if broker.settings.redis_url:
        checks["redis"] = "ok" if await broker.cache.backend.ping() else "unreachable"
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "not ready", "checks": checks}, status_code=200 if ready else 503
    )


async def metrics(request: Request) -> Response:
    return Response(_state(request).metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
