"""How long a live ``RealtimeSession`` takes to notice that its connection is gone, per transport and cause.

The emulator runs as a child process (``rtkit emulator``), so it can die the way a server or a network does:
``kill`` is SIGKILL (the kernel closes its sockets: the WebSocket sees a reset, WebRTC sees nothing at all,
since UDP has no connection to reset); ``silent`` is the emulator's admin drop with ``{"silent": true}``, which
stops a WebRTC call's packets without telling the peer (WebSocket sessions have no such drop); ``freeze`` is
SIGSTOP, a server that hangs with its sockets open (TCP still acknowledges, nothing answers). The time runs
from the cause to the session's ``disconnected`` state. The bounds it checks: WebRTC ``QUIET_S +
disconnect_grace`` (1 + 3 s, polled every 0.25 s), the WebSocket ``PING_INTERVAL_S + disconnect_grace +
CLOSE_TIMEOUT_S`` (2 + 3 + 1 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time

import httpx
import numpy as np

from benchmarks._common import MAIN_KEY, Options, Report, Row, command, fmt
from benchmarks.capacity import EmulatorProcess, start_emulator
from rtkit.session import RealtimeSession, ReconnectPolicy
from rtkit.transports.webrtc import POLL_S, QUIET_S, WebRTCTransport
from rtkit.transports.websocket import CLOSE_TIMEOUT_S, PING_INTERVAL_S

NAME = "drop_detection"
GRACE_S = 3.0
CASES = [("webrtc", "kill"), ("webrtc", "silent"), ("webrtc", "freeze"), ("websocket", "kill"), ("websocket", "freeze")]


async def _cause(emu: EmulatorProcess, session: RealtimeSession, case: str) -> None:
    if case == "kill":
        os.killpg(emu.proc.pid, signal.SIGKILL)
    elif case == "freeze":
        os.killpg(emu.proc.pid, signal.SIGSTOP)
    else:
        assert isinstance(session.transport, WebRTCTransport)
        async with httpx.AsyncClient() as http:
            r = await http.post(
                f"{emu.origin}/_rtkit/calls/{session.transport.call_id}/drop",
                json={"silent": True},
                headers={"X-Rtkit-Admin-Token": emu.admin_token},
            )
            r.raise_for_status()


async def _once(transport: str, case: str) -> float:
    emu = await start_emulator()
    session = RealtimeSession(
        MAIN_KEY,
        base_url=emu.base_url,
        transport=transport,  # type: ignore[arg-type]
        reconnect=ReconnectPolicy(max_attempts=0),
        disconnect_grace=GRACE_S,
    )
    try:
        await session.connect()
        await asyncio.sleep(1.0)  # a settled call: packets flowing, a few keepalive pings answered
        lost = asyncio.ensure_future(session.wait_for_state("disconnected", "failed", timeout=60))
        started = time.perf_counter()
        await _cause(emu, session, case)
        await lost
        return time.perf_counter() - started
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(emu.proc.pid, signal.SIGKILL)  # a frozen server does not act on SIGTERM
        await session.close()
        await emu.stop()


async def run(opts: Options) -> Report:
    runs = 2 if opts.quick else 4
    rows, details = [], ["drop_detection: seconds from the cause to the session's `disconnected`, every run:", ""]
    bounds = {"webrtc": QUIET_S + GRACE_S + POLL_S, "websocket": PING_INTERVAL_S + GRACE_S + CLOSE_TIMEOUT_S}
    for transport, case in CASES:
        took = [await _once(transport, case) for _ in range(runs)]
        ms = np.asarray(took) * 1000
        rows.append(
            Row(
                f"Drop noticed: {transport}, {case}",
                f"{fmt(float(np.median(ms)))} / {fmt(float(ms.max()))} ms (median / max, n={runs})",
                f"≤ {bounds[transport]:g} s",
                command(NAME, opts),
            )
        )
        details.append(f"- {transport} {case}: " + ", ".join(f"{t:.2f}" for t in took))
    return Report(rows, details)
