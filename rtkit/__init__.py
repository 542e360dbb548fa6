"""rtkit: a Python kit for the OpenAI Realtime API, with a local emulator that runs offline.

The public surface, by job: mint keys (``TokenIssuer``, ``TokenCache``, ``Broker``), talk
(``RealtimeSession`` with a key provider, an audio source and a sink), watch (``Broadcast`` streams
of states, events, levels and ``SessionMetrics``), and practise offline (``Emulator``).

Names are imported on first use (PEP 562): ``import rtkit`` stays cheap, and the CLI, which imports only
what a command needs, does not pay for the broker, the emulator, aiortc and Redis.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS: dict[str, str] = {
    "SessionReport": "rtkit.report",
    "Usage": "rtkit.cost",
    "Rates": "rtkit.cost",
    "PriceTable": "rtkit.cost",
    "PRICES": "rtkit.cost",
    "Cost": "rtkit.cost",
    "AudioUnavailableError": "rtkit.errors",
    "AuthenticationError": "rtkit.errors",
    "Broadcast": "rtkit.events",
    "Broker": "rtkit.broker",
    "BrokerKeys": "rtkit.keys",
    "BrokerSettings": "rtkit.broker",
    "CacheUnavailableError": "rtkit.errors",
    "ConfigurationError": "rtkit.errors",
    "ConnectRecord": "rtkit.metrics",
    "ConnectionState": "rtkit.call",
    "Conversation": "rtkit.conversation",
    "Emulator": "rtkit.emulator",
    "EmulatorConfig": "rtkit.emulator",
    "EphemeralKey": "rtkit.tokens",
    "InvalidRequestError": "rtkit.errors",
    "IssuerKeys": "rtkit.keys",
    "KeyProvider": "rtkit.keys",
    "Level": "rtkit.audio.meter",
    "LevelMeter": "rtkit.audio.meter",
    "LiveCall": "rtkit.call",
    "MicrophoneDeniedError": "rtkit.errors",
    "MicrophoneSource": "rtkit.audio.sources",
    "MicrophoneUnavailableError": "rtkit.errors",
    "NetworkLostError": "rtkit.errors",
    "NullSink": "rtkit.audio.sinks",
    "PcmSource": "rtkit.audio.sources",
    "QuotaExceededError": "rtkit.errors",
    "RateLimitedError": "rtkit.errors",
    "RealtimeAPIError": "rtkit.errors",
    "RealtimeSession": "rtkit.session",
    "RealtimeSessionConfig": "rtkit.schema",
    "ReconnectPolicy": "rtkit.call",
    "RecorderSink": "rtkit.audio.sinks",
    "RefusableKeyProvider": "rtkit.keys",
    "RequestTimeoutError": "rtkit.errors",
    "ResumePolicy": "rtkit.resume",
    "ResumeRecord": "rtkit.metrics",
    "RtkitError": "rtkit.errors",
    "SessionMetrics": "rtkit.metrics",
    "SilenceSource": "rtkit.audio.sources",
    "SpeakerSink": "rtkit.audio.sinks",
    "SpeakerUnavailableError": "rtkit.errors",
    "SpeechSource": "rtkit.audio.sources",
    "StateChange": "rtkit.call",
    "StaticKey": "rtkit.keys",
    "TokenCache": "rtkit.cache",
    "TokenExpiredError": "rtkit.errors",
    "TokenIssuer": "rtkit.tokens",
    "ToneSource": "rtkit.audio.sources",
    "TransportChoice": "rtkit.call",
    "TurnRecord": "rtkit.metrics",
    "UpstreamError": "rtkit.errors",
    "WavFileSource": "rtkit.audio.sources",
    "WebRTCUnavailableError": "rtkit.errors",
}

if TYPE_CHECKING:  # what type checkers and IDEs see: the same names, imported eagerly
    from rtkit.audio.meter import Level, LevelMeter
    from rtkit.audio.sinks import NullSink, RecorderSink, SpeakerSink
    from rtkit.audio.sources import (
        MicrophoneSource,
        PcmSource,
        SilenceSource,
        SpeechSource,
        ToneSource,
        WavFileSource,
    )
    from rtkit.broker import Broker, BrokerSettings
    from rtkit.cache import TokenCache
    from rtkit.call import ConnectionState, LiveCall, ReconnectPolicy, StateChange, TransportChoice
    from rtkit.conversation import Conversation
    from rtkit.cost import PRICES, Cost, PriceTable, Rates, Usage
    from rtkit.emulator import Emulator, EmulatorConfig
    from rtkit.errors import (
        AudioUnavailableError,
        AuthenticationError,
        CacheUnavailableError,
        ConfigurationError,
        InvalidRequestError,
        MicrophoneDeniedError,
        MicrophoneUnavailableError,
        NetworkLostError,
        QuotaExceededError,
        RateLimitedError,
        RealtimeAPIError,
        RequestTimeoutError,
        RtkitError,
        SpeakerUnavailableError,
        TokenExpiredError,
        UpstreamError,
        WebRTCUnavailableError,
    )
    from rtkit.events import Broadcast
    from rtkit.keys import BrokerKeys, IssuerKeys, KeyProvider, RefusableKeyProvider, StaticKey
    from rtkit.metrics import ConnectRecord, ResumeRecord, SessionMetrics, TurnRecord
    from rtkit.report import SessionReport
    from rtkit.resume import ResumePolicy
    from rtkit.schema import RealtimeSessionConfig
    from rtkit.session import RealtimeSession
    from rtkit.tokens import EphemeralKey, TokenIssuer


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'rtkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once imported, an ordinary attribute
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__version__ = "0.1.0"

__all__ = [
    "PRICES",
    "AudioUnavailableError",
    "AuthenticationError",
    "Broadcast",
    "Broker",
    "BrokerKeys",
    "BrokerSettings",
    "CacheUnavailableError",
    "ConfigurationError",
    "ConnectRecord",
    "ConnectionState",
    "Conversation",
    "Cost",
    "Emulator",
    "EmulatorConfig",
    "EphemeralKey",
    "InvalidRequestError",
    "IssuerKeys",
    "KeyProvider",
    "Level",
    "LevelMeter",
    "LiveCall",
    "MicrophoneDeniedError",
    "MicrophoneSource",
    "MicrophoneUnavailableError",
    "NetworkLostError",
    "NullSink",
    "PcmSource",
    "PriceTable",
    "QuotaExceededError",
    "RateLimitedError",
    "Rates",
    "RealtimeAPIError",
    "RealtimeSession",
    "RealtimeSessionConfig",
    "ReconnectPolicy",
    "RecorderSink",
    "RefusableKeyProvider",
    "RequestTimeoutError",
    "ResumePolicy",
    "ResumeRecord",
    "RtkitError",
    "SessionMetrics",
    "SessionReport",
    "SilenceSource",
    "SpeakerSink",
    "SpeakerUnavailableError",
    "SpeechSource",
    "StateChange",
    "StaticKey",
    "TokenCache",
    "TokenExpiredError",
    "TokenIssuer",
    "ToneSource",
    "TransportChoice",
    "TurnRecord",
    "UpstreamError",
    "Usage",
    "WavFileSource",
    "WebRTCUnavailableError",
    "__version__",
]
