"""Identifiers shaped like the Realtime API's (``event_…``, ``item_…``, ``resp_…``, ``sess_…``, ``rtc_…``)."""

from __future__ import annotations

import secrets
import string

_ALPHABET = string.ascii_letters + string.digits


def new_id(prefix: str, length: int = 22) -> str:
    """A random id with the API's prefix convention; 22 base62 characters carry ~131 bits.

    One draw of random bytes, then base62 digits (a ``secrets.choice`` per character cost 22 calls)."""
    number = int.from_bytes(secrets.token_bytes(length * 6 // 8 + 1), "big")
    chars = []
    for _ in range(length):
        number, digit = divmod(number, 62)
        chars.append(_ALPHABET[digit])
    return f"{prefix}_" + "".join(chars)


def fingerprint(secret: str) -> str:
    """A short, non-reversible way to name a key in logs and messages: ``ek_…abcd``."""
    if len(secret) <= 8:
        return "…"
    prefix = secret.split("_", 1)[0] + "_" if "_" in secret[:8] else ""
    return f"{prefix}…{secret[-4:]}"
