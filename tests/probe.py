"""A bare WebRTC caller: the docs' browser snippet in Python, with timestamps on everything.

Test and benchmark support (not part of the library): it exercises the emulator with nothing between the
wire and the measurement. Applications want ``rtkit``'s session client instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

import av
import httpx
import numpy as np
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from rtkit._ice import loopback_candidates, rtc_configuration
from rtkit.audio.media import OPUS_RATE, Framer, Pacer, Resampler, frame_samples, resample
from rtkit.audio.pcm import PCM, REALTIME_RATE

_FRAME = frame_samples(OPUS_RATE)


class PcmTrack(MediaStreamTrack):
    """Plays a PCM buffer (24 kHz mono) after ``lead_seconds`` of silence, then silence, paced at 20 ms, as
    48 kHz frames (what a browser sends, and what aiortc's Opus encoder passes straight through).
    ``sent_at`` keeps the clock time each frame left ``recv()``, for latency maths."""

    kind = "audio"

    def __init__(self, pcm: PCM | None = None, lead_seconds: float = 0.0) -> None:
        super().__init__()
        lead = np.zeros(int(lead_seconds * REALTIME_RATE), dtype=np.int16)
        self.pcm = np.concatenate([lead, pcm]) if pcm is not None else lead
        self.sent_at: list[float] = []
        self._wide = resample(self.pcm, REALTIME_RATE, OPUS_RATE)
        self._pacer = Pacer(max_lag=None, clock=time.perf_counter)
        self._framer = Framer(OPUS_RATE)

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        await self._pacer.wait()
        pos = self._framer.pts
        chunk = np.zeros(_FRAME, dtype=np.int16)
        piece = self._wide[pos : pos + _FRAME]
        chunk[: piece.size] = piece
        self.sent_at.append(time.perf_counter())
        return self._framer.frame(chunk)


@dataclass
class ProbeCall:
    """One call's record: events with arrival times, received audio frames with arrival times."""

    call_id: str = ""
    events: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    frames: list[tuple[float, PCM]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    pc: RTCPeerConnection | None = None
    track: PcmTrack | None = None
    channel: Any = None
    _waiters: list[tuple[str, asyncio.Future[dict[str, Any]]]] = field(default_factory=list)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def wait_for(self, event_type: str, timeout: float = 10.0) -> dict[str, Any]:
        """The first event of this type seen from now on (or already seen, if none is pending)."""
        for _, event in self.events:
            if event["type"] == event_type and not event.get("_claimed"):
                event["_claimed"] = True
                return event
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters.append((event_type, future))
        return await asyncio.wait_for(future, timeout)

    def send(self, event: dict[str, Any]) -> None:
        self.channel.send(json.dumps(event))

    def received_audio(self) -> PCM:
        return np.concatenate([pcm for _, pcm in self.frames]) if self.frames else np.zeros(0, np.int16)

    def _on_message(self, message: str) -> None:
        event = json.loads(message)
        now = time.perf_counter()
        self.events.append((now, event))
        for waiter in list(self._waiters):
            kind, future = waiter
            if kind == event["type"] and not future.done():
                event["_claimed"] = True
                future.set_result(event)
                self._waiters.remove(waiter)
                break

    async def _consume(self, track: MediaStreamTrack) -> None:
        resampler = Resampler(REALTIME_RATE)
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                self.frames.append((time.perf_counter(), resampler.convert(frame)))  # type: ignore[arg-type]

    async def close(self) -> None:
        if self.track:
            self.track.stop()
        if self.pc:
            await self.pc.close()
        for task in list(self._tasks):
            task.cancel()


async def open_call(
    base_url: str,
    key: str,
    *,
    audio: PCM | None = None,
    lead_seconds: float = 0.0,
    loopback: bool = True,
    timeout: float = 10.0,
) -> ProbeCall:
    """Offer a call with ``audio`` as the microphone and wait until the data channel is open."""
    probe = ProbeCall()
    t0 = time.perf_counter()
    pc = RTCPeerConnection(rtc_configuration())
    probe.pc = pc
    probe.track = PcmTrack(audio, lead_seconds)
    pc.addTrack(probe.track)
    channel = pc.createDataChannel("oai-events")
    probe.channel = channel
    opened = asyncio.get_running_loop().create_future()

    @channel.on("open")
    def _on_open() -> None:
        if not opened.done():
            opened.set_result(time.perf_counter())

    channel.on("message", probe._on_message)

    @pc.on("track")
    def _on_track(track: MediaStreamTrack) -> None:
        task = asyncio.ensure_future(probe._consume(track))
        probe._tasks.add(task)

    @pc.on("connectionstatechange")
    def _on_state() -> None:
        if pc.connectionState == "connected":
            probe.timings.setdefault("connected", time.perf_counter() - t0)

    with loopback_candidates(loopback):
        await pc.setLocalDescription(await pc.createOffer())
    probe.timings["offer"] = time.perf_counter() - t0
    async with httpx.AsyncClient(timeout=timeout) as http:
        response = await http.post(
            f"{base_url}/realtime/calls",
            content=pc.localDescription.sdp,
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/sdp"},
        )
    probe.timings["answer"] = time.perf_counter() - t0
    if response.status_code != 201:
        await probe.close()
        raise RuntimeError(f"POST /realtime/calls answered {response.status_code}: {response.text}")
    probe.call_id = response.headers["location"].rsplit("/", 1)[-1]
    await pc.setRemoteDescription(RTCSessionDescription(sdp=response.text, type="answer"))
    probe.timings["channel_open"] = await asyncio.wait_for(opened, timeout) - t0
    return probe
