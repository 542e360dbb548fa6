"""The caller side of the capacity benchmark, run in worker processes.

Callers get processes of their own, apart from the orchestrating benchmark process, because in one
process they become the bottleneck before the emulator does (aiortc encodes, decodes and paces
every call under one GIL). Workers open their share of calls, meet at a barrier so every worker's
measurement window starts together, measure, and send back plain numbers.
"""

from __future__ import annotations

import asyncio
import time
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from typing import Any

import httpx
import numpy as np

from benchmarks._common import MAIN_KEY, Pinger
from rtkit._process import exit_with_parent
from rtkit.audio.pcm import PCM, tone
from tests.probe import ProbeCall, open_call

FPS = 50
TONE_SECONDS = 20.0
#: Listen only: no turn detection (no replies, no barge-in), transcription on so commits report durations.
LISTEN_SESSION = {
    "type": "realtime",
    "model": "gpt-realtime",
    "audio": {"input": {"turn_detection": None, "transcription": {"model": "whisper-1"}}},
}
OPEN_BATCH = 5
#: Stop opening more calls after this long: the run must stay bounded even when the machine is swamped.
OPEN_BUDGET_S = 30.0
SETTLE_S = 1.0
BARRIER_TIMEOUT_S = 90.0
PING_TIMEOUT_S = 2.0
HANGUP_TIMEOUT_S = 10.0


async def _mint(http: httpx.AsyncClient, base_url: str) -> str:
    response = await http.post(
        f"{base_url}/realtime/client_secrets",
        headers={"Authorization": f"Bearer {MAIN_KEY}"},
        json={"session": LISTEN_SESSION},
    )
    response.raise_for_status()
    return str(response.json()["value"])


async def _open_one(http: httpx.AsyncClient, base_url: str, mic: PCM) -> ProbeCall:
    call = await open_call(base_url, await _mint(http, base_url), audio=mic, timeout=10.0)
    await call.wait_for("session.created", timeout=10.0)
    return call


async def open_calls(base_url: str, count: int, mic: PCM) -> tuple[list[ProbeCall], list[str]]:
    """Open ``count`` listening calls a few at a time (as a class joining would): (calls, errors)."""
    calls: list[ProbeCall] = []
    errors: list[str] = []
    deadline = time.monotonic() + OPEN_BUDGET_S
    async with httpx.AsyncClient(timeout=10.0) as http:
        for start in range(0, count, OPEN_BATCH):
            if time.monotonic() > deadline:
                errors.append(f"gave up opening after {OPEN_BUDGET_S:g} s with {len(calls)} open")
                break
            batch = range(min(OPEN_BATCH, count - start))
            opening = [_open_one(http, base_url, mic) for _ in batch]
            results = await asyncio.gather(*opening, return_exceptions=True)
            calls.extend(r for r in results if isinstance(r, ProbeCall))
            errors.extend(f"{type(r).__name__}: {r}" for r in results if isinstance(r, BaseException))
    return calls, errors


async def _ping_loop(pingers: list[Pinger], until: float, out: dict[str, Any]) -> None:
    """Round trips one after another, round-robin over the calls, until the window closes."""
    n = 0
    while time.perf_counter() < until and pingers:
        rtt = await pingers[n % len(pingers)].ping(timeout=PING_TIMEOUT_S)
        if rtt is None:
            out["lost_pings"] += 1
        else:
            out["rtts"].append(rtt)
        n += 1
        await asyncio.sleep(0.05)


async def _emulator_rx(calls: list[ProbeCall], seconds: float) -> list[float]:
    """Frames/s each call's engine received between our clear and commit (see capacity's docstring)."""
    kind = "conversation.item.input_audio_transcription.completed"
    results = await asyncio.gather(*(c.wait_for(kind, timeout=15.0) for c in calls), return_exceptions=True)
    return [r["usage"]["seconds"] * FPS / seconds for r in results if isinstance(r, dict)]


async def _rtp_received(call: ProbeCall) -> int:
    """RTP packets this call has received so far (aiortc's inbound-rtp stats).

    Next to decoded frames it tells where audio went missing: packets that never arrived were not
    sent in time by the emulator; packets that arrived but were not decoded were lost on our side.
    """
    assert call.pc is not None
    total = 0
    for receiver in call.pc.getReceivers():
        for stats in (await receiver.getStats()).values():
            if getattr(stats, "type", "") == "inbound-rtp":
                total += int(stats.packetsReceived)
    return total


async def _rtp_counts(calls: list[ProbeCall]) -> list[int]:
    return list(await asyncio.gather(*(_rtp_received(c) for c in calls)))


def _caller_rates(calls: list[ProbeCall], t0: float, t1: float, out: dict[str, Any]) -> None:
    span = t1 - t0
    for call in calls:
        arrivals = [at for at, _ in call.frames if t0 <= at < t1]
        out["caller_rx"].append(len(arrivals) / span)
        assert call.track is not None
        out["caller_tx"].append(sum(1 for at in call.track.sent_at if t0 <= at < t1) / span)
        if len(arrivals) > 1:
            out["max_gap_ms"] = max(out["max_gap_ms"], float(np.max(np.diff(arrivals))) * 1000)


async def measure_window(calls: list[ProbeCall], window: float) -> dict[str, Any]:
    """Clear, stream for ``window`` seconds while pinging, commit; return what was seen."""
    out: dict[str, Any] = {"caller_rx": [], "caller_tx": [], "max_gap_ms": 0.0, "rtts": [], "lost_pings": 0}
    for call in calls:
        call.send({"type": "input_audio_buffer.clear"})
    t0 = time.perf_counter()
    rtp_before = await _rtp_counts(calls)
    await _ping_loop([Pinger(c) for c in calls], t0 + window, out)
    await asyncio.sleep(max(0.0, t0 + window - time.perf_counter()))
    for call in calls:
        call.send({"type": "input_audio_buffer.commit"})
    t1 = time.perf_counter()
    rtp_after = await _rtp_counts(calls)
    out["caller_rtp"] = [(b - a) / (t1 - t0) for a, b in zip(rtp_before, rtp_after, strict=True)]
    _caller_rates(calls, t0, t1, out)
    out["emulator_rx"] = await _emulator_rx(calls, t1 - t0)
    return out


async def callers(base_url: str, count: int, window: float, barrier: Barrier) -> dict[str, Any]:
    """One worker's whole job: open, wait for the others, measure, hang up."""
    mic = tone(TONE_SECONDS, 440.0, amplitude=0.05)
    started = time.perf_counter()
    calls, errors = await open_calls(base_url, count, mic)
    setup_s = time.perf_counter() - started
    try:
        await asyncio.sleep(SETTLE_S)
        await asyncio.to_thread(barrier.wait, BARRIER_TIMEOUT_S)
        out = await measure_window(calls, window) if calls else {}
    finally:
        closing = asyncio.gather(*(c.close() for c in calls), return_exceptions=True)
        try:  # bounded, so that what was measured still gets back to the benchmark
            await asyncio.wait_for(closing, HANGUP_TIMEOUT_S)
        except TimeoutError:
            errors.insert(0, f"hanging up took longer than {HANGUP_TIMEOUT_S:g} s")
    return {**out, "opened": len(calls), "setup_s": setup_s, "errors": errors[:3]}


def worker_entry(base_url: str, count: int, window: float, barrier: Barrier, results: Queue[Any]) -> None:
    """Process target: never raises, always answers (and breaks the barrier so nobody waits forever)."""
    exit_with_parent(1)  # orphaned callers would keep streaming audio and load the next run's machine
    try:
        result = asyncio.run(callers(base_url, count, window, barrier))
    except BaseException as exc:
        barrier.abort()
        result = {"errors": [f"{type(exc).__name__}: {exc}"], "opened": 0}
    results.put(result)
