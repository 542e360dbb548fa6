"""Calls cannot leak and keys cannot cross: the emulator's bounds on WebRTC calls, and who may act on one.

Real aiortc peers against a real emulator (and its worker processes); a peer "vanishes" by stopping its ICE
transport without a word, as ``RtcCall.drop(silent=True)`` does on the emulator's side.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable

import httpx
import psutil
import pytest
import websockets
from aiortc import RTCPeerConnection

from rtkit.emulator import Emulator
from tests.conftest import TEST_KEY
from tests.emulator.test_calls import offer, post_offer
from tests.emulator.test_websocket import mint
from tests.probe import open_call

#: Far above every bound the tests set, far below the ~30 s ICE consent freshness takes to give up.
DEADLINE = 15.0


async def eventually(check: Callable[[], Awaitable[bool]], within: float = DEADLINE) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.1)
    return await check()


async def listed(emu: Emulator) -> set[str]:
    """The call ids the operator's listing shows (workers' calls included)."""
    async with httpx.AsyncClient() as http:
        r = await http.get(f"{emu.origin}/_rtkit/calls", headers={"X-Rtkit-Admin-Token": emu.admin_token})
    r.raise_for_status()
    return {c["id"] for c in r.json()["calls"]}


def udp_sockets(processes: list[psutil.Process]) -> int:
    return sum(len(p.net_connections(kind="udp")) for p in processes)


def without_candidates(sdp: str) -> str:
    """The offer of a peer nobody can reach: no ``a=candidate`` lines, nothing to check connectivity with."""
    kept = [line for line in sdp.splitlines() if not line.startswith(("a=candidate", "a=end-of-candidates"))]
    return "\r\n".join(kept) + "\r\n"


async def vanish(pc: RTCPeerConnection) -> None:
    """Stop sending anything at all, without telling the other side: a lost network, not a hang-up."""
    transports = {t.sender.transport.transport for t in pc.getTransceivers()}
    if pc.sctp is not None:
        transports.add(pc.sctp.transport.transport)
    for ice in transports:
        await ice.stop()


@pytest.mark.parametrize("workers", [0, 1], ids=["in-process", "worker"])
async def test_a_call_that_never_connects_is_closed_and_its_udp_socket_freed(workers: int) -> None:
    async with Emulator(api_key=TEST_KEY, workers=workers, call_connect_timeout=1.0) as emu:
        # The process whose socket the call holds: this one, or the emulator's worker.
        holders = psutil.Process().children() if workers else [psutil.Process()]
        pc = await offer()
        try:
            before = udp_sockets(holders)
            r = await post_offer(emu, without_candidates(pc.localDescription.sdp), key=await mint(emu))
            assert r.status_code == 201, r.text
            call_id = r.headers["location"].rsplit("/", 1)[-1]
            assert await listed(emu) == {call_id}
            if not workers:
                assert udp_sockets(holders) > before, "the answer should hold a UDP socket of its own"

            async def freed() -> bool:
                return not await listed(emu) and udp_sockets(holders) <= before

            assert await eventually(freed), (await listed(emu), udp_sockets(holders), before)
        finally:
            await pc.close()


async def test_a_peer_that_vanishes_silently_loses_its_call_within_the_peer_bound() -> None:
    async with Emulator(api_key=TEST_KEY, call_peer_timeout=1.0) as emu:
        call = await open_call(emu.base_url, TEST_KEY)
        try:
            assert call.pc is not None and emu.calls[call.call_id].state == "connected"
            await vanish(call.pc)

            async def gone() -> bool:
                return call.call_id not in emu.calls

            assert await eventually(gone), "the emulator kept a call whose peer went silent"
        finally:
            await call.close()


async def test_an_idle_peer_and_a_peer_that_stopped_its_audio_keep_their_calls() -> None:
    """Silence on the track is still packets; a sender with no track at all (a browser's ``replaceTrack(null)``)
    sends no RTP, yet keeps reporting on the audio it receives: neither peer has gone."""
    bound = 3.0  # above aiortc's 1.5 s longest pause between RTCP reports, plus one watchdog poll
    async with Emulator(api_key=TEST_KEY, call_peer_timeout=bound) as emu:
        idle = await open_call(emu.base_url, TEST_KEY)  # the probe's track sends silence, in real time
        muted = await open_call(emu.base_url, TEST_KEY)
        try:
            assert muted.pc is not None
            muted.pc.getSenders()[0].replaceTrack(None)
            await asyncio.sleep(0.5)  # frames already on their way
            rtp_before = await inbound_rtp(emu, muted.call_id)
            await asyncio.sleep(bound * 2.5)
            assert idle.call_id in emu.calls and emu.calls[idle.call_id].state == "connected"
            assert muted.call_id in emu.calls and emu.calls[muted.call_id].state == "connected"
            assert await inbound_rtp(emu, idle.call_id) > bound * 50, "the idle peer sent no audio"
            assert await inbound_rtp(emu, muted.call_id) == rtp_before, "the muted peer still sent audio"
        finally:
            await idle.close()
            await muted.close()


async def inbound_rtp(emu: Emulator, call_id: str) -> int:
    stats = await emu.calls[call_id].pc.getStats()
    return sum(s.packetsReceived for s in stats.values() if s.type == "inbound-rtp")


@pytest.mark.parametrize("workers", [0, 1], ids=["in-process", "worker"])
async def test_only_the_key_that_opened_a_call_or_the_main_key_may_hang_it_up_or_join_it(workers: int) -> None:
    async with Emulator(api_key=TEST_KEY, workers=workers) as emu, httpx.AsyncClient() as http:
        key_a, key_b = await mint(emu), await mint(emu)
        first = await open_call(emu.base_url, key_a)
        second = await open_call(emu.base_url, key_a)

        async def hang_up(call_id: str, key: str) -> httpx.Response:
            return await http.post(
                f"{emu.base_url}/realtime/calls/{call_id}/hangup", headers={"Authorization": f"Bearer {key}"}
            )

        async def join(call_id: str, key: str) -> str:
            async with websockets.connect(
                f"{emu.websocket_url}/realtime?call_id={call_id}", additional_headers={"Authorization": f"Bearer {key}"}
            ) as ws:
                return str(json.loads(await ws.recv())["type"])

        async def refusals(call_id: str) -> tuple[int, str, int, str]:
            """What key B hears from hangup and from the sideband upgrade, the call id masked."""
            refused = await hang_up(call_id, key_b)
            with pytest.raises(websockets.InvalidStatus) as denied:
                await join(call_id, key_b)
            upgrade = denied.value.response
            hangup_text, upgrade_text = (
                text.replace(call_id, "<id>") for text in (refused.text, upgrade.body.decode())
            )
            return refused.status_code, hangup_text, upgrade.status_code, upgrade_text

        try:
            # Key B is told of another session's call exactly what it is told of a call that does not exist.
            theirs, unknown = await refusals(first.call_id), await refusals("rtc_unknown")
            assert theirs == unknown
            hangup_status, hangup_body, upgrade_status, upgrade_body = theirs
            assert hangup_status == upgrade_status == 404
            assert (
                json.loads(hangup_body)["error"]["code"]
                == json.loads(upgrade_body)["error"]["code"]
                == "call_not_found"
            )
            assert await listed(emu) == {first.call_id, second.call_id}, "key B's attempts changed nothing"

            assert await join(first.call_id, key_a) == "session.updated"
            assert await join(first.call_id, TEST_KEY) == "session.updated"
            assert (await hang_up(first.call_id, key_a)).status_code == 200
            assert (await hang_up(second.call_id, TEST_KEY)).status_code == 200

            async def ended() -> bool:
                return not await listed(emu)

            assert await eventually(ended)
        finally:
            await first.close()
            await second.close()
