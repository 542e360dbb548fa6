"""rtkit's ``RealtimeSession`` side by side with headless Chromium's WebRTC stack, against one emulator.

Both clients connect to the same in-process emulator in the same run, and the two figures that depend
on the client's WebRTC stack are compared:

* connect time: from the start of ``session.connect()`` (rtkit) or from just before
  ``new RTCPeerConnection()`` (Chromium, ``performance.now()`` in the page) to the ``oai-events`` data
  channel opening and to ``session.created`` arriving. Runs alternate between the two clients (the
  order flips each run), after one warm-up each. Chromium's "microphone" is a silent WebAudio
  oscillator acquired before the clock starts; rtkit sends a ``SilenceSource``; neither mints a key.
* one-way downlink audio latency, which is where the stacks differ (receive jitter buffer + Opus
  decode): a ``ToneResponder`` reply starts loud on its first frame, and the emulator emits
  ``output_audio_buffer.started`` inside ``ModelAudioTrack.recv()`` just before it hands that frame to
  the RTP sender. Each client measures, on its own clock, from the arrival of that data-channel event to
  the first decoded chunk above -40 dBFS: rtkit with ``session.events`` and ``session.output_levels``
  (20 ms frames as aiortc hands them out), Chromium with a ``MediaStreamTrackProcessor`` on the remote
  track (10 ms chunks as the audio renderer pulls them out of NetEq, while an ``<audio>`` element plays
  the stream). Same event, same threshold, same kind of clock, so the two numbers are comparable.

Cross-checks: the absolute delay from the emulator's ``recv()`` to the onset (rtkit: one
``time.monotonic`` clock; Chromium: ``performance.now()`` mapped to ``time.monotonic`` by the
tightest of a few bracketed round trips), the same onset seen by an AudioWorklet after Web Audio's
own FIFO, and Chromium's inbound-rtp ``jitterBufferDelay / jitterBufferEmittedCount``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._common import Options, Report, Row, command, fmt, markdown_table, median_p95
from rtkit.audio.meter import Level
from rtkit.audio.sources import SilenceSource
from rtkit.emulator import Emulator, ToneResponder
from rtkit.emulator.sessions import SessionState
from rtkit.emulator.webrtc import RtcCall
from rtkit.session import RealtimeSession, ReconnectPolicy
from tests.chromium import ALLOW_MICROPHONE, CHROMIUM, WEBRTC_ARGS

NAME = "session_vs_browser"
PAGE = Path(__file__).with_name("browser_probe.html")
PAGE_ROUTE = "/bench/browser-probe"
#: The tests' WebRTC flags, plus: no throttling of timers or rendering, so the page's clock keeps pace.
CHROMIUM_ARGS = [
    *WEBRTC_ARGS,
    ALLOW_MICROPHONE,
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
]
VOICED_DBFS = -40.0
REPLY_S = 0.3
#: After ``output_audio_buffer.stopped``: let the tail drain through the jitter buffer before the next turn.
GAP_S = 0.25
#: Before the first turn: let the receive path settle (NetEq adapts its target delay from the first packets).
SETTLE_S = 1.0
#: An onset later than this after its start event is not that reply's.
PAIR_WITHIN_S = 0.5
CONNECT_TARGET = 1.5
#: Connect steps both clients time, in order (ms from the start of the connect).
STEPS = ("offer", "answer", "connected", "channel_open", "session_created")
DOWNLINK_TARGET = 1.25


class StartTaps:
    """``time.monotonic()`` at which the emulator's track handed out the first frame of each response."""

    def __init__(self) -> None:
        self.started: dict[str, float] = {}

    def install(self, emu: Emulator) -> None:
        original: Callable[[SessionState], RtcCall] = emu.new_call

        def new_call(session: SessionState) -> RtcCall:
            call = original(session)
            on_started = call.track.on_started

            def started(response_id: str) -> None:
                self.started[response_id] = time.monotonic()
                on_started(response_id)

            call.track.on_started = started
            return call

        emu.new_call = new_call  # type: ignore[method-assign]


def first_after(start: float, times: Sequence[float], within: float) -> float | None:
    later = [t - start for t in times if 0 <= t - start <= within]
    return min(later) if later else None


def receiver_prefetch(session: RealtimeSession) -> int | None:
    """Packets aiortc's audio jitter buffer holds before releasing a frame (a private attribute: best effort)."""
    pc = getattr(session.transport, "_pc", None)
    for transceiver in pc.getTransceivers() if pc is not None else []:
        buffer = getattr(transceiver.receiver, "_RTCRtpReceiver__jitter_buffer", None)
        if transceiver.kind == "audio" and buffer is not None:
            return int(getattr(buffer, "_prefetch", 0))
    return None


def ratio(ours: Sequence[float], theirs: Sequence[float], target: float) -> str:
    if not ours or not theirs:
        return "no samples"
    value = float(np.median(ours)) / float(np.median(theirs))
    verdict = "meets target" if value <= target else "misses target"
    return f"{value:.2f}× ({verdict})"


# -- rtkit ---------------------------------------------------------------------------------------
def new_session(emu: Emulator) -> RealtimeSession:
    return RealtimeSession(
        emu.api_key,
        base_url=emu.base_url,
        source=SilenceSource(),
        transport="webrtc",
        reconnect=ReconnectPolicy(max_attempts=0),
    )


async def hang_up(emu: Emulator, call_id: str | None) -> None:
    """Close the emulator's end too, so no call keeps sending frames into the next measurement."""
    call = emu.calls.get(call_id or "")
    if call is not None:
        await call.close()


async def rtkit_connect(emu: Emulator) -> dict[str, float]:
    session = new_session(emu)
    try:
        await session.connect()
        record = session.metrics.connects[0]
        steps = {
            "offer": record.offer_ms,
            "answer": record.answer_ms,
            "connected": record.connected_ms,
            "channel_open": record.channel_open_ms,
            "session_created": record.session_created_ms,
        }
        return {key: float(value) for key, value in steps.items() if value is not None}
    finally:
        call_id = getattr(session.transport, "call_id", None)
        await session.close()
        await hang_up(emu, call_id)


async def rtkit_downlink(emu: Emulator, taps: StartTaps, turns: int) -> dict[str, Any]:
    """Per reply, in ms: started-event arrival → onset, and emulator ``recv()`` → onset."""
    session = new_session(emu)
    arrivals: dict[str, float] = {}
    loud: list[float] = []

    def on_event(event: dict[str, Any]) -> None:
        if event.get("type") == "output_audio_buffer.started":
            arrivals.setdefault(str(event.get("response_id")), time.monotonic())

    def on_level(level: Level) -> None:
        if level.rms_dbfs > VOICED_DBFS:
            loud.append(level.t)

    session.events.on(on_event)
    session.output_levels.on(on_level)
    try:
        await session.connect()
        prefetch = receiver_prefetch(session)
        await asyncio.sleep(SETTLE_S)
        for _ in range(turns):
            session.create_response()
            await session.wait_for("output_audio_buffer.stopped", timeout=5.0)
            await asyncio.sleep(GAP_S)
    finally:
        call_id = getattr(session.transport, "call_id", None)
        await session.close()
        await hang_up(emu, call_id)
    relative, absolute = [], []
    for rid, arrived in arrivals.items():
        rel = first_after(arrived, loud, PAIR_WITHIN_S)
        if rel is not None:
            relative.append(rel * 1000)
        if rid in taps.started:
            ab = first_after(taps.started[rid], loud, PAIR_WITHIN_S)
            if ab is not None:
                absolute.append(ab * 1000)
    return {"relative": relative, "absolute": absolute, "prefetch": prefetch}


# -- Chromium ------------------------------------------------------------------------------------
async def browser_connect(page: Any, emu: Emulator) -> dict[str, float]:
    marks: dict[str, Any] = await page.evaluate(
        "(o) => connect(o)", {"baseUrl": emu.base_url, "key": emu.api_key, "taps": False}
    )
    await page.evaluate("() => hangUp()")
    await hang_up(emu, str(marks["callId"]))
    return {key: float(marks[key]) for key in STEPS if key in marks}


async def clock_offset(page: Any, samples: int = 12) -> tuple[float, float]:
    """``time.monotonic() - performance.now()/1000`` from the tightest bracketed round trip, and its ± (s)."""
    best: tuple[float, float] | None = None
    for _ in range(samples):
        before = time.monotonic()
        now_ms = float(await page.evaluate("() => performance.now()"))
        after = time.monotonic()
        half = (after - before) / 2
        if best is None or half < best[1]:
            best = (before + half - now_ms / 1000, half)
    assert best is not None
    return best


async def browser_downlink(page: Any, emu: Emulator, taps: StartTaps, turns: int) -> dict[str, Any]:
    marks: dict[str, Any] = await page.evaluate(
        "(o) => connect(o)", {"baseUrl": emu.base_url, "key": emu.api_key, "taps": True}
    )
    try:
        await asyncio.sleep(SETTLE_S)
        for _ in range(turns):
            await asyncio.wait_for(page.evaluate("() => respond()"), 5.0)
            await asyncio.sleep(GAP_S)
        result: dict[str, Any] = await page.evaluate("() => results()")
        offset, uncertainty = await clock_offset(page)
    finally:
        await page.evaluate("() => hangUp()")
        await hang_up(emu, str(marks["callId"]))
    onsets = [float(t) for t in result["onsets"]]
    relative, absolute = [], []
    for started in result["started"]:
        rel = first_after(float(started["t"]), onsets, PAIR_WITHIN_S * 1000)
        if rel is not None:
            relative.append(rel)
        at = taps.started.get(str(started["id"]))
        if at is not None:
            ab = first_after((at - offset) * 1000, onsets, PAIR_WITHIN_S * 1000)
            if ab is not None:
                absolute.append(ab)
    inbound = result.get("inbound") or {}
    emitted = float(inbound.get("jitterBufferEmittedCount") or 0)

    def per_sample(key: str) -> float:
        return 1000 * float(inbound.get(key) or 0) / emitted if emitted else float("nan")

    return {
        "relative": relative,
        "absolute": absolute,
        "worklet": [float(w["ms"]) for w in result["worklet"]],
        "jitter_ms": per_sample("jitterBufferDelay"),
        "target_ms": per_sample("jitterBufferTargetDelay"),
        "minimum_ms": per_sample("jitterBufferMinimumDelay"),
        "inbound": inbound,
        "chunk_ms": result.get("chunkMs"),
        "clock_pm_ms": uncertainty * 1000,
        "errors": result.get("errors") or [],
    }


async def serve_page(emu: Emulator) -> None:
    from starlette.requests import Request
    from starlette.responses import HTMLResponse
    from starlette.routing import Route

    html = PAGE.read_text()

    async def page(request: Request) -> HTMLResponse:
        return HTMLResponse(html)

    emu.app.router.routes.append(Route(PAGE_ROUTE, page))


def skipped(opts: Options) -> Report | None:
    if not CHROMIUM.exists():
        why = f"needs Debian's chromium at {CHROMIUM} (apt-get install chromium)"
    else:
        try:
            import playwright.async_api  # noqa: F401
        except ImportError:
            why = "needs playwright (pip install -e '.[dev]'; the browser is Debian's, never downloaded)"
        else:
            return None
    return Report([Row(f"{NAME}: skipped", why, "—", command(NAME, opts))])


async def run(opts: Options) -> Report:
    if (skip := skipped(opts)) is not None:
        return skip
    from playwright.async_api import async_playwright

    runs = 4 if opts.quick else 8
    turns = 5 if opts.quick else 10
    taps = StartTaps()
    connects: dict[str, list[dict[str, float]]] = {"rtkit": [], "chromium": []}
    async with Emulator(responder=ToneResponder(seconds=REPLY_S, frequency=880.0)) as emu:
        taps.install(emu)
        await serve_page(emu)
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page()
                await page.goto(f"{emu.origin}{PAGE_ROUTE}")
                info: dict[str, Any] = await page.evaluate("() => prepare()")
                for i in range(runs + 1):  # run 0 warms both up and is not counted
                    order = ("rtkit", "chromium") if i % 2 == 0 else ("chromium", "rtkit")
                    for who in order:
                        timing = await (rtkit_connect(emu) if who == "rtkit" else browser_connect(page, emu))
                        if i:
                            connects[who].append(timing)
                ours = await rtkit_downlink(emu, taps, turns)
                theirs = await browser_downlink(page, emu, taps, turns)
            finally:
                with contextlib.suppress(Exception):
                    await browser.close()
        for call in list(emu.calls.values()):
            await call.close()
    return report(opts, connects, ours, theirs, info)


def report(
    opts: Options,
    connects: dict[str, list[dict[str, float]]],
    ours: dict[str, Any],
    theirs: dict[str, Any],
    info: dict[str, Any],
) -> Report:
    cmd = command(NAME, opts)
    rows: list[Row] = []

    def step(key: str) -> tuple[list[float], list[float]]:
        return [t[key] for t in connects["rtkit"] if key in t], [t[key] for t in connects["chromium"] if key in t]

    for key, label in (("channel_open", "data channel open"), ("session_created", "session.created")):
        mine, chrome = step(key)
        rows += [
            Row(f"Connect → {label}: rtkit session", median_p95(mine), "—", cmd),
            Row(f"Connect → {label}: headless Chromium", median_p95(chrome), "—", cmd),
            Row(
                f"Connect → {label}: rtkit / Chromium (medians)",
                ratio(mine, chrome, CONNECT_TARGET),
                f"≤ {CONNECT_TARGET:g}×",
                cmd,
            ),
        ]
    rows += [
        Row("Downlink one-way (started event → onset): rtkit session", median_p95(ours["relative"]), "—", cmd),
        Row("Downlink one-way (started event → onset): headless Chromium", median_p95(theirs["relative"]), "—", cmd),
        Row(
            "Downlink one-way: rtkit / Chromium (medians)",
            ratio(ours["relative"], theirs["relative"], DOWNLINK_TARGET),
            f"≤ {DOWNLINK_TARGET:g}×",
            cmd,
        ),
        Row("Cross-check, emulator recv() → onset: rtkit session", median_p95(ours["absolute"]), "—", cmd),
        Row(
            "Cross-check, emulator recv() → onset: Chromium (calibrated clocks)",
            median_p95(theirs["absolute"]) + f", clocks ±{fmt(theirs['clock_pm_ms'])} ms",
            "—",
            cmd,
        ),
        Row(
            "Cross-check, started event → onset: Chromium AudioWorklet (after Web Audio's FIFO)",
            median_p95(theirs["worklet"]),
            "—",
            cmd,
        ),
        Row(
            "Chromium NetEq jitter buffer, average delay (target / minimum)",
            f"{fmt(theirs['jitter_ms'])} ms ({fmt(theirs['target_ms'])} / {fmt(theirs['minimum_ms'])} ms)",
            "—",
            cmd,
        ),
    ]
    steps = [
        [who, *(fmt(float(np.median(v))) if (v := [t[k] for t in connects[key] if k in t]) else "—" for k in STEPS)]
        for who, key in (("rtkit session", "rtkit"), ("headless Chromium", "chromium"))
    ]
    inbound = theirs["inbound"]
    prefetch = ours.get("prefetch")
    held = f"{prefetch} packets, {20 * prefetch} ms" if isinstance(prefetch, int) else "unknown"
    details = [
        f"**{NAME}**, connect steps (median ms from the start of the connect; rtkit's from `session.metrics`, "
        "Chromium's from `performance.now()` in the page):",
        "",
        *markdown_table(["client", "offer", "SDP answer", "ICE connected", "channel open", "session.created"], steps),
        "",
        f"Chromium: {info.get('userAgent', '?')}; inbound-rtp {inbound.get('packetsReceived')} packets, "
        f"{inbound.get('packetsLost')} lost, {inbound.get('concealedSamples')} concealed samples; its onset tap "
        f"sees {fmt(float(theirs['chunk_ms'] or 0))} ms chunks, rtkit's sees 20 ms frames. rtkit's audio "
        f"receiver holds {held} (aiortc `JitterBuffer` prefetch; a frame is released when that many later "
        "packets have arrived).",
        "Downlink one-way runs from the arrival of `output_audio_buffer.started` on the data channel (the emulator "
        "sends it as its track hands out the reply's first frame) to the first decoded chunk above -40 dBFS, each on "
        "its client's own clock: RTP on loopback, jitter buffer, Opus decode, hand-off to the application. Both "
        "clients also carry the emulator's send side (Opus encode of the 48 kHz frame, which aiortc's encoder FIFO "
        "passes straight through), so neither figure reaches zero.",
    ]
    if theirs["errors"]:
        details.append("Page errors: " + "; ".join(str(e) for e in theirs["errors"])[:500])
    return Report(rows, details)
