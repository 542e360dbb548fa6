"""WebRTC calls: POST /v1/realtime/calls with real aiortc peers, the SDK's multipart form, and call control."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import numpy as np
import pytest
import websockets
from aiortc import RTCPeerConnection, RTCSessionDescription
from openai import AsyncOpenAI

from rtkit._ice import loopback_candidates, rtc_configuration
from rtkit.audio.pcm import PCM, REALTIME_RATE, level_dbfs, tone
from rtkit.emulator import Emulator
from tests.conftest import TEST_KEY
from tests.emulator.test_websocket import mint
from tests.probe import PcmTrack, ProbeCall, open_call


async def offer() -> RTCPeerConnection:
    pc = RTCPeerConnection(rtc_configuration())
    pc.addTrack(PcmTrack())
    pc.createDataChannel("oai-events")
    with loopback_candidates():
        await pc.setLocalDescription(await pc.createOffer())
    return pc


async def post_offer(emu: Emulator, sdp: str, key: str = TEST_KEY, ctype: str = "application/sdp") -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.post(
            f"{emu.base_url}/realtime/calls",
            content=sdp,
            headers={"Authorization": f"Bearer {key}", "Content-Type": ctype},
        )


async def test_sdk_calls_create_sends_multipart_and_gets_a_working_answer(emulator: Emulator) -> None:
    pc = await offer()
    opened = asyncio.Event()
    client = AsyncOpenAI(base_url=emulator.base_url, api_key=TEST_KEY, max_retries=0)
    answer = await client.realtime.calls.create(
        sdp=pc.localDescription.sdp,
        session={"type": "realtime", "model": "gpt-realtime", "instructions": "Speak like a pirate."},
    )
    call_id = answer.response.headers["location"].rsplit("/", 1)[-1]
    assert answer.response.status_code == 201
    assert answer.response.headers["content-type"].startswith("application/sdp")
    assert call_id.startswith("rtc_") and call_id in emulator.calls
    assert emulator.calls[call_id].engine.session.instructions == "Speak like a pirate."
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer.text, type="answer"))

    @pc.on("connectionstatechange")
    def _state() -> None:
        if pc.connectionState == "connected":
            opened.set()

    await asyncio.wait_for(opened.wait(), 10)
    await pc.close()


async def test_answer_carries_our_audio_track_in_a_stream_and_loopback_candidates(emulator: Emulator) -> None:
    pc = await offer()
    r = await post_offer(emulator, pc.localDescription.sdp, key=await mint(emulator))
    await pc.close()
    assert r.status_code == 201
    assert r.headers["location"].startswith("/v1/realtime/calls/rtc_")
    sdp = r.text
    assert "a=msid:" in sdp and "a=sendrecv" in sdp and "opus/48000/2" in sdp
    candidates = [line for line in sdp.splitlines() if line.startswith("a=candidate")]
    assert candidates and all(" 127.0.0.1 " in c for c in candidates)


async def test_a_spoken_turn_is_heard_and_echoed_over_webrtc(emulator: Emulator, speech: PCM) -> None:
    call = await open_call(emulator.base_url, await mint(emulator), audio=speech, lead_seconds=0.5)
    try:
        await call.wait_for("output_audio_buffer.stopped", timeout=30)
    finally:
        await call.close()
    kinds = [e["type"] for _, e in call.events]
    for earlier, later in [
        ("session.created", "input_audio_buffer.speech_started"),
        ("input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped"),
        ("input_audio_buffer.speech_stopped", "input_audio_buffer.committed"),
        ("input_audio_buffer.committed", "response.created"),
        ("response.created", "output_audio_buffer.started"),
        ("output_audio_buffer.started", "response.done"),
        ("response.done", "output_audio_buffer.stopped"),
    ]:
        assert kinds.index(earlier) < kinds.index(later), (earlier, later, kinds)
    assert "response.output_audio.delta" not in kinds  # over WebRTC the audio rides the track
    assert call.timings["channel_open"] < 2.0
    # The echo comes back: the received audio after speech_stopped is loud and about as long as the utterance.
    stopped_at = next(at for at, e in call.events if e["type"] == "input_audio_buffer.speech_stopped")
    reply = np.concatenate([pcm for at, pcm in call.frames if at > stopped_at])
    voiced = sum(1 for at, pcm in call.frames if at > stopped_at and level_dbfs(pcm)[0] > -40) * 0.02
    spoken = speech.size / REALTIME_RATE
    assert level_dbfs(reply)[1] > -20
    assert spoken * 0.6 < voiced < spoken * 1.4
    done = next(e for _, e in call.events if e["type"] == "response.done")
    assert done["response"]["status"] == "completed"


async def test_barge_in_over_webrtc_clears_the_output_buffer(emulator: Emulator) -> None:
    pause = np.zeros(int(0.9 * REALTIME_RATE), dtype=np.int16)
    # Speak 3 s, pause long enough for the reply to start playing, then talk over it.
    mic = np.concatenate([tone(3.0), pause, tone(0.8), np.zeros(REALTIME_RATE * 2, dtype=np.int16)])
    call = await open_call(emulator.base_url, TEST_KEY, audio=mic, lead_seconds=0.3)
    try:
        cleared = await call.wait_for("output_audio_buffer.cleared", timeout=15)
    finally:
        await call.close()
    kinds = [e["type"] for _, e in call.events]
    assert kinds.index("output_audio_buffer.started") < kinds.index("output_audio_buffer.cleared")
    assert kinds.count("input_audio_buffer.speech_started") >= 2
    first = next(e for _, e in call.events if e["type"] == "response.done")
    assert cleared["response_id"] == first["response"]["id"]
    assert first["response"]["status"] == "cancelled"
    assert first["response"]["status_details"]["reason"] == "turn_detected"


async def test_events_on_the_data_channel_are_answered(emulator: Emulator) -> None:
    call = await open_call(emulator.base_url, TEST_KEY)
    try:
        call.send(
            {
                "type": "session.update",
                "event_id": "evt_1",
                "session": {"type": "realtime", "audio": {"output": {"voice": "cedar"}}},
            }
        )
        updated = await call.wait_for("session.updated")
        call.send({"type": "session.update", "event_id": "evt_2", "session": {"type": "realtime", "voice": "x"}})
        error = await call.wait_for("error")
    finally:
        await call.close()
    assert updated["session"]["audio"]["output"]["voice"] == "cedar"
    assert error["error"]["event_id"] == "evt_2" and error["error"]["code"] == "unknown_parameter"


async def join_from_the_server(websocket_url: str, call: ProbeCall) -> dict[str, Any]:
    """The sideband: a server joins the call's WebSocket and updates the session; what the peer then sees."""
    async with websockets.connect(
        f"{websocket_url}/realtime?call_id={call.call_id}",
        additional_headers={"Authorization": f"Bearer {TEST_KEY}"},
    ) as ws:
        assert json.loads(await ws.recv())["type"] == "session.updated"
        update = {"type": "session.update", "session": {"type": "realtime", "instructions": "from the server"}}
        await ws.send(json.dumps(update))
        assert json.loads(await ws.recv())["type"] == "session.updated"
        return await call.wait_for("session.updated")


async def test_sideband_websocket_joins_a_live_call(emulator: Emulator) -> None:
    call = await open_call(emulator.base_url, TEST_KEY)
    try:
        seen_on_channel = await join_from_the_server(emulator.websocket_url, call)
    finally:
        await call.close()
    assert seen_on_channel["session"]["instructions"] == "from the server"


async def test_hangup_ends_the_call_for_the_peer(emulator: Emulator) -> None:
    call = await open_call(emulator.base_url, TEST_KEY)
    assert call.pc is not None
    async with httpx.AsyncClient() as http:
        r = await http.post(
            f"{emulator.base_url}/realtime/calls/{call.call_id}/hangup", headers={"Authorization": f"Bearer {TEST_KEY}"}
        )
        assert r.status_code == 200
        again = await http.post(
            f"{emulator.base_url}/realtime/calls/{call.call_id}/hangup", headers={"Authorization": f"Bearer {TEST_KEY}"}
        )
    assert again.status_code == 404 and again.json()["error"]["code"] == "call_not_found"
    for _ in range(100):
        if call.pc.connectionState in ("closed", "failed"):
            break
        await asyncio.sleep(0.05)
    await call.close()
    assert call.call_id not in emulator.calls


async def test_admin_drop_needs_the_admin_token_and_drops(emulator: Emulator) -> None:
    call = await open_call(emulator.base_url, TEST_KEY)
    url = f"{emulator.origin}/_rtkit/calls/{call.call_id}/drop"
    async with httpx.AsyncClient() as http:
        refused = await http.post(url, json={}, headers={"X-Rtkit-Admin-Token": "guess"})
        with_main_key = await http.post(url, json={}, headers={"Authorization": f"Bearer {TEST_KEY}"})
        listed = await http.get(
            f"{emulator.origin}/_rtkit/calls", headers={"X-Rtkit-Admin-Token": emulator.admin_token}
        )
        dropped = await http.post(url, json={}, headers={"X-Rtkit-Admin-Token": emulator.admin_token})
    await call.close()
    assert refused.status_code == with_main_key.status_code == 403
    assert [c["id"] for c in listed.json()["calls"]] == [call.call_id]
    assert dropped.status_code == 200
    assert call.call_id not in emulator.calls


async def test_admin_faults_endpoint_validates_and_applies(emulator: Emulator) -> None:
    headers = {"X-Rtkit-Admin-Token": emulator.admin_token}
    async with httpx.AsyncClient() as http:
        bad = await http.post(f"{emulator.origin}/_rtkit/faults", json={"fail_mints": {"status": 418}}, headers=headers)
        ok = await http.post(
            f"{emulator.origin}/_rtkit/faults",
            headers=headers,
            json={"reject_calls": {"count": 1, "status": 503}, "key_ttl_seconds": 30},
        )
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "fail_mints.status"
    assert ok.status_code == 200 and ok.json()["key_ttl_override"] == 30
    pc = await offer()
    rejected = await post_offer(emulator, pc.localDescription.sdp)
    accepted = await post_offer(emulator, pc.localDescription.sdp)
    await pc.close()
    assert rejected.status_code == 503 and rejected.headers["retry-after"] == "1"
    assert accepted.status_code == 201


async def test_drop_calls_after_fault_cuts_live_calls(emulator: Emulator) -> None:
    emulator.faults.drop_calls_after = 0.3
    call = await open_call(emulator.base_url, TEST_KEY)
    assert call.pc is not None
    for _ in range(100):
        if call.pc.connectionState in ("closed", "failed"):
            break
        await asyncio.sleep(0.05)
    state = call.pc.connectionState
    await call.close()
    assert state in ("closed", "failed")


async def test_expired_key_is_401(emulator: Emulator) -> None:
    ek = await mint(emulator)
    emulator.keys.expire(ek)
    pc = await offer()
    r = await post_offer(emulator, pc.localDescription.sdp, key=ek)
    await pc.close()
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "invalid_api_key" and "expired" in r.json()["error"]["message"]


@pytest.mark.parametrize(
    "sdp",
    [
        "",
        "hello",
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n",
        "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\nthis is not sdp\r\n",
    ],
)
async def test_malformed_sdp_is_400(emulator: Emulator, sdp: str) -> None:
    r = await post_offer(emulator, sdp)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "invalid_offer"
    assert not emulator.calls


async def test_wrong_content_type_is_415(emulator: Emulator) -> None:
    r = await post_offer(emulator, "{}", ctype="application/json")
    assert r.status_code == 415
    assert r.json()["error"]["code"] == "unsupported_content_type"


async def test_unknown_key_is_401(emulator: Emulator) -> None:
    r = await post_offer(emulator, "v=0", key="ek_does_not_exist")
    assert r.status_code == 401


async def test_invalid_session_in_multipart_is_400(emulator: Emulator) -> None:
    pc = await offer()
    async with httpx.AsyncClient() as http:
        r = await http.post(
            f"{emulator.base_url}/realtime/calls",
            headers={"Authorization": f"Bearer {TEST_KEY}"},
            files={
                "sdp": (None, pc.localDescription.sdp, "application/sdp"),
                "session": (None, json.dumps({"type": "realtime", "voice": "x"}), "application/json"),
            },
        )
    await pc.close()
    assert r.status_code == 400 and r.json()["error"]["param"] == "session.voice"


async def test_answer_offers_opus_only(emulator: Emulator) -> None:
    pc = await offer()
    r = await post_offer(emulator, pc.localDescription.sdp)
    await pc.close()
    rtpmaps = [line for line in r.text.splitlines() if line.startswith("a=rtpmap:")]
    assert rtpmaps and all("opus/48000/2" in line for line in rtpmaps)


async def test_worker_processes_carry_calls_end_to_end(speech: PCM) -> None:
    """With workers, /calls is answered by a worker process; media, events, hangup and drop all work."""
    async with Emulator(api_key=TEST_KEY, workers=2) as emu, httpx.AsyncClient() as http:
        first = await open_call(emu.base_url, await mint(emu), audio=speech, lead_seconds=0.3)
        second = await open_call(emu.base_url, TEST_KEY)
        assert emu.pool is not None
        workers = emu.pool.calls
        assert set(workers) == {first.call_id, second.call_id} and len(set(workers.values())) == 2
        await first.wait_for("output_audio_buffer.stopped", timeout=30)
        kinds = [e["type"] for _, e in first.events]
        assert kinds.index("input_audio_buffer.speech_stopped") < kinds.index("response.done")
        # The sideband of a worker's call goes through the public emulator, relayed to the worker.
        seen_on_channel = await join_from_the_server(emu.websocket_url, second)
        assert seen_on_channel["session"]["instructions"] == "from the server"
        listed = await http.get(f"{emu.origin}/_rtkit/calls", headers={"X-Rtkit-Admin-Token": emu.admin_token})
        assert {c["id"] for c in listed.json()["calls"]} == {first.call_id, second.call_id}
        hung = await http.post(
            f"{emu.base_url}/realtime/calls/{first.call_id}/hangup", headers={"Authorization": f"Bearer {TEST_KEY}"}
        )
        assert hung.status_code == 200
        assert await emu.drop_call(second.call_id) == 1
        for call in (first, second):
            assert call.pc is not None
            for _ in range(100):
                if call.pc.connectionState in ("closed", "failed"):
                    break
                await asyncio.sleep(0.05)
            assert call.pc.connectionState in ("closed", "failed")
            await call.close()


async def test_idle_timeout_over_webrtc_counts_from_output_audio_buffer_stopped(emulator: Emulator) -> None:
    """Over WebRTC the emulator plays the reply itself: the idle clock starts when its buffer has played out."""
    call = await open_call(emulator.base_url, TEST_KEY)  # the probe's track sends silence, in real time
    try:
        detection = {"type": "server_vad", "idle_timeout_ms": 1000}
        call.send(
            {
                "type": "session.update",
                "session": {"type": "realtime", "audio": {"input": {"turn_detection": detection}}},
            }
        )
        await call.wait_for("session.updated")
        call.send(
            {
                "type": "conversation.item.create",
                "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]},
            }
        )
        call.send({"type": "response.create"})
        stopped = await call.wait_for("output_audio_buffer.stopped", timeout=15)
        triggered = await call.wait_for("input_audio_buffer.timeout_triggered", timeout=5)
        second = await call.wait_for("response.created")
    finally:
        await call.close()
    times = {id(event): t for t, event in call.events}
    waited = times[id(triggered)] - times[id(stopped)]
    # 1 s of input silence counted from the end of playback: not from response.done, which came earlier by the
    # rest of the reply's playback (the lower bound). The upper bound only catches a clock that never started;
    # a loaded machine delivers the probe's silence frames late, and the wall clock with them.
    assert 0.9 <= waited <= 3.0, waited
    assert triggered["audio_end_ms"] - triggered["audio_start_ms"] >= 1000
    assert second["response"]["status"] == "in_progress"
