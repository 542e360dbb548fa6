"""Key providers: where a session gets its ephemeral key each time it (re)connects.

A provider is any ``async () -> EphemeralKey | str``. Three come ready: a fixed key, the token issuer
(server side only: it holds the main key), and a broker client (what a browser or notebook uses).
A provider that may hand out a cached key also implements ``RefusableKeyProvider``, so that a call
whose key the API refused can say so, and get a fresh one rather than the same dead key again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

import httpx

from rtkit._http import ssl_context
from rtkit.errors import (
    ConfigurationError,
    RequestTimeoutError,
    UpstreamError,
    error_for_code,
)
from rtkit.tokens import EphemeralKey, TokenIssuer

__all__ = ["BrokerKeys", "IssuerKeys", "KeyProvider", "RefusableKeyProvider", "StaticKey", "as_provider"]

KeyProvider = Callable[[], Awaitable[EphemeralKey | str]]


@runtime_checkable
class RefusableKeyProvider(Protocol):
    """A key provider that can be told the Realtime API refused a key it gave (401): its next key must not
    be that one. A call tells it at most once per connection attempt."""

    async def __call__(self) -> EphemeralKey | str: ...

    def refused(self, key: str) -> None: ...


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


class BrokerKeys:
    """Asks rtkit's broker (or any backend speaking the guide's ``/api/client-secret``) for a key.

    The broker caches keys, so one it served may be dead upstream (the API restarted or revoked it) and yet
    be served again until it expires. ``refused(key)`` makes the next request carry ``refusedKey``, and the
    broker then mints a fresh key instead of serving that one.
    """

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
        self._refused: str | None = None

    def refused(self, key: str) -> None:
        """The API refused ``key``; the next request asks the broker to drop it (until one succeeds)."""
        self._refused = key

    async def __call__(self) -> EphemeralKey:
        headers = {"Authorization": f"Bearer {self._app_token}"} if self._app_token else {}
        body = self.body if self._refused is None else {**self.body, "refusedKey": self._refused}
        try:
            async with httpx.AsyncClient(timeout=self.timeout, verify=ssl_context()) as http:
                r = await http.post(f"{self.url}/api/client-secret", json=body, headers=headers)
        except httpx.TimeoutException:
            raise RequestTimeoutError(f"The broker at {self.url} did not answer in time.") from None
        except httpx.TransportError as exc:
            raise UpstreamError(
                f"Cannot reach the broker at {self.url} ({type(exc).__name__}).", hint="is the broker running?"
            ) from None
        try:
            answer = r.json()
        except ValueError:
            answer = {}
        if r.status_code == 200 and isinstance(answer, dict) and "ephemeralKey" in answer:
            self._refused = None
            return EphemeralKey(
                value=answer["ephemeralKey"],
                expires_at=datetime.fromisoformat(answer["expiresAt"].replace("Z", "+00:00")),
                session_id=answer.get("sessionId"),
                model=answer.get("model"),
            )
        message = answer.get("message") if isinstance(answer, dict) else None
        code = answer.get("code", "") if isinstance(answer, dict) else ""
        retry_ms = answer.get("retryAfter") if isinstance(answer, dict) else None
        text = f"The broker refused the key request: {message or r.reason_phrase} ({r.status_code}, {code})."
        raise error_for_code(
            code, text, status=r.status_code, retry_after=retry_ms / 1000 if isinstance(retry_ms, int | float) else None
        )

    def __repr__(self) -> str:
        return f"BrokerKeys({self.url!r})"


def as_provider(keys: KeyProvider | str) -> KeyProvider:
    """A string is a fixed key; anything else must already be a provider."""
    return StaticKey(keys) if isinstance(keys, str) else keys
