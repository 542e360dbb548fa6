"""rtkit: a Python kit for the OpenAI Realtime API, with a local emulator that runs offline."""

from rtkit.emulator import Emulator, EmulatorConfig
from rtkit.errors import (
    AudioUnavailableError,
    AuthenticationError,
    ConfigurationError,
    InvalidRequestError,
    RateLimitedError,
    RtkitError,
    TokenExpiredError,
    UpstreamError,
)
from rtkit.schema import RealtimeSessionConfig

__version__ = "0.1.0"

__all__ = [
    "AudioUnavailableError",
    "AuthenticationError",
    "ConfigurationError",
    "Emulator",
    "EmulatorConfig",
    "InvalidRequestError",
    "RateLimitedError",
    "RealtimeSessionConfig",
    "RtkitError",
    "TokenExpiredError",
    "UpstreamError",
    "__version__",
]
