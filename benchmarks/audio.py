"""One-way audio latency through a WebRTC call, each direction, and time to first audio.

Caller and emulator share one process and one ``perf_counter`` clock, so a tone onset can be
timed where it leaves one side and where the other side first hears it:

* uplink: the probe's microphone track returns the onset frame from ``recv()`` → the emulator's
  incoming-audio consumer hands the first voiced chunk to ``engine.feed_audio``;
* downlink: the emulator's ``ModelAudioTrack.recv()`` returns the first voiced reply frame → the
  probe decodes a frame above -40 dBFS.

Both include Opus encode/decode, RTP over loopback, aiortc's audio jitter buffer (it holds 4
packets before playing, ~80 ms) and the shared event loop. The emulator's code is untouched: the
benchmark wraps methods on the call objects it creates.

The user speaks short tone bursts; a ``ToneResponder`` answers each turn with a tone, so every
reply starts voiced on its first frame (the echo responder would replay the VAD's 300 ms of
prefix padding first, hiding the onset).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from benchmarks._common import MAIN_KEY, Options, Report, Row, command, median_p95, ms
from rtkit.audio.pcm import PCM, REALTIME_RATE, level_dbfs, pcm_from_frame, tone
from rtkit.emulator import Emulator, ToneResponder
from rtkit.emulator.sessions import SessionState
from rtkit.emulator.webrtc import RtcCall
from tests.probe import open_call

NAME = "audio"
VOICED_DBFS = -40.0
_FRAME = REALTIME_RATE // 50
LEAD_S = 1.0
BURST_S = 0.3  # user speech: a 440 Hz burst (VAD needs >= 60 ms)
GAP_S = 1.5  # 500 ms VAD window + 200 ms reply + margin, so replies never overlap the next burst
REPLY_S = 0.2
#: A tone onset is a voiced frame after at least this much unvoiced time.
ONSET_GAP_S = 0.1


def voiced(pcm: PCM) -> bool:
    return level_dbfs(pcm)[0] > VOICED_DBFS


def onsets(times: Sequence[float]) -> list[float]:
    """First times of each run of voiced frames (runs split by ``ONSET_GAP_S`` of silence)."""
    found: list[float] = []
    previous = -np.inf
    for t in times:
        if t - previous > ONSET_GAP_S:
            found.append(t)
        previous = t
    return found


def run_ends(times: Sequence[float]) -> list[float]:
    """Last times of each run of voiced frames."""
    return [-t for t in reversed(onsets([-t for t in reversed(times)]))]


def pair_delays(starts: Sequence[float], arrivals: Sequence[float], within: float) -> list[float]:
    """For each start, the delay to the first arrival after it (if one comes within ``within`` s)."""
    delays = []
    for s in starts:
        later = [a - s for a in arrivals if 0 <= a - s <= within]
        if later:
            delays.append(min(later))
    return delays


class Taps:
    """Clock times at which the emulator's side of the call handled voiced audio."""

    def __init__(self) -> None:
        self.fed: list[float] = []  # uplink: voiced chunks reaching engine.feed_audio
        self.played: list[float] = []  # downlink: voiced frames leaving ModelAudioTrack.recv()

    def install(self, emu: Emulator) -> None:
        """Wrap ``emu.new_call`` so every call it makes reports to us (instance attributes only)."""
        original: Callable[[SessionState], RtcCall] = emu.new_call

        def new_call(session: SessionState) -> RtcCall:
            call = original(session)
            self._wrap_feed(call)
            self._wrap_recv(call)
            return call

        emu.new_call = new_call  # type: ignore[method-assign]

    def _wrap_feed(self, call: RtcCall) -> None:
        feed = call.engine.feed_audio

        def feed_audio(pcm: PCM) -> None:
            if voiced(pcm):
                self.fed.append(time.perf_counter())
            feed(pcm)

        call.engine.feed_audio = feed_audio  # type: ignore[method-assign]

    def _wrap_recv(self, call: RtcCall) -> None:
        recv = call.track.recv

        async def timed_recv() -> Any:
            frame = await recv()
            if voiced(pcm_from_frame(frame)):
                self.played.append(time.perf_counter())
            return frame

        call.track.recv = timed_recv  # type: ignore[method-assign]


def microphone(turns: int) -> PCM:
    burst = tone(BURST_S, 440.0, amplitude=0.3)
    gap = np.zeros(int(GAP_S * REALTIME_RATE), dtype=np.int16)
    return np.concatenate([np.concatenate([burst, gap]) for _ in range(turns)])


def voiced_sent_times(pcm: PCM, sent_at: Sequence[float], lead_s: float) -> list[float]:
    """Clock times at which voiced microphone frames left the probe's track."""
    lead_frames = round(lead_s * 50)
    times = []
    for i, at in enumerate(sent_at):
        k = i - lead_frames
        if k >= 0 and voiced(pcm[k * _FRAME : (k + 1) * _FRAME]):
            times.append(at)
    return times


async def measure(turns: int) -> dict[str, list[float]]:
    """Speak ``turns`` bursts into one call and return the per-turn delays in seconds."""
    mic = microphone(turns)
    taps = Taps()
    async with Emulator(responder=ToneResponder(seconds=REPLY_S, frequency=880.0)) as emu:
        taps.install(emu)
        call = await open_call(emu.base_url, MAIN_KEY, audio=mic, lead_seconds=LEAD_S)
        try:
            await asyncio.sleep(LEAD_S + mic.size / REALTIME_RATE + 0.5)
        finally:
            await call.close()
    assert call.track is not None
    spoken = voiced_sent_times(mic, call.track.sent_at, LEAD_S)
    heard = [at for at, pcm in call.frames if voiced(pcm)]
    return {
        "uplink": pair_delays(onsets(spoken), onsets(taps.fed), within=0.5),
        "downlink": pair_delays(onsets(taps.played), onsets(heard), within=0.5),
        "first_audio": pair_delays(run_ends(spoken), onsets(heard), within=2.0),
    }


async def run(opts: Options) -> Report:
    turns = 4 if opts.quick else 8
    delays = await measure(turns)
    cmd = command(NAME, opts)
    labels = {
        "uplink": "Audio one-way, uplink (probe mic → emulator engine)",
        "downlink": "Audio one-way, downlink (emulator track → probe)",
        "first_audio": "Time to first audio (end of speech → first reply frame)",
    }
    return Report(
        [Row(label, median_p95(ms(delays[key])), "—", cmd) for key, label in labels.items()],
        details=[
            "Time to first audio runs from the moment the last voiced 20 ms microphone frame leaves the "
            "probe's track to the first reply frame above -40 dBFS decoded by the probe. It includes the "
            "uplink, the server VAD's 500 ms silence window (`silence_duration_ms`, counted in input audio), "
            "response creation, up to one 20 ms frame of track pacing, and the downlink. One-way figures "
            "include Opus encode/decode, RTP over loopback and aiortc's jitter buffer "
            "(4 packets of prefetch).",
        ],
    )
