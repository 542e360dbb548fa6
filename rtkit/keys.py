"""Key providers: where a session gets its ephemeral key each time it (re)connects.

A provider is any ``async () -> EphemeralKey | str``. Three come ready: a fixed key, the token issuer
(server side only: it holds the main key), and a broker client (what a browser or notebook uses).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import httpx

from rtkit._http import ssl_context
from rtkit.errors import (
    AuthenticationError,
    ConfigurationError,
    InvalidRequestError,
    RateLimitedError,
    RequestTimeoutError,
    RtkitError,
    UpstreamError,
)
from rtkit.tokens import EphemeralKey, TokenIssuer

__all__ = ["BrokerKeys", "IssuerKeys", "KeyProvider", "StaticKey", "as_provider"]

KeyProvider = Callable[[], Awaitable[EphemeralKey | str]]


class StaticKey:
    """Always the same key: fine for one connection, useless for reconnecting after it expires."""

    def __init__(self, value: str) -> None:
        if not value:
            raise ConfigurationError("The key is empty.")
        self._value = value

    async def __call__(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "StaticKey(…)"


class IssuerKeys:
    """Mints a fresh key per connection with the main key. Server side only (a notebook on your own machine
    counts): the main key must never reach a browser."""

    def __init__(self, issuer: TokenIssuer, session: dict[str, Any] | None = None, *, expires_in: int = 600) -> None:
        self.issuer = issuer
        self.session = session
        self.expires_in = expires_in

    async def __call__(self) -> EphemeralKey:
        return await self.issuer.issue(self.session, expires_in=self.expires_in)


_BROKER_ERRORS: dict[str, type[RtkitError]] = {
    "rate_limited": RateLimitedError,
    "upstream_rate_limited": RateLimitedError,
    "upstream_timeout": RequestTimeoutError,
    "missing_token": AuthenticationError,
    "invalid_token": AuthenticationError,
    "origin_not_allowed": AuthenticationError,
}


class BrokerKeys:
    """Asks rtkit's broker (or any backend speaking the seed's ``/api/client-secret``) for a key."""

    def __init__(
        self,
        url: str,
        *,
        app_token: str | None = None,
        session_id: str = "rtkit-session",
        capabilities: list[str] | None = None,
        session: dict[str, Any] | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.url = url.rstrip("/")
        self._app_token = app_token
        self.body: dict[str, Any] = {"sessionId": session_id, "capabilities": capabilities or ["audio", "webrtc"]}
        if session:
            self.body["session"] = session
        self.timeout = timeout

    async def __call__(self) -> EphemeralKey:
        headers = {"Authorization": f"Bearer {self._app_token}"} if self._app_token else {}
        try:
            async with httpx.AsyncClient(timeout=self.timeout, verify=ssl_context()) as http:
                r = await http.post(f"{self.url}/api/client-secret", json=self.body, headers=headers)
        except httpx.TimeoutException:
            raise RequestTimeoutError(f"The broker at {self.url} did not answer in time.") from None
        except httpx.TransportError as exc:
            raise UpstreamError(
                f"Cannot reach the broker at {self.url} ({type(exc).__name__}).", hint="is the broker running?"
            ) from None
        try:
            body = r.json()
        except ValueError:
            body = {}
        if r.status_code == 200 and isinstance(body, dict) and "ephemeralKey" in body:
            return EphemeralKey(
                value=body["ephemeralKey"],
                expires_at=datetime.fromisoformat(body["expiresAt"].replace("Z", "+00:00")),
                session_id=body.get("sessionId"),
                model=body.get("model"),
            )
        message = body.get("message") if isinstance(body, dict) else None
        code = body.get("code", "") if isinstance(body, dict) else ""
        retry_ms = body.get("retryAfter") if isinstance(body, dict) else None
        text = f"The broker refused the key request: {message or r.reason_phrase} ({r.status_code}, {code})."
        cls = _BROKER_ERRORS.get(code)
        if cls is RateLimitedError:
            raise RateLimitedError(text, retry_after=retry_ms / 1000 if retry_ms else None)
        if cls is not None:
            raise cls(text)
        if r.status_code >= 500:
            raise UpstreamError(text, status=r.status_code)
        raise InvalidRequestError(text)

    def __repr__(self) -> str:
        return f"BrokerKeys({self.url!r})"


def as_provider(keys: KeyProvider | str) -> KeyProvider:
    """A string is a fixed key; anything else must already be a provider."""
    return StaticKey(keys) if isinstance(keys, str) else keys
