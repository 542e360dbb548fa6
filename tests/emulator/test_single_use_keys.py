"""Single-use keys: an ephemeral key opens one session (a call or a WebSocket), its second use is the service's
401, and the operator's key listing shows how often each key was presented."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import websockets

from rtkit._ids import fingerprint
from rtkit.emulator import Emulator
from tests.conftest import TEST_KEY
from tests.emulator.test_calls import offer, post_offer
from tests.emulator.test_websocket import mint, ws_url
from tests.probe import open_call


async def admin(emu: Emulator, method: str, path: str, **kwargs: Any) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.request(
            method, f"{emu.origin}/_rtkit/{path}", headers={"X-Rtkit-Admin-Token": emu.admin_token}, **kwargs
        )


async def uses(emu: Emulator, key: str) -> int:
    r = await admin(emu, "GET", "keys")
    r.raise_for_status()
    (listed,) = [k for k in r.json()["keys"] if k["fingerprint"] == fingerprint(key)]
    return int(listed["uses"])


async def open_websocket(emu: Emulator, key: str) -> tuple[int, Any] | None:
    """Open a WebSocket session with ``key``: None when it opened, else the refusal's status and body."""
    try:
        async with websockets.connect(ws_url(emu), additional_headers={"Authorization": f"Bearer {key}"}) as ws:
            assert json.loads(await ws.recv())["type"] == "session.created"
            return None
    except websockets.InvalidStatus as exc:
        return exc.response.status_code, json.loads(exc.response.body or b"null")


def assert_invalid_api_key(refusal: httpx.Response | tuple[int, Any] | None) -> None:
    assert refusal is not None
    status, body = (refusal.status_code, refusal.json()) if isinstance(refusal, httpx.Response) else refusal
    assert status == 401
    assert body["error"]["code"] == "invalid_api_key" and body["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("workers", [0, 1], ids=["in-process", "worker"])
async def test_a_key_opens_one_call_and_its_second_use_is_401(workers: int) -> None:
    async with Emulator(api_key=TEST_KEY, workers=workers, single_use_keys=True) as emu:
        ek = await mint(emu)
        pc = await offer()
        try:
            first = await post_offer(emu, pc.localDescription.sdp, key=ek)
            after_first = await uses(emu, ek)
            second = await post_offer(emu, pc.localDescription.sdp, key=ek)
        finally:
            await pc.close()
        assert first.status_code == 201, first.text
        assert_invalid_api_key(second)
        assert (after_first, await uses(emu, ek)) == (1, 2)
        another = await mint(emu)  # one key's use says nothing about another's
        pc = await offer()
        try:
            assert (await post_offer(emu, pc.localDescription.sdp, key=another)).status_code == 201
        finally:
            await pc.close()


async def test_a_key_opens_one_websocket_session_and_its_second_use_is_401() -> None:
    async with Emulator(api_key=TEST_KEY, single_use_keys=True) as emu:
        ek = await mint(emu)
        assert await open_websocket(emu, ek) is None
        assert await uses(emu, ek) == 1
        assert_invalid_api_key(await open_websocket(emu, ek))
        assert await uses(emu, ek) == 2
        assert await open_websocket(emu, TEST_KEY) is None  # the main key is not spent


async def test_joining_the_sideband_and_hanging_up_are_no_new_session() -> None:
    async with Emulator(api_key=TEST_KEY, single_use_keys=True) as emu:
        ek = await mint(emu)
        call = await open_call(emu.base_url, ek)
        try:
            async with websockets.connect(
                f"{emu.websocket_url}/realtime?call_id={call.call_id}",
                additional_headers={"Authorization": f"Bearer {ek}"},
            ) as ws:
                assert json.loads(await ws.recv())["type"] == "session.updated"
            async with httpx.AsyncClient() as http:
                hangup = await http.post(
                    f"{emu.base_url}/realtime/calls/{call.call_id}/hangup", headers={"Authorization": f"Bearer {ek}"}
                )
        finally:
            await call.close()
        assert hangup.status_code == 200
        assert await uses(emu, ek) == 1


async def test_the_runtime_fault_turns_single_use_keys_on_and_off(emulator: Emulator) -> None:
    ek = await mint(emulator)
    assert await open_websocket(emulator, ek) is None
    assert await open_websocket(emulator, ek) is None  # off by default: a key opens as many sessions as it likes
    on = await admin(emulator, "POST", "faults", json={"single_use_keys": True})
    assert on.status_code == 200 and on.json()["single_use_keys"] is True
    assert_invalid_api_key(await open_websocket(emulator, ek))
    fresh = await mint(emulator)
    assert await open_websocket(emulator, fresh) is None
    assert_invalid_api_key(await open_websocket(emulator, fresh))
    off = await admin(emulator, "POST", "faults", json={"single_use_keys": False})
    assert off.json()["single_use_keys"] is False
    assert await open_websocket(emulator, fresh) is None
    assert (await uses(emulator, ek), await uses(emulator, fresh)) == (3, 3)


@pytest.mark.parametrize("body", [{"single_use_keys": "yes"}, {"single_use_keys": 1}, {"single_use_key": True}])
async def test_the_single_use_fault_takes_a_json_boolean_only(emulator: Emulator, body: dict[str, Any]) -> None:
    r = await admin(emulator, "POST", "faults", json=body)
    assert r.status_code == 400, r.text
    assert emulator.faults.single_use_keys is False


async def test_the_key_listing_needs_the_admin_token_and_never_shows_a_key(emulator: Emulator) -> None:
    ek = await mint(emulator)
    async with httpx.AsyncClient() as http:
        refused = await http.get(f"{emulator.origin}/_rtkit/keys", headers={"Authorization": f"Bearer {TEST_KEY}"})
    listed = await admin(emulator, "GET", "keys")
    assert refused.status_code == 403
    assert ek not in listed.text
    (entry,) = listed.json()["keys"]
    assert entry["fingerprint"] == fingerprint(ek) and entry["uses"] == 0
    assert entry["session_id"].startswith("sess_") and entry["expires_at"] - entry["created"] == 600
