"""The WebRTC transport on aiortc: what the docs' browser code does, in Python.

SDP offer POSTed to ``{base_url}/realtime/calls`` with the ephemeral key; Opus audio both ways on
one media track; JSON events on the ``oai-events`` data channel. Against a loopback server ICE
stays on 127.0.0.1 with no STUN; elsewhere aiortc gathers normally with the ICE servers given.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any
from urllib.parse import urlsplit

import av
import httpx
import numpy as np

from rtkit._http import ssl_context
from rtkit._ice import is_loopback_host, loopback_candidates, rtc_configuration
from rtkit._liveness import PacketWatch
from rtkit.audio.base import AudioSource
from rtkit.audio.media import OPUS_RATE, Framer, Pacer, Resampler, frame_samples
from rtkit.errors import NetworkLostError, UpstreamError, WebRTCUnavailableError
from rtkit.transports.base import Transport, TransportCallbacks, refusal

log = logging.getLogger("rtkit.transports")

try:
    from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
    from aiortc.jitterbuffer import JitterBuffer
    from aiortc.mediastreams import MediaStreamError
except ImportError:  # pragma: no cover - aiortc is a dependency, but "auto" must survive without it
    MediaStreamTrack = object  # type: ignore[assignment,misc]
    RTCPeerConnection = None  # type: ignore[assignment,misc]


#: A peer that sends nothing for this long is what browsers call ``disconnected``: the service's track sends
#: 50 packets a second, and RTCP flows both ways even in silence. aiortc has no such state of its own (it
#: notices a silent peer only when ICE consent fails: six checks 5 s apart, about 30 s).
QUIET_S = 1.0
POLL_S = 0.25


class SourceTrack(MediaStreamTrack):
    """An rtkit ``AudioSource`` as an aiortc track; the source paces it (silence paces itself).

    Frames go to the Opus encoder at 48 kHz, which it passes straight through; a 24 kHz frame would
    wait in its FIFO for the next one and leave 20 ms late.
    """

    kind = "audio"

    def __init__(self, source: AudioSource | None, on_input: Any) -> None:
        super().__init__()
        self.source = source
        self.on_input = on_input
        self._framer = Framer(OPUS_RATE)
        self._resampler = Resampler(OPUS_RATE)
        self._pacer = Pacer()
        self._silence = np.zeros(frame_samples(OPUS_RATE), dtype=np.int16)

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self.source is None:
            await self._pacer.wait()
            pcm, rate = self._silence, OPUS_RATE
        else:
            pcm, rate = await self.source.read(), self.source.sample_rate
        self.on_input(pcm, rate)
        return self._framer.frame(self._resampler.push(pcm, rate))


def _set_jitter_buffer(receiver: Any, packets: int) -> None:
    """Give an audio receiver a jitter buffer that releases a frame after ``packets`` later packets.

    aiortc's audio receiver waits for 4 (80 ms), a fixed delay on top of the network's: measured against
    the emulator, rtkit heard a reply onset 101 ms after it left against Chromium's 43 ms, and with 1 packet
    41 ms (benchmarks/session_vs_browser.py). aiortc exposes no setting, so the private buffer is replaced
    before any packet arrives; if a future aiortc renames it, its default stays and nothing breaks.
    """
    name = "_RTCRtpReceiver__jitter_buffer"
    if hasattr(receiver, name):
        setattr(receiver, name, JitterBuffer(capacity=16, prefetch=packets))
    else:
        log.debug("aiortc's receiver has no %s; keeping its default jitter buffer", name)


class WebRTCTransport(Transport):
    name = "webrtc"

    def __init__(
        self,
        base_url: str,
        callbacks: TransportCallbacks,
        *,
        model: str = "gpt-realtime",
        connect_timeout: float = 10.0,
        ice_servers: list[dict[str, Any]] | None = None,
        output_rate: int = 24_000,
        jitter_packets: int | None = None,
        disconnect_grace: float = 3.0,
    ) -> None:
        super().__init__(base_url, callbacks, model=model, connect_timeout=connect_timeout)
        if RTCPeerConnection is None:
            raise WebRTCUnavailableError(
                "aiortc is not installed, so WebRTC is not available.",
                hint="pip install aiortc, or use transport='websocket'",
            )
        self.ice_servers = ice_servers
        self.output_rate = output_rate
        #: Seconds a ``disconnected`` connection (no packet for ``QUIET_S``) may take to recover on its own.
        self.disconnect_grace = disconnect_grace
        # On loopback packets cannot be reordered, so one packet of look-ahead is enough; elsewhere two
        # tolerate one out-of-order packet. (aiortc holds four: 80 ms, twice Chromium's NetEq here.)
        self.jitter_packets = jitter_packets if jitter_packets is not None else (1 if self.loopback else 2)
        self.call_id: str | None = None
        self._pc: Any = None
        self._channel: Any = None
        self._track: SourceTrack | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self._connected = False

    @property
    def loopback(self) -> bool:
        return is_loopback_host(urlsplit(self.base_url).hostname or "")

    async def connect(self, key: str, source: AudioSource | None) -> None:
        try:
            await asyncio.wait_for(self._connect(key, source), self.connect_timeout)
        except TimeoutError:
            await self.close()
            raise WebRTCUnavailableError(
                f"The WebRTC connection was not established within {self.connect_timeout:g} s (ICE or DTLS).",
                hint="a firewall may block UDP; transport='auto' falls back to WebSocket",
            ) from None
        except BaseException:
            await self.close()
            raise

    async def _connect(self, key: str, source: AudioSource | None) -> None:
        pc = self._pc = RTCPeerConnection(rtc_configuration(self.ice_servers))
        self._track = SourceTrack(source, self.callbacks.on_input)
        pc.addTrack(self._track)
        for transceiver in pc.getTransceivers():
            if transceiver.kind == "audio":
                _set_jitter_buffer(transceiver.receiver, self.jitter_packets)
        channel = self._channel = pc.createDataChannel("oai-events")
        opened = asyncio.get_running_loop().create_future()
        connected = asyncio.get_running_loop().create_future()
        # If connecting fails earlier (a refused POST), nobody awaits this future; mark its exception seen.
        connected.add_done_callback(lambda f: f.cancelled() or f.exception())

        @channel.on("open")
        def _open() -> None:
            if not opened.done():
                opened.set_result(None)

        channel.on("message", self._on_message)

        @pc.on("track")
        def _track(track: Any) -> None:
            self._spawn(self._play(track))

        @pc.on("connectionstatechange")
        def _state() -> None:
            state = pc.connectionState
            if state == "connected" and not connected.done():
                self.timings.mark("connected")
                connected.set_result(None)
            elif state in ("failed", "closed"):
                if not connected.done():
                    connected.set_exception(WebRTCUnavailableError(f"The WebRTC connection {state} while connecting."))
                elif self._connected and not self._closing:
                    self._lost(f"The WebRTC connection {state}.")

        with loopback_candidates(self.loopback):
            await pc.setLocalDescription(await pc.createOffer())
        self.timings.mark("offer")
        try:
            async with httpx.AsyncClient(timeout=self.connect_timeout, verify=ssl_context()) as http:
                response = await http.post(
                    f"{self.base_url}/realtime/calls",
                    content=pc.localDescription.sdp,
                    headers={"Authorization": f"Bearer {key}", "Content-Type": "application/sdp"},
                )
        except httpx.TransportError as exc:
            raise UpstreamError(
                f"Cannot reach {self.base_url} to open the call ({type(exc).__name__}).",
                hint="check the network, or that the emulator is running",
            ) from None
        self.timings.mark("answer")
        if response.status_code not in (200, 201):
            raise refusal(response.status_code, response.content, response.headers.get("retry-after"), "WebRTC call")
        self.call_id = response.headers.get("location", "").rsplit("/", 1)[-1] or None
        await pc.setRemoteDescription(RTCSessionDescription(sdp=response.text, type="answer"))
        await connected
        await opened
        self.timings.mark("channel_open")
        self._connected = True
        channel.on("close", lambda: self._lost("The data channel closed.") if not self._closing else None)
        self._spawn(self._watch())

    async def _watch(self) -> None:
        """Notice a peer gone silent (a dropped network, a frozen server): no packet for ``QUIET_S`` is
        ``disconnected``, which may heal; still nothing ``disconnect_grace`` later, the call is lost."""
        watch = PacketWatch(self._pc, POLL_S)
        while not self._closing:
            before = watch.quiet
            quiet = await watch.step()
            if not quiet and before >= QUIET_S:
                log.info("the WebRTC connection recovered after %.1f s without packets", before)
            if quiet >= QUIET_S + self.disconnect_grace:
                self._lost(f"Nothing arrived from the server for {quiet:.1f} s.")
                return

    def _on_message(self, message: str | bytes) -> None:
        try:
            event = json.loads(message)
        except ValueError:
            log.warning("ignored a data-channel message that is not JSON")
            return
        if isinstance(event, dict):
            self.callbacks.on_event(event)

    async def _play(self, track: Any) -> None:
        resampler = Resampler(self.output_rate)
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                self.callbacks.on_audio(resampler.convert(frame), self.output_rate)

    def _lost(self, why: str) -> None:
        if self._closing:
            return
        self._closing = True
        self.callbacks.on_closed(NetworkLostError(why, hint="the session reconnects with a fresh key"))
        self._spawn(self._teardown())

    def send(self, event: dict[str, Any]) -> None:
        if self._channel is None or self._channel.readyState != "open":
            raise NetworkLostError("The data channel is not open.", hint="wait for the session to be connected")
        self._channel.send(json.dumps(event))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _teardown(self) -> None:
        if self._track is not None:
            self._track.stop()
        if self._pc is not None:
            await self._pc.close()

    async def close(self) -> None:
        self._closing = True
        await self._teardown()
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()
