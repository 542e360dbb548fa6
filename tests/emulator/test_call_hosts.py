"""One switchboard for calls, whichever host carries them: in this process or in emulator worker processes.

The health check, the operator's listing and the faults that touch calls see a worker's call exactly as they
see one carried in-process. Real aiortc peers against a real emulator (and its worker process).
"""

from __future__ import annotations

import httpx
import pytest

from rtkit.emulator import Emulator
from tests.conftest import TEST_KEY
from tests.emulator.test_call_guard import eventually, listed
from tests.emulator.test_websocket import mint
from tests.probe import open_call

HOSTS = pytest.mark.parametrize("workers", [0, 1], ids=["in-process", "worker"])


async def health_calls(emu: Emulator) -> int:
    async with httpx.AsyncClient() as http:
        r = await http.get(f"{emu.origin}/_rtkit/health")
    r.raise_for_status()
    return int(r.json()["calls"])


@HOSTS
async def test_health_counts_every_live_call_whichever_process_carries_it(workers: int) -> None:
    async with Emulator(api_key=TEST_KEY, workers=workers) as emu:
        assert await health_calls(emu) == 0
        call = await open_call(emu.base_url, await mint(emu))
        try:
            assert await health_calls(emu) == 1
            assert await listed(emu) == {call.call_id}
        finally:
            await call.close()  # the peer hangs up on its own: the host learns it when it next looks

        async def none_left() -> bool:
            return await health_calls(emu) == 0

        assert await eventually(none_left)


@HOSTS
async def test_drop_calls_after_drops_a_call_on_either_host_and_a_later_drop_finds_nothing(workers: int) -> None:
    async with Emulator(api_key=TEST_KEY, workers=workers) as emu:
        emu.faults.drop_calls_after = 0.3
        call = await open_call(emu.base_url, await mint(emu))
        try:
            assert call.pc is not None

            async def cut() -> bool:
                return call.pc is not None and call.pc.connectionState in ("closed", "failed")

            assert await eventually(cut), call.pc.connectionState
            assert await listed(emu) == set() and await health_calls(emu) == 0
            # Dropping a call that has ended finds nothing to drop, on either host.
            assert await emu.drop_call(call.call_id) == 0
            assert await emu.drop_call() == 0
        finally:
            await call.close()
