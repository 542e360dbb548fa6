"""The backend a notebook lesson runs against, and the call it makes: where the audio is, the reader chooses.

In a lesson the kernel plays the guide's *backend*: it holds the main key (the emulator's by default, or
``OPENAI_API_KEY``) and mints ephemeral keys; calls and widgets only ever see those. The *client* is
``backend.call()``, on the side the reader chose once (``RTKIT_AUDIO``) for every lesson:

* ``"recorded"`` (default): the kernel plays the lesson's recorded sentence or tone and records the reply.
  Runs anywhere, with no sound device and no browser: the notebooks' tests run this.
* ``"kernel"``: the kernel's own microphone and speaker (sounddevice), for Jupyter on a laptop.
* ``"browser"``: this browser tab's microphone and speaker (``BrowserCall``), for a JupyterHub, a Binder,
  any server whose kernel has no sound device. The emulator opens its CORS to the page showing the call.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, get_args

from rtkit.audio.base import AudioSink, AudioSource
from rtkit.call import LiveCall
from rtkit.emulator import Emulator
from rtkit.errors import ConfigurationError
from rtkit.keys import IssuerKeys
from rtkit.tokens import OPENAI_BASE_URL, TokenIssuer

if TYPE_CHECKING:
    from rtkit.widgets.browser_call import BrowserCall

__all__ = ["AudioSide", "LabBackend", "audio_side", "start_backend"]

AudioSide = Literal["recorded", "kernel", "browser"]
#: The reader's choice for every lesson, from the environment (a hub can set it for everyone).
AUDIO_ENV = "RTKIT_AUDIO"
#: Options both kinds of call take; the rest are passed only to the kind that knows them.
_SESSION_ONLY = ("ice_servers", "jitter_packets")
_BROWSER_ONLY = ("frontend_timeout",)


def _jupyter_proxy_available() -> bool:
    """jupyter-server-proxy is installed (the kernel shares the server's environment, as on most hubs)."""
    return importlib.util.find_spec("jupyter_server_proxy") is not None


def audio_side(choice: str | None = None) -> AudioSide:
    """``choice``, else ``$RTKIT_AUDIO``, else ``"recorded"``; anything else is a ``ConfigurationError``."""
    value = (choice or os.environ.get(AUDIO_ENV) or "recorded").strip().lower()
    if value not in get_args(AudioSide):
        raise ConfigurationError(
            f"Unknown audio side {value!r}.", hint=f"use one of {', '.join(get_args(AudioSide))} (or unset {AUDIO_ENV})"
        )
    return value  # type: ignore[return-value]


@dataclass
class LabBackend:
    base_url: str
    issuer: TokenIssuer
    keys: IssuerKeys
    emulator: Emulator | None = None
    real: bool = False
    notes: list[str] = field(default_factory=list)

    def call(
        self,
        config: dict[str, Any] | None = None,
        *,
        audio: AudioSide | str | None = None,
        source: AudioSource | None = None,
        **options: Any,
    ) -> LiveCall:
        """The lesson's call, on the side the reader chose (see the module's docstring).

        ``source`` is the lesson's recorded audio (a spoken sentence when not given); it is played only on the
        ``"recorded"`` side. Elsewhere the reader speaks, except where the lesson's source is a ``SilenceSource``
        (text turns): there the microphone starts muted, so that a room's chatter does not become turns (the
        call's Unmute button is one click away). ``options`` go to ``RealtimeSession`` or ``BrowserCall``
        (``transport``, ``reconnect``, ``connect_timeout``...). A ``BrowserCall`` must be on show before it
        connects: put it (or a ``ConnectionPanel``, which shows it) at the end of a cell, and connect in the next.
        """
        from rtkit.audio.sources import MicrophoneSource, SilenceSource, SpeechSource

        side = audio_side(audio)
        quiet = isinstance(source, SilenceSource)
        if side == "browser":
            call = self.browser_call(config, **{k: v for k, v in options.items() if k not in _SESSION_ONLY})
            call.muted = quiet
            return call
        from rtkit.audio.sinks import RecorderSink, SpeakerSink
        from rtkit.session import RealtimeSession

        session_options = {k: v for k, v in options.items() if k not in _BROWSER_ONLY}
        if side == "kernel":
            voice_in: AudioSource = source if quiet and source is not None else MicrophoneSource()
            voice_out: AudioSink = SpeakerSink()
        else:
            voice_in = source if source is not None else SpeechSource(lead_seconds=0.5)
            voice_out = RecorderSink()
        return RealtimeSession(
            self.keys, config, base_url=self.base_url, source=voice_in, sink=voice_out, **session_options
        )

    def browser_call(self, config: dict[str, Any] | None = None, **options: Any) -> BrowserCall:
        """A ``BrowserCall`` with this backend's keys, that the notebook's page can reach.

        The real API is reached directly. The kernel's emulator is reached through the Jupyter server
        (jupyter-server-proxy: ``proxy/<port>/v1``, same origin as the page, so it works on an https hub),
        or else directly (its CORS answers any page, as the service does; one started with a list of
        ``cors_origins`` is opened to this page when the page shows the call). On a JupyterHub the browser is
        elsewhere: the proxy carries HTTP and WebSockets but not WebRTC's UDP media, so such calls use the WebSocket.
        """
        from rtkit.widgets.browser_call import BrowserCall

        base_url = self.base_url
        if self.emulator is not None and _jupyter_proxy_available():
            base_url = f"proxy/{self.emulator.port}/v1"
            if os.environ.get("JUPYTERHUB_SERVICE_PREFIX") and options.get("transport") != "websocket":
                self.notes.append("On a JupyterHub, browser calls to the emulator run over its WebSocket.")
                options["transport"] = "websocket"
        return BrowserCall(self.keys, config, base_url=base_url, on_frontend=self.allow_page, **options)

    def allow_page(self, origin: str) -> None:
        """Let the notebook page at ``origin`` open calls on an emulator started with a list of ``cors_origins``
        (by default it answers any origin, and the real API needs nothing)."""
        if self.emulator is not None:
            self.emulator.allow_origin(origin)

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
            raise ConfigurationError("real=True needs OPENAI_API_KEY in the environment.")
        issuer = TokenIssuer(api_key, base_url=os.environ.get("OPENAI_BASE_URL", OPENAI_BASE_URL))
        return LabBackend(issuer.base_url, issuer, IssuerKeys(issuer, session), real=True)
    emulator = await Emulator(**emulator_settings).start()
    # Against the local emulator a retry is a demonstration, not a production backoff: its own waits stay
    # short (a server's Retry-After is still waited in full).
    issuer = TokenIssuer(emulator.api_key, base_url=emulator.base_url, backoff_max=0.6)
    return LabBackend(emulator.base_url, issuer, IssuerKeys(issuer, session), emulator=emulator)
