"""Data-channel round trip on an idle call: client event out, the server's answer back.

This bounds how quickly any client event (``response.create``, ``session.update``…) can take
effect: SCTP over DTLS over loopback both ways, plus the engine's dispatch.
"""

from __future__ import annotations

from benchmarks._common import MAIN_KEY, Options, Pinger, Report, Row, command, median_p95, ms
from rtkit.emulator import Emulator
from tests.probe import open_call

NAME = "roundtrip"


async def run(opts: Options) -> Report:
    count = 50 if opts.quick else 200
    async with Emulator() as emu:
        call = await open_call(emu.base_url, MAIN_KEY)
        try:
            await call.wait_for("session.created")
            pinger = Pinger(call)
            for _ in range(5):  # warm-up
                await pinger.ping()
            results = [await pinger.ping() for _ in range(count)]
        finally:
            await call.close()
    times = [r for r in results if r is not None]
    value = median_p95(ms(times))
    if len(times) < count:
        value += f"; {count - len(times)} lost"
    return Report([Row(f"Data-channel round trip ({count} sequential)", value, "—", command(NAME, opts))])
