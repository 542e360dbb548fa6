"""The one interface both transports share, so the session (and tests) can swap them freely."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rtkit.audio.base import AudioSource
from rtkit.audio.pcm import PCM
from rtkit.errors import AuthenticationError, RtkitError, TokenExpiredError
from rtkit.tokens import api_error_detail, error_from_status

EventHandler = Callable[[dict[str, Any]], None]
#: Audio from the model: mono PCM16 and its sample rate.
AudioHandler = Callable[[PCM, int], None]
#: Called once when a connected transport goes away on its own; ``None`` means a clean hang-up.
ClosedHandler = Callable[[RtkitError | None], None]


@dataclass
class TransportCallbacks:
    on_event: EventHandler
    on_audio: AudioHandler
    on_closed: ClosedHandler
    #: Called with every 20 ms input frame actually sent (for input level meters).
    on_input: Callable[[PCM, int], None] = lambda pcm, rate: None


@dataclass
class ConnectTimings:
    """Milliseconds from the start of ``connect()``; ``None`` for steps a transport does not have."""

    offer_ms: float | None = None
    answer_ms: float | None = None
    connected_ms: float | None = None
    channel_open_ms: float | None = None
    started: float = field(default_factory=time.perf_counter, repr=False)

    def mark(self, step: str) -> None:
        setattr(self, f"{step}_ms", round((time.perf_counter() - self.started) * 1000, 2))


class Transport(ABC):
    """One live connection to the Realtime API carrying events and audio both ways."""

    #: ``"webrtc"`` or ``"websocket"``: fixed by the class in the kernel; a call the page makes says which it used.
    name: str

    def __init__(
        self,
        base_url: str,
        callbacks: TransportCallbacks,
        *,
        model: str = "gpt-realtime",
        connect_timeout: float = 10.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.callbacks = callbacks
        self.model = model
        self.connect_timeout = connect_timeout
        self.timings = ConnectTimings()

    @abstractmethod
    async def connect(self, key: str, source: AudioSource | None) -> None:
        """Open the connection with ``key``, streaming ``source`` as the microphone; raise a typed error."""

    @abstractmethod
    def send(self, event: dict[str, Any]) -> None:
        """Queue one client event."""

    @abstractmethod
    async def close(self) -> None:
        """Hang up; no ``on_closed`` call follows a close we asked for."""


def refusal(status: int, body: bytes | str, retry_after: str | None, what: str) -> RtkitError:
    """The error for a refused connection attempt, read from the body *before* anything tries to parse it
    as SDP (the classic bug: "Failed to parse SessionDescription" instead of the 429 it really was)."""
    err = error_from_status(status, body, retry_after)
    detail = api_error_detail(body)
    if isinstance(err, AuthenticationError):
        if "expired" in str(detail.get("message", "")).lower():
            return TokenExpiredError(
                f"The key was refused when opening the {what}: it has expired.", hint="mint a fresh key"
            )
        return AuthenticationError(
            f"The key was refused when opening the {what} ({detail.get('message', '401')}).",
            hint="mint a fresh ephemeral key",
        )
    return err
