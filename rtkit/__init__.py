"""rtkit: a Python kit for the OpenAI Realtime API, with a local emulator that runs offline.

The public surface, by job: mint keys (``TokenIssuer``, ``TokenCache``, ``Broker``), talk
(``RealtimeSession`` with a key provider, an audio source and a sink), watch (``Broadcast`` streams
of states, events, levels and ``SessionMetrics``), and practise offline (``Emulator``).
"""

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
from rtkit.metrics import ConnectRecord, SessionMetrics, TurnRecord
from rtkit.schema import RealtimeSessionConfig
from rtkit.session import RealtimeSession
from rtkit.tokens import EphemeralKey, TokenIssuer

__version__ = "0.1.0"

__all__ = [
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
    "QuotaExceededError",
    "RateLimitedError",
    "RealtimeAPIError",
    "RealtimeSession",
    "RealtimeSessionConfig",
    "ReconnectPolicy",
    "RecorderSink",
    "RefusableKeyProvider",
    "RequestTimeoutError",
    "RtkitError",
    "SessionMetrics",
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
    "WavFileSource",
    "WebRTCUnavailableError",
    "__version__",
]
