"""Settings of a broker: constructor arguments or ``RTKIT_BROKER_*`` environment variables."""

from __future__ import annotations

import hashlib
from typing import Literal

from limits import parse
from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from rtkit.tokens import OPENAI_BASE_URL


def hash_token(token: str) -> str:
    """App tokens are stored as SHA-256 hex digests: a leaked config file does not leak the tokens."""
    return hashlib.sha256(token.encode()).hexdigest()


class BrokerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RTKIT_BROKER_", extra="forbid")

    #: The Realtime API the broker mints from (the emulator's ``/v1`` in class and in tests).
    upstream_url: str = OPENAI_BASE_URL
    #: The main key. Read from ``RTKIT_BROKER_API_KEY`` or ``OPENAI_API_KEY``; never logged or returned.
    api_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("api_key", "RTKIT_BROKER_API_KEY", "OPENAI_API_KEY")
    )
    #: Callers allowed in: name → SHA-256 hex of their bearer token (see ``hash_token``).
    app_tokens: dict[str, str] = Field(default_factory=dict)
    #: Allow callers without a token. For a laptop demo only: the broker says so loudly at start.
    dev_mode: bool = False
    #: Browser origins allowed to call the broker (CORS); ``*`` allows any. A request with another
    #: ``Origin`` is refused with 403; requests without ``Origin`` (servers, curl) are not browsers.
    allowed_origins: list[str] = Field(default_factory=list)
    #: The origin(s) browsers see this broker at, when that is not the address it listens on (a DNS name,
    #: a TLS-terminating proxy): its own demo page posts from there. The listening address always counts.
    public_origins: list[str] = Field(default_factory=list)
    rate_limit_per_ip: str = "30/minute"
    rate_limit_per_caller: str = "120/minute"
    #: ``redis://…``: share cached keys, locks and rate-limit counters between broker processes.
    redis_url: str | None = None
    #: Seconds a Redis connect or command may take. When Redis is down or hung the broker answers
    #: 503 ``cache_unavailable`` after about twice this (one immediate retry), never a traceback.
    redis_timeout: float = Field(0.5, gt=0, le=30)
    cache_margin_seconds: float = Field(30.0, ge=0)
    #: ``reuse``: a caller asking again for the same ``sessionId`` and session config gets the cached key
    #: until ``cache_margin_seconds`` before it expires. ``single-use``: no key is ever handed out twice, for
    #: an API that spends a key on the session it opens; a pool minted ahead keeps requests fast.
    key_policy: Literal["reuse", "single-use"] = "reuse"
    #: With ``single-use``: keys minted ahead per caller and session config. Each may expire unused, so
    #: this is also how many mints per key lifetime a caller who stopped asking may waste.
    key_pool_size: int = Field(2, ge=1, le=20)
    key_ttl_seconds: int = Field(600, ge=10, le=7200)
    model: str = "gpt-realtime"
    instructions: str = "You are a friendly assistant in a voice demo. Keep answers short."
    allowed_voices: list[str] = Field(
        default_factory=lambda: [
            "alloy",
            "ash",
            "ballad",
            "cedar",
            "coral",
            "echo",
            "marin",
            "sage",
            "shimmer",
            "verse",
        ]
    )
    max_instructions_chars: int = Field(2000, ge=0)
    max_body_bytes: int = Field(16_384, ge=256)
    #: One deadline, in seconds, for minting a key: every upstream attempt and every wait between them.
    #: A slow or hung upstream is a 504 after about this long; a ``Retry-After`` longer than what is left
    #: is passed on to the client at once (503 with ``retryAfter``) rather than waited.
    upstream_timeout: float = Field(10.0, gt=0)
    #: At most this many upstream attempts, within ``upstream_timeout``.
    upstream_attempts: int = Field(3, ge=1, le=10)
    #: Where browsers should open their calls; published to the demo page. Default: ``upstream_url``.
    realtime_url: str | None = None

    @field_validator("rate_limit_per_ip", "rate_limit_per_caller")
    @classmethod
    def _limit(cls, value: str) -> str:
        parse(value)  # raises ValueError with the library's own explanation
        return value

    @field_validator("app_tokens")
    @classmethod
    def _hashed(cls, value: dict[str, str]) -> dict[str, str]:
        for name, digest in value.items():
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest.lower()):
                raise ValueError(f"app token for {name!r} must be a SHA-256 hex digest (use rtkit.broker.hash_token)")
        return {name: digest.lower() for name, digest in value.items()}
