"""Settings of an emulator instance: constructor arguments, or ``RTKIT_EMULATOR_*`` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from rtkit.emulator.cors import ANY_ORIGIN, web_origin

#: The main key the emulator accepts when none is configured. Not a secret: it only opens the emulator.
DEFAULT_API_KEY = "sk-emulator"


class EmulatorConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RTKIT_EMULATOR_", extra="forbid")

    host: str = "127.0.0.1"
    #: 0 picks a free port (tests, notebooks); the CLI's default is 8765.
    port: int = Field(0, ge=0, le=65535)
    api_key: SecretStr = SecretStr(DEFAULT_API_KEY)
    #: Guards the fault-injection endpoints under ``/_rtkit``; a random one is made when unset.
    admin_token: SecretStr | None = None
    responder: Literal["echo", "tone"] = "echo"
    #: A cassette (``rtkit.cassette``) the "model" replays instead of ``responder``: each session answers its
    #: user turns with the cassette's turns, in order, from the first.
    cassette: Path | None = None
    #: How much faster than recorded the cassette's replies start (its recorded wait before each reply is
    #: divided by this); the audio streams at ``generation_speed`` either way.
    cassette_speed: float = Field(1.0, gt=0)
    default_model: str = "gpt-realtime"
    #: How much faster than real time the "model" generates audio. The service is faster than
    #: real time too; 2.0 leaves a response in progress for half its playback, so barge-in can cancel it.
    generation_speed: float = Field(2.0, gt=0)
    max_session_seconds: float = Field(3600.0, ge=0)
    #: Browser origins whose pages may POST ``/v1/realtime/calls`` (CORS): ``*``, any, as the service answers;
    #: or a list, to allow only those (``[]``: none, until ``Emulator.allow_origin``). Nothing else of the
    #: emulator answers a preflight (``rtkit/emulator/cors.py``). Env: a JSON list.
    cors_origins: list[str] = Field(default_factory=lambda: [ANY_ORIGIN])
    #: Worker processes carrying the WebRTC calls (0: calls run in this process). One process holds about
    #: ten calls at 50 frames/s each way; workers let the emulator use every core.
    workers: int = Field(0, ge=0, le=64)
    #: ICE candidates on 127.0.0.1 only. Default: on when ``host`` is a loopback address.
    loopback_ice: bool | None = None
    #: Seconds a WebRTC call has to connect (ICE and DTLS) after its answer before it is closed and its UDP
    #: socket freed: an offer nobody can reach would hold one forever. Headless Chromium connects about 50 ms
    #: after the answer on loopback; rtkit's own client gives up after 10 s, so the emulator never does first.
    call_connect_timeout: float = Field(15.0, gt=0)
    #: Seconds a connected call's peer may send nothing at all (no RTP, RTCP or data channel packet) before
    #: it is taken for gone and the call closed. A live peer, even muted, sends RTCP every second or two;
    #: without this bound ICE consent freshness takes about 30 s to notice.
    call_peer_timeout: float = Field(10.0, gt=0)
    #: Start with the ``single_use_keys`` fault on: an ephemeral key opens one session, its second use is a 401.
    single_use_keys: bool = False

    @field_validator("cors_origins")
    @classmethod
    def _web_origins(cls, origins: list[str]) -> list[str]:
        return [web_origin(origin) for origin in origins]
