"""Transports: one interface, two wires (WebRTC on aiortc, and WebSocket)."""

from rtkit.transports.base import ConnectTimings, Transport, TransportCallbacks
from rtkit.transports.webrtc import WebRTCTransport
from rtkit.transports.websocket import WebSocketTransport

__all__ = ["ConnectTimings", "Transport", "TransportCallbacks", "WebRTCTransport", "WebSocketTransport"]
