"""Call setup: from the start of the SDP exchange to ICE connected and to the data channel open.

``open_call`` times everything from just before it builds its offer; the answer ``POST`` starts a
few milliseconds later, so the figures include offer creation (gathering loopback candidates). The
data channel opening is what an application waits for before it may send its first event.
"""

from __future__ import annotations

from benchmarks._common import MAIN_KEY, Options, Report, Row, command, median_p95, ms
from rtkit.emulator import Emulator
from tests.probe import open_call

NAME = "connect"


async def _setup_timings(base_url: str, count: int) -> list[dict[str, float]]:
    timings = []
    for _ in range(count):
        call = await open_call(base_url, MAIN_KEY, timeout=10.0)
        try:
            timings.append(dict(call.timings))
        finally:
            await call.close()
    return timings


async def run(opts: Options) -> Report:
    count = 5 if opts.quick else 10
    async with Emulator() as emu:
        await _setup_timings(emu.base_url, 1)  # warm-up: imports, codec tables, first TLS context
        timings = await _setup_timings(emu.base_url, count)
    cmd = command(NAME, opts)
    return Report(
        [
            Row("Call setup: offer → SDP answer", median_p95(ms([t["answer"] for t in timings])), "—", cmd),
            Row(
                "Call setup: offer → ICE connected",
                median_p95(ms([t["connected"] for t in timings if "connected" in t])),
                "—",
                cmd,
            ),
            Row(
                "Call setup: offer → data channel open",
                median_p95(ms([t["channel_open"] for t in timings])),
                "≤ 150 ms median",
                cmd,
            ),
        ]
    )
