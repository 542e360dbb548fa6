"""Settings of an emulator instance: constructor arguments, or ``RTKIT_EMULATOR_*`` environment variables."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

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
    default_model: str = "gpt-realtime"
    #: How much faster than real time the "model" generates audio. The service is faster than
    #: real time too; 2.0 leaves a response in progress for half its playback, so barge-in can cancel it.
    generation_speed: float = Field(2.0, gt=0)
    max_session_seconds: float = Field(3600.0, ge=0)
    #: Browser origins allowed to POST ``/v1/realtime/calls`` directly (CORS), as the real API allows;
    #: nothing else of the emulator is opened to other origins. ``*`` allows any.
    cors_origins: list[str] = Field(default_factory=list)
    #: Worker processes carrying the WebRTC calls (0: calls run in this process). One process holds about
    #: ten calls at 50 frames/s each way; workers let the emulator use every core.
    workers: int = Field(0, ge=0, le=64)
    #: ICE candidates on 127.0.0.1 only. Default: on when ``host`` is a loopback address.
    loopback_ice: bool | None = None
