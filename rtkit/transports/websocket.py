"""The WebSocket transport: the same conversation over ``GET /v1/realtime``, audio as base64 PCM16 at 24 kHz.

It is the fallback where WebRTC cannot run (no UDP, no aiortc) and the natural choice server-side.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
from typing import Any

import numpy as np
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from rtkit.audio.base import AudioSource
from rtkit.audio.media import Resampler
from rtkit.audio.pcm import REALTIME_RATE
from rtkit.errors import NetworkLostError, RequestTimeoutError, UpstreamError
from rtkit.transports.base import Transport, TransportCallbacks, refusal

log = logging.getLogger("rtkit.transports")

#: Seconds between keepalive pings. A silent drop (a dead NAT entry, a frozen server) sends no close frame
#: and TCP alone takes minutes to notice; one ping every 2 s costs a few bytes and bounds the wait at
#: ``ping_interval + ping_timeout``. websockets' default (20 s + 20 s) is too slow for a conversation.
PING_INTERVAL_S = 2.0
#: Seconds to wait for the server's answer to our close frame. websockets waits 10 s by default, also after a
#: keepalive timeout, before the connection counts as closed: measured, a frozen server took 14 s to notice
#: (benchmarks/drop_detection.py). A server that has not answered within 1 s is not going to.
CLOSE_TIMEOUT_S = 1.0


class WebSocketTransport(Transport):
    name = "websocket"

    def __init__(
        self,
        base_url: str,
        callbacks: TransportCallbacks,
        *,
        model: str = "gpt-realtime",
        connect_timeout: float = 10.0,
        disconnect_grace: float = 3.0,
    ) -> None:
        super().__init__(base_url, callbacks, model=model, connect_timeout=connect_timeout)
        #: The pong's deadline. Longer than a busy notebook cell usually blocks the loop, so a slow kernel is
        #: not mistaken for a dead server; the loss is noticed within ``PING_INTERVAL_S + disconnect_grace``.
        self.disconnect_grace = disconnect_grace
        self._ws: Any = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False

    @property
    def url(self) -> str:
        ws_base = self.base_url.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
        return f"{ws_base}/realtime?model={self.model}"

    async def connect(self, key: str, source: AudioSource | None) -> None:
        try:
            self._ws = await websockets.connect(
                self.url,
                additional_headers={"Authorization": f"Bearer {key}"},
                open_timeout=self.connect_timeout,
                max_size=16 * 2**20,
                ping_interval=PING_INTERVAL_S,
                ping_timeout=self.disconnect_grace,
                close_timeout=CLOSE_TIMEOUT_S,
            )
        except InvalidStatus as exc:
            denial = exc.response
            raise refusal(
                denial.status_code, bytes(denial.body or b""), denial.headers.get("Retry-After"), "WebSocket"
            ) from None
        except TimeoutError:
            raise RequestTimeoutError(f"The WebSocket to {self.url} did not open in time.") from None
        except OSError as exc:
            raise UpstreamError(
                f"Cannot reach {self.url} ({exc.strerror or type(exc).__name__}).",
                hint="check the network, or that the emulator is running",
            ) from None
        self.timings.mark("connected")
        self._spawn(self._read())
        if source is not None:
            self._spawn(self._pump(source))

    async def _read(self) -> None:
        try:
            async for message in self._ws:
                try:
                    event = json.loads(message)
                except ValueError:
                    continue
                if not isinstance(event, dict):
                    continue
                # The event first: whoever plays the audio learns from it which item the audio belongs to.
                self.callbacks.on_event(event)
                if event.get("type") == "response.output_audio.delta":
                    pcm = np.frombuffer(base64.b64decode(event.get("delta", "")), dtype="<i2").astype(np.int16)
                    self.callbacks.on_audio(pcm, REALTIME_RATE)
        except ConnectionClosed:
            pass
        if not self._closing:
            self._closing = True
            code = self._ws.close_code
            reason = self._ws.close_reason or ""
            self.callbacks.on_closed(
                None
                if code == 1000
                else NetworkLostError(
                    f"The WebSocket closed ({code}{': ' + reason if reason else ''}).",
                    hint="the session reconnects with a fresh key",
                )
            )

    async def _pump(self, source: AudioSource) -> None:
        """Stream the source as ``input_audio_buffer.append`` events, 20 ms each."""
        resampler = Resampler(REALTIME_RATE)  # one stream: resampling frame by frame would click at each edge
        with contextlib.suppress(ConnectionClosed, asyncio.CancelledError):
            while not self._closing:
                pcm = await source.read()
                self.callbacks.on_input(pcm, source.sample_rate)
                pcm24 = resampler.push(pcm, source.sample_rate)
                await self._ws.send(
                    json.dumps(
                        {
                            "type": "input_audio_buffer.append",
                            "audio": base64.b64encode(pcm24.astype("<i2").tobytes()).decode(),
                        }
                    )
                )

    def send(self, event: dict[str, Any]) -> None:
        if self._ws is None or self._closing:
            raise NetworkLostError("The WebSocket is not open.", hint="wait for the session to be connected")
        self._spawn(self._ws.send(json.dumps(event)))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        self._closing = True
        if self._ws is not None:
            await self._ws.close()
        for task in list(self._tasks):
            task.cancel()
