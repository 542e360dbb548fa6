"""The emulator's side of a WebRTC call: an aiortc peer with the model's voice on its media track.

Over WebRTC the reply's audio is not sent as events: it plays on the outgoing track, framed by
``output_audio_buffer.started``/``stopped``. ``ModelAudioTrack`` is that track: a paced queue of
20 ms frames that tells the engine when a response's audio starts and stops playing.

The queue holds 48 kHz frames, resampled as the engine hands the reply over: aiortc's Opus encoder
passes a whole 48 kHz frame straight into a packet, but holds a 24 kHz one in its FIFO until the next
arrives, which made every client hear the reply one frame (20 ms) late.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

import av
import numpy as np
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from rtkit._ice import loopback_candidates, rtc_configuration
from rtkit._liveness import PacketWatch
from rtkit.audio.media import OPUS_RATE, Framer, Pacer, Resampler, frame_samples
from rtkit.audio.pcm import PCM, REALTIME_RATE
from rtkit.emulator.engine import Engine

log = logging.getLogger("rtkit.emulator")

_OPUS = [c for c in RTCRtpSender.getCapabilities("audio").codecs if c.mimeType.lower() == "audio/opus"]

_FRAME = frame_samples(OPUS_RATE)
_NONE = np.zeros(0, dtype=np.int16)
#: Events held for a data channel that is not open yet; past this the oldest are dropped.
_MAX_PENDING = 1000


class ModelAudioTrack(MediaStreamTrack):
    """The model's voice: response audio when there is some, silence otherwise, always at 50 frames/s."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self.on_started: Callable[[str], None] = lambda rid: None
        self.on_stopped: Callable[[str], None] = lambda rid: None
        self._queue: deque[tuple[str, PCM]] = deque()
        self._finished: set[str] = set()
        self._current: str | None = None
        # The response being resampled, and what of it does not fill a frame yet.
        self._incoming: str | None = None
        self._partial = _NONE
        self._resampler = Resampler(OPUS_RATE)
        # A call that falls behind catches up rather than skipping: the engine counts on every frame playing.
        self._pacer = Pacer(max_lag=None)
        self._framer = Framer(OPUS_RATE)
        self._silence = np.zeros(_FRAME, dtype=np.int16)

    # -- Player, as the engine sees it ----------------------------------------------------
    def enqueue(self, pcm: PCM, response_id: str) -> None:
        if response_id != self._incoming:
            self._end_incoming()
            self._incoming = response_id
        self._frame(np.concatenate([self._partial, self._resampler.push(pcm, REALTIME_RATE)]), response_id)

    def finish(self, response_id: str) -> None:
        if response_id == self._incoming:
            self._end_incoming()
        self._finished.add(response_id)

    def clear(self) -> str | None:
        rid = self._current or (self._queue[0][0] if self._queue else self._incoming)
        self._queue.clear()
        self._current = None
        self._incoming, self._partial = None, _NONE
        self._resampler.reset()
        return rid

    @property
    def playing(self) -> bool:
        return self._current is not None or bool(self._queue) or self._incoming is not None

    def _frame(self, pcm: PCM, response_id: str) -> None:
        whole = pcm.size - pcm.size % _FRAME
        for start in range(0, whole, _FRAME):
            self._queue.append((response_id, pcm[start : start + _FRAME]))
        self._partial = pcm[whole:]

    def _end_incoming(self) -> None:
        """The response being resampled is complete: what is left of it fills its last frame, zero-padded.

        A reply plays in as many frames as its length at 24 kHz makes, as before it was resampled: the
        filter's tail (under 1 ms) goes into the last frame's padding if there is some, and is dropped
        rather than costing a frame of its own (which would delay ``output_audio_buffer.stopped`` 20 ms).
        """
        if self._incoming is None:
            return
        tail = np.concatenate([self._partial, self._resampler.flush()])
        padded = np.zeros(_FRAME if self._partial.size else 0, dtype=np.int16)
        padded[: min(tail.size, padded.size)] = tail[: padded.size]
        self._frame(padded, self._incoming)
        self._incoming = None

    # -- MediaStreamTrack -----------------------------------------------------------------
    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        await self._pacer.wait()
        if self._queue:
            rid, pcm = self._queue.popleft()
            if rid != self._current:
                if self._current is not None:
                    self.on_stopped(self._current)
                self._current = rid
                self.on_started(rid)
        else:
            pcm = self._silence
            if self._current is not None and self._current in self._finished:
                self._finished.discard(self._current)
                rid, self._current = self._current, None
                self.on_stopped(rid)
        return self._framer.frame(pcm)


class RtcCall:
    """One WebRTC call: the peer connection, its tracks, the ``oai-events`` channel and the engine.

    A call closes itself when it does not connect within ``connect_timeout`` seconds of its answer (an offer
    without reachable candidates would otherwise hold its UDP socket forever), and when its peer sends
    nothing at all for ``peer_timeout`` seconds once connected (ICE consent freshness takes about 30 s).
    """

    def __init__(
        self,
        call_id: str,
        engine: Engine,
        track: ModelAudioTrack,
        *,
        loopback_only: bool,
        connect_timeout: float,
        peer_timeout: float,
    ) -> None:
        self.call_id = call_id
        self.engine = engine
        self.track = track
        self.loopback_only = loopback_only
        self.connect_timeout = connect_timeout
        self.peer_timeout = peer_timeout
        self.created = time.time()
        self.on_closed: Callable[[RtcCall], None] = lambda call: None
        self.pc = RTCPeerConnection(rtc_configuration())
        self._channel: Any = None
        self._pending: list[str] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self._connected = asyncio.Event()
        track.on_started = engine.playback_started
        track.on_stopped = engine.playback_stopped
        engine.add_listener(self._send)
        self.pc.on("datachannel", self._on_datachannel)
        self.pc.on("track", self._on_track)
        self.pc.on("connectionstatechange", self._on_state)

    @property
    def state(self) -> str:
        return str(self.pc.connectionState)

    async def answer(self, offer_sdp: str) -> str:
        """Apply the client's offer and return our answer (with our candidates: aiortc does not trickle)."""
        with loopback_candidates(self.loopback_only):
            # Our transceiver exists before the offer is applied, so that the offer's audio section binds to
            # it with our codec preference: the service answers Opus only (aiortc would add G722 and G.711).
            transceiver = self.pc.addTransceiver(self.track, direction="sendrecv")
            transceiver.setCodecPreferences(_OPUS)
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
            if transceiver.mid is None:
                raise ValueError("the offer has no audio media section")
            await self.pc.setLocalDescription(await self.pc.createAnswer())
        self._spawn(self._watch())
        return str(self.pc.localDescription.sdp)

    def _send(self, event: dict[str, object]) -> None:
        import json

        text = json.dumps(event)
        channel = self._channel
        if channel is not None and channel.readyState == "open":
            channel.send(text)
        elif channel is None and not self._closed:
            # Before the client's channel opens (audio may arrive first); once it has closed, events have
            # nowhere to go and are dropped.
            self._pending.append(text)
            del self._pending[:-_MAX_PENDING]

    def _on_datachannel(self, channel: object) -> None:
        if getattr(channel, "label", None) != "oai-events":
            return
        self._channel = channel
        channel.on("message", self.engine.handle_text)  # type: ignore[attr-defined]
        self.engine.start()
        for text in self._pending:
            channel.send(text)  # type: ignore[attr-defined]
        self._pending.clear()

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio":
            self._spawn(self._consume(track))

    async def _consume(self, track: MediaStreamTrack) -> None:
        resampler = Resampler(REALTIME_RATE)
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                self.engine.feed_audio(resampler.convert(frame))  # type: ignore[arg-type]

    async def _on_state(self) -> None:
        if self.pc.connectionState == "connected":
            self._connected.set()
        elif self.pc.connectionState in ("failed", "closed"):
            await self.close()

    async def _watch(self) -> None:
        try:
            await asyncio.wait_for(self._connected.wait(), self.connect_timeout)
        except TimeoutError:
            log.info("call %s did not connect within %g s; closing it", self.call_id, self.connect_timeout)
            await self.close()
            return
        # Any packet counts, not only audio: a browser that mutes with replaceTrack(null) sends no RTP at all
        # (and webrtc-pc says a disabled track sends no audio), but it keeps sending RTCP receiver reports
        # about our audio, which never stops. Measured from Chromium: 50 packets/s with track.enabled = false,
        # about 0.6/s with replaceTrack(null); aiortc sends RTCP at least every 1.5 s.
        watch = PacketWatch(self.pc, min(1.0, self.peer_timeout / 4))
        while await watch.step() < self.peer_timeout:
            pass
        log.info("call %s heard nothing from its peer for %g s; closing it", self.call_id, self.peer_timeout)
        await self.close()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Hang up: the peer sees its connection close at once."""
        if self._closed:
            return
        self._closed = True
        await self.engine.close()
        self.track.stop()
        await self.pc.close()
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()
        self.on_closed(self)

    async def drop(self, silent: bool = False) -> None:
        """Cut the call as a network failure would. ``silent`` stops all packets without telling the peer
        (it must notice on its own); otherwise the peer is told at once, like a server crash."""
        if silent:
            for transceiver in self.pc.getTransceivers():
                ice = transceiver.sender.transport.transport
                with contextlib.suppress(Exception):
                    await ice.stop()
            sctp = self.pc.sctp
            if sctp is not None:
                with contextlib.suppress(Exception):
                    await sctp.transport.transport.stop()
        await self.close()
