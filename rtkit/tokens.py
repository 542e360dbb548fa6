"""Minting ephemeral client secrets (``ek_…``) with the main API key — the backend's one job.

The main key lives only in ``TokenIssuer``; what leaves it is an ``EphemeralKey`` whose ``repr``
never shows the secret. Transient upstream failures (connection errors, 429 with ``Retry-After``,
5xx) are retried with exponential backoff and jitter, a bounded number of times, all within one
deadline; a 4xx is a mistake in the request and is raised at once.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import httpx
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import BaseModel, SecretStr
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
    wait_exponential_jitter,
)

from rtkit._ids import fingerprint
from rtkit.errors import (
    AuthenticationError,
    ConfigurationError,
    InvalidRequestError,
    QuotaExceededError,
    RateLimitedError,
    RequestTimeoutError,
    RtkitError,
    UpstreamError,
    retry_wait,
)

__all__ = [
    "OPENAI_BASE_URL",
    "EphemeralKey",
    "TokenIssuer",
    "api_error_detail",
    "error_from_response",
    "error_from_status",
]

OPENAI_BASE_URL = "https://api.openai.com/v1"


@dataclass(frozen=True)
class EphemeralKey:
    """A minted client secret and the session it was minted for."""

    value: str = field(repr=False)
    expires_at: datetime
    session_id: str | None
    model: str | None
    session: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def fingerprint(self) -> str:
        """How logs and widgets name this key: ``ek_…abcd``."""
        return fingerprint(self.value)

    def expires_in(self, now: float | None = None) -> float:
        """Seconds of life left (negative once expired)."""
        return self.expires_at.timestamp() - (time.time() if now is None else now)

    def __repr__(self) -> str:
        return (
            f"EphemeralKey({self.fingerprint}, expires_at={self.expires_at.isoformat()}, "
            f"session_id={self.session_id!r}, model={self.model!r})"
        )

    @classmethod
    def from_response(cls, body: Any) -> EphemeralKey:
        """Parse the GA shape ``{value, expires_at, session: {id, model, ...}}``; the guide's flat sketch
        ``{value, expires_at, session_id, model}`` is accepted too."""
        if not isinstance(body, dict) or not isinstance(body.get("value"), str):
            raise UpstreamError("The upstream answered 200 without a client secret in it.")
        try:
            expires = datetime.fromtimestamp(int(body["expires_at"]), tz=UTC)
        except (KeyError, TypeError, ValueError):
            raise UpstreamError("The upstream's client secret has no valid expires_at.") from None
        raw_session = body.get("session")
        session: dict[str, Any] = raw_session if isinstance(raw_session, dict) else {}
        return cls(
            value=body["value"],
            expires_at=expires,
            session_id=session.get("id") or body.get("session_id"),
            model=session.get("model") or body.get("model"),
            session=session,
        )


def _seconds(value: str | None) -> float | None:
    """A ``Retry-After`` header in seconds (the HTTP-date form is not used by the API)."""
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def api_error_detail(body: bytes | str) -> dict[str, Any]:
    """The ``error`` object of OpenAI's ``{"error": {message, type, param, code}}``, or ``{}``."""
    try:
        parsed = json.loads(body or b"{}")
    except ValueError:
        return {}
    detail = parsed.get("error") if isinstance(parsed, dict) else None
    return detail if isinstance(detail, dict) else {}


def error_from_status(status: int, body: bytes | str, retry_after: str | None = None) -> RtkitError:
    """The one mapping from a refused HTTP exchange with the API onto rtkit's exception tree: a mint, the
    ``/calls`` POST, a WebSocket upgrade, or the browser's own ``/calls`` POST reported to the kernel."""
    detail = api_error_detail(body)
    message = detail.get("message")
    code = detail.get("code")
    if status == 401:
        return AuthenticationError(
            "The upstream refused the main API key.", hint="check OPENAI_API_KEY (or the emulator's --api-key)"
        )
    if status == 429 and code == "insufficient_quota":
        return QuotaExceededError(
            message or "The account's quota is exhausted.", hint="check the plan and billing details"
        )
    if status == 429:
        return RateLimitedError(
            message or "The upstream is rate limiting requests.",
            retry_after=_seconds(retry_after),
            hint="wait and try again",
        )
    if 400 <= status < 500:
        return InvalidRequestError(
            message or f"The upstream rejected the request ({status}).",
            hint=f"param: {detail.get('param')}" if detail.get("param") else None,
        )
    return UpstreamError(
        message or f"The upstream failed with HTTP {status}.",
        status=status,
        hint="the Realtime API may be down; try again shortly",
    )


def error_from_response(response: httpx.Response) -> RtkitError:
    return error_from_status(response.status_code, response.content, response.headers.get("retry-after"))


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, UpstreamError | RateLimitedError) and not isinstance(exc, QuotaExceededError)


class _BackoffHonouringRetryAfter:
    """Exponential backoff with jitter, except when the server said how long to wait: then exactly that,
    never less (``backoff_max`` caps only our own guesses). A wait the deadline cannot hold is not waited;
    ``stop_before_delay`` ends the retries and the error, with its ``retry_after``, goes to the caller."""

    def __init__(self, initial: float, maximum: float) -> None:
        self._exponential = wait_exponential_jitter(multiplier=initial, max=maximum, jitter=initial)

    def __call__(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        return retry_wait(exc, float(self._exponential(state)))


class TokenIssuer:
    """Mints ephemeral keys from ``{base_url}/realtime/client_secrets`` with the main key.

    ``timeout`` is one budget for a whole ``issue`` call, every attempt and every wait between them: a caller
    hears back within about ``timeout`` seconds whatever the upstream does (slow, hung, or asking for a long
    ``Retry-After``).
    """

    def __init__(
        self,
        api_key: str | SecretStr,
        *,
        base_url: str = OPENAI_BASE_URL,
        timeout: float = 10.0,
        max_attempts: int = 4,
        backoff_initial: float = 0.5,
        backoff_max: float = 8.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        secret = api_key.get_secret_value() if isinstance(api_key, SecretStr) else api_key
        if not secret:
            raise ConfigurationError(
                "No main API key was given to the token issuer.",
                hint="set OPENAI_API_KEY, or start the emulator and use its key",
            )
        if max_attempts < 1:
            raise ConfigurationError("max_attempts must be at least 1.")
        if timeout <= 0:
            raise ConfigurationError("timeout must be positive.")
        self.base_url = base_url.rstrip("/")
        self.max_attempts = max_attempts
        self.timeout = timeout
        self._api_key = SecretStr(secret)
        self._wait = _BackoffHonouringRetryAfter(backoff_initial, backoff_max)
        self._http = httpx.AsyncClient(timeout=timeout, transport=transport)
        #: Attempts made by the last ``issue`` call (1 when the first try succeeded).
        self.last_attempts = 0

    def __repr__(self) -> str:
        return f"TokenIssuer(base_url={self.base_url!r})"

    def derive_secret(self, purpose: str) -> bytes:
        """32 bytes for ``purpose`` (HKDF-SHA256 of the main key): every process holding the same main key
        derives the same secret, and the secret gives nothing of the main key away."""
        hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"rtkit", info=purpose.encode())
        return hkdf.derive(self._api_key.get_secret_value().encode())

    async def issue(
        self,
        session: dict[str, Any] | BaseModel | None = None,
        *,
        expires_in: int | None = None,
    ) -> EphemeralKey:
        """Mint one key for ``session`` (a dict or ``RealtimeSessionConfig``); ``expires_in`` seconds of life."""
        body: dict[str, Any] = {}
        if session is not None:
            body["session"] = (
                session.model_dump(exclude_none=True, mode="json") if isinstance(session, BaseModel) else session
            )
        if expires_in is not None:
            body["expires_after"] = {"anchor": "created_at", "seconds": expires_in}
        self.last_attempts = 0
        deadline = time.monotonic() + self.timeout
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(_retryable),
            wait=self._wait,
            stop=stop_after_attempt(self.max_attempts) | stop_before_delay(self.timeout),
            reraise=True,
        ):
            with attempt:
                self.last_attempts += 1
                return await self._post(body, deadline - time.monotonic())
        raise AssertionError("unreachable")  # pragma: no cover

    async def _post(self, body: dict[str, Any], budget: float) -> EphemeralKey:
        try:
            if budget <= 0:
                raise TimeoutError
            # httpx's timeout bounds each connect and each read; asyncio's bounds the whole exchange, so an
            # upstream that trickles bytes cannot stretch the budget either.
            async with asyncio.timeout(budget):
                response = await self._http.post(
                    f"{self.base_url}/realtime/client_secrets",
                    json=body,
                    headers={"Authorization": f"Bearer {self._api_key.get_secret_value()}"},
                    timeout=budget,
                )
        except (httpx.TimeoutException, TimeoutError):
            raise RequestTimeoutError(
                f"The upstream at {self.base_url} did not answer within {self.timeout:g} s.",
                hint="the Realtime API may be slow or down; try again",
            ) from None
        except httpx.TransportError as exc:
            raise UpstreamError(
                f"Cannot reach the upstream at {self.base_url} ({type(exc).__name__}).",
                hint="check the network, or that the emulator is running",
            ) from None
        if response.status_code != 200:
            raise error_from_response(response)
        try:
            return EphemeralKey.from_response(response.json())
        except ValueError:
            raise UpstreamError("The upstream answered 200 with a body that is not JSON.") from None

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> TokenIssuer:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
