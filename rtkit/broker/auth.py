"""Who is asking: an app presenting one of the configured bearer tokens, or (dev mode) anyone."""

from __future__ import annotations

import hmac

from starlette.requests import Request

from rtkit.broker.config import BrokerSettings, hash_token
from rtkit.broker.errors import BrokerError


class Authenticator:
    def __init__(self, settings: BrokerSettings) -> None:
        self._tokens = dict(settings.app_tokens)
        self._dev_mode = settings.dev_mode

    def caller(self, request: Request) -> str:
        """The caller's name for rate limits, cache identity and the audit log."""
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and token:
            digest = hash_token(token.strip())
            for name, expected in self._tokens.items():
                if hmac.compare_digest(digest, expected):
                    return name
            raise BrokerError(401, "Unauthorized", "invalid_token", "The app token is not valid.")
        if self._dev_mode:
            return "anonymous"
        raise BrokerError(
            401,
            "Unauthorized",
            "missing_token",
            "This broker needs an app token: send 'Authorization: Bearer <token>'.",
        )
