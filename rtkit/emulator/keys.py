"""Who may talk to the emulator: the operator's main key and the ephemeral keys minted with it."""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from rtkit._ids import fingerprint
from rtkit.emulator import errors


@dataclass(frozen=True)
class ClientSecret:
    """An issued ``ek_…`` key and the session config it was minted for."""

    value: str
    expires_at: int
    session: dict[str, Any]
    created_at: int = field(default_factory=lambda: int(time.time()))


@dataclass(frozen=True)
class Caller:
    """Who a request came from: the main key (``secret`` is None) or an ephemeral key."""

    secret: ClientSecret | None

    @property
    def is_main_key(self) -> bool:
        return self.secret is None


class KeyStore:
    """Issues and checks keys. Expired keys are remembered for a while so that their callers are told
    the key *expired* rather than that it never existed."""

    _FORGET_AFTER = 3600

    def __init__(self, api_key: str) -> None:
        self._api_key = api_key
        self._secrets: dict[str, ClientSecret] = {}
        #: Key value → sessions it was presented to open (refused ones included), for the operator's listing.
        self._uses: dict[str, int] = {}
        #: How many keys were minted since start: tests and lessons count upstream calls with it.
        self.issued = 0

    def mint(self, session: dict[str, Any], ttl_seconds: int) -> ClientSecret:
        now = int(time.time())
        self._prune(now)
        secret = ClientSecret(
            value="ek_" + secrets.token_hex(16), expires_at=now + ttl_seconds, session=session, created_at=now
        )
        self._secrets[secret.value] = secret
        self.issued += 1
        return secret

    def is_main_key(self, key: str | None) -> bool:
        return key is not None and hmac.compare_digest(key.encode(), self._api_key.encode())

    def check_main_key(self, key: str | None) -> None:
        if not self.is_main_key(key):
            raise errors.invalid_api_key(key)

    def authenticate(self, key: str | None, *, opens_session: bool = False, single_use: bool = False) -> Caller:
        """Accept the main key or a live ephemeral key; raise the service's 401 otherwise.

        ``opens_session`` (a call, a WebSocket session; not a sideband join or a hangup, which act on a session
        the key opened) counts a use of an ephemeral key, checked and counted with no ``await`` in between so
        that two concurrent opens cannot both be first. With ``single_use`` every use after the first is refused
        with 401 ``invalid_api_key``, OpenAI's answer to a used-up or unknown client secret; the real service's
        exact message for a reused key is not documented, so the unknown key's is used."""
        if self.is_main_key(key):
            return Caller(secret=None)
        secret = self._secrets.get(key or "")
        if secret is None:
            raise errors.invalid_api_key(key)
        if time.time() >= secret.expires_at:
            raise errors.expired_client_secret()
        if opens_session:
            uses = self._uses[secret.value] = self._uses.get(secret.value, 0) + 1
            if single_use and uses > 1:
                raise errors.invalid_api_key(key)
        return Caller(secret=secret)

    def listing(self) -> list[dict[str, Any]]:
        """The keys the operator may see: fingerprints, never values."""
        return [
            {
                "fingerprint": fingerprint(s.value),
                "session_id": s.session.get("id"),
                "created": s.created_at,
                "expires_at": s.expires_at,
                "uses": self._uses.get(s.value, 0),
            }
            for s in self._secrets.values()
        ]

    def expire(self, value: str | None = None) -> int:
        """Make one key (or every key) expire now: the "token expired" lesson, on demand."""
        now = int(time.time()) - 1
        targets = [value] if value else list(self._secrets)
        count = 0
        for v in targets:
            if v in self._secrets:
                s = self._secrets[v]
                self._secrets[v] = ClientSecret(s.value, now, s.session, s.created_at)
                count += 1
        return count

    def _prune(self, now: int) -> None:
        stale = [v for v, s in self._secrets.items() if s.expires_at + self._FORGET_AFTER < now]
        for v in stale:
            del self._secrets[v]
            self._uses.pop(v, None)


def bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None
