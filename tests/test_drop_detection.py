"""A silent drop is noticed on its own: the server stops sending without a word, and the session says so within
its grace period rather than after ICE consent (about 30 s) or TCP (minutes)."""

from __future__ import annotations

import asyncio
import time

from rtkit.emulator import Emulator
from rtkit.session import RealtimeSession, ReconnectPolicy
from tests.conftest import TEST_KEY


async def test_a_webrtc_call_whose_packets_stop_is_lost_after_the_grace_period(emulator: Emulator) -> None:
    session = RealtimeSession(
        TEST_KEY,
        base_url=emulator.base_url,
        transport="webrtc",
        reconnect=ReconnectPolicy(max_attempts=0),
        disconnect_grace=1.0,
    )
    async with session:
        await asyncio.sleep(0.5)
        lost = asyncio.ensure_future(session.wait_for_state("disconnected", timeout=20))
        started = time.monotonic()
        assert await emulator.drop_call(silent=True) == 1
        change = await lost
        took = time.monotonic() - started
    assert change.error is not None and change.error.code == "network_lost", change
    assert "Nothing arrived from the server" in (change.reason or ""), change
    # 1 s of quiet, then the 1 s grace: generous bounds, the benchmark has the numbers.
    assert 1.5 < took < 8.0, took
