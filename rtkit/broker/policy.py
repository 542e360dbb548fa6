"""What a browser may ask for, and what the server decides.

A client chooses a few harmless things (voice, instructions within a size limit, text-only);
the server fixes the rest (model, key lifetime, turn detection), so that a page cannot turn the
operator's key into something else.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rtkit.broker.config import BrokerSettings
from rtkit.broker.errors import BrokerError, bad_request

Capability = Literal["audio", "text", "webrtc", "websocket"]


class ClientSessionChoices(BaseModel):
    model_config = ConfigDict(extra="forbid")
    voice: str | None = Field(None, max_length=32)
    instructions: str | None = None


class ClientSecretRequest(BaseModel):
    """Body of ``POST /api/client-secret``."""

    model_config = ConfigDict(extra="forbid", strict=True)
    #: The client's own session identifier: part of the cache identity and of the audit log.
    sessionId: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:\-]+$")
    capabilities: list[Capability] = Field(default_factory=lambda: list[Capability](["audio"]), max_length=4)
    session: ClientSessionChoices | None = None
    #: A key this broker served that the Realtime API then refused (401): if it is still the one cached for
    #: this caller and session, it is dropped and a fresh one minted. Any other value evicts nothing.
    refusedKey: str | None = Field(None, min_length=8, max_length=256, pattern=r"^[A-Za-z0-9_\-.]+$")


def parse_request(body: Any) -> ClientSecretRequest:
    try:
        return ClientSecretRequest.model_validate(body)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "body"
        kind = err["type"]
        if kind == "extra_forbidden":
            message = f"Unknown field '{where}'."
        elif kind == "missing":
            message = f"Missing required field '{where}'."
        else:
            message = f"Invalid '{where}': {err['msg']}."
        raise bad_request(message) from None


def session_for(request: ClientSecretRequest, settings: BrokerSettings) -> dict[str, Any]:
    """The session config the broker will mint, after applying its policy to the client's choices."""
    choices = request.session or ClientSessionChoices(voice=None, instructions=None)
    if choices.voice is not None and choices.voice not in settings.allowed_voices:
        raise BrokerError(
            400,
            "PolicyViolation",
            "voice_not_allowed",
            f"Voice '{choices.voice}' is not allowed here. Allowed: {', '.join(settings.allowed_voices)}.",
        )
    if choices.instructions is not None and len(choices.instructions) > settings.max_instructions_chars:
        raise BrokerError(
            400,
            "PolicyViolation",
            "instructions_too_long",
            f"Instructions are limited to {settings.max_instructions_chars} characters.",
        )
    session: dict[str, Any] = {
        "type": "realtime",
        "model": settings.model,
        "instructions": choices.instructions if choices.instructions is not None else settings.instructions,
        "output_modalities": ["audio"] if "audio" in request.capabilities else ["text"],
    }
    if choices.voice is not None:
        session["audio"] = {"output": {"voice": choices.voice}}
    return session
