"""A local emulator of the OpenAI Realtime API (GA): REST, WebRTC and WebSocket, offline."""

from rtkit.emulator.config import DEFAULT_API_KEY, EmulatorConfig
from rtkit.emulator.faults import Faults
from rtkit.emulator.responders import EchoResponder, Reply, Responder, ToneResponder, Turn
from rtkit.emulator.server import Emulator

__all__ = [
    "DEFAULT_API_KEY",
    "EchoResponder",
    "Emulator",
    "EmulatorConfig",
    "Faults",
    "Reply",
    "Responder",
    "ToneResponder",
    "Turn",
]
