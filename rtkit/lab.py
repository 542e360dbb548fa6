"""The backend a notebook lesson runs against: the emulator by default, the real API when asked.

In a lesson the kernel plays the seed's *backend*: it holds the main key (the emulator's, or
``OPENAI_API_KEY``) and mints ephemeral keys; sessions and widgets only ever see those.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from rtkit.emulator import Emulator
from rtkit.keys import IssuerKeys
from rtkit.tokens import OPENAI_BASE_URL, TokenIssuer

__all__ = ["LabBackend", "start_backend"]


@dataclass
class LabBackend:
    base_url: str
    issuer: TokenIssuer
    keys: IssuerKeys
    emulator: Emulator | None = None
    real: bool = False
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        if self.real:
            return f"Real Realtime API at {self.base_url} (OPENAI_API_KEY is set)."
        return f"Local emulator at {self.base_url}: no API key needed, nothing leaves this machine."

    async def close(self) -> None:
        await self.issuer.aclose()
        if self.emulator is not None:
            await self.emulator.stop()


async def start_backend(
    *, real: bool | None = None, session: dict[str, Any] | None = None, **emulator_settings: Any
) -> LabBackend:
    """Start what a lesson needs. ``real=None`` means: the real API if ``OPENAI_API_KEY`` is set."""
    api_key = os.environ.get("OPENAI_API_KEY")
    if real is None:
        real = bool(api_key)
    if real:
        if not api_key:
            from rtkit.errors import ConfigurationError

            raise ConfigurationError("real=True needs OPENAI_API_KEY in the environment.")
        issuer = TokenIssuer(api_key, base_url=os.environ.get("OPENAI_BASE_URL", OPENAI_BASE_URL))
        return LabBackend(issuer.base_url, issuer, IssuerKeys(issuer, session), real=True)
    emulator = await Emulator(**emulator_settings).start()
    issuer = TokenIssuer(emulator.api_key, base_url=emulator.base_url)
    return LabBackend(emulator.base_url, issuer, IssuerKeys(issuer, session), emulator=emulator)
