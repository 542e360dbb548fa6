"""POST /v1/realtime/client_secrets, through the official SDK and over raw HTTP."""

from __future__ import annotations

import time

import httpx
import openai
import pytest
from openai import AsyncOpenAI

from rtkit.emulator import Emulator
from tests.conftest import TEST_KEY


def sdk(emu: Emulator, key: str = TEST_KEY) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=emu.base_url, api_key=key, max_retries=0)


async def post(emu: Emulator, body: object, key: str | None = TEST_KEY, **kw: object) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with httpx.AsyncClient() as http:
        return await http.post(f"{emu.base_url}/realtime/client_secrets", json=body, headers=headers, **kw)


async def test_sdk_mints_an_ephemeral_key_with_the_real_response_shape(emulator: Emulator) -> None:
    secret = await sdk(emulator).realtime.client_secrets.create(
        session={
            "type": "realtime",
            "model": "gpt-realtime",
            "instructions": "Be brief.",
            "audio": {"output": {"voice": "marin"}},
        },
        expires_after={"anchor": "created_at", "seconds": 120},
    )
    assert secret.value.startswith("ek_")
    assert abs(secret.expires_at - (time.time() + 120)) < 5
    assert secret.session.type == "realtime"
    assert secret.session.id.startswith("sess_")
    assert secret.session.model == "gpt-realtime"
    assert secret.session.instructions == "Be brief."
    assert secret.session.audio.output.voice == "marin"
    assert secret.session.audio.input.turn_detection.type == "server_vad"


async def test_default_lifetime_is_ten_minutes(emulator: Emulator) -> None:
    body = (await post(emulator, {})).json()
    assert body["expires_at"] - time.time() == pytest.approx(600, abs=5)
    assert set(body) == {"value", "expires_at", "session"}


async def test_transcription_sessions_are_minted_too(emulator: Emulator) -> None:
    body = (await post(emulator, {"session": {"type": "transcription"}})).json()
    assert body["session"]["type"] == "transcription"


async def test_wrong_main_key_is_401_in_openai_error_shape(emulator: Emulator) -> None:
    r = await post(emulator, {}, key="sk-wrong-key-123456")
    assert r.status_code == 401
    error = r.json()["error"]
    assert error["code"] == "invalid_api_key"
    assert error["message"].startswith("Incorrect API key provided")
    assert "sk-wrong-key-123456" not in r.text  # the key is masked, never echoed
    assert set(error) == {"message", "type", "param", "code"}


async def test_sdk_raises_authentication_error_for_a_wrong_key(emulator: Emulator) -> None:
    with pytest.raises(openai.AuthenticationError):
        await sdk(emulator, "sk-nope-nope-nope").realtime.client_secrets.create(session={"type": "realtime"})


async def test_missing_key_is_401(emulator: Emulator) -> None:
    r = await post(emulator, {}, key=None)
    assert r.status_code == 401
    assert "didn't provide an API key" in r.json()["error"]["message"]


async def test_an_ephemeral_key_cannot_mint_more_keys(emulator: Emulator) -> None:
    ek = (await post(emulator, {})).json()["value"]
    assert (await post(emulator, {}, key=ek)).status_code == 401


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        ({"type": "realtime"}, "unknown_parameter", "type"),
        ({"session": {"type": "realtime", "voice": "marin"}}, "unknown_parameter", "session.voice"),
        ({"session": {"model": "gpt-realtime"}}, "missing_required_parameter", "session.type"),
        ({"session": {"type": "video"}}, "invalid_value", "session.type"),
        ({"session": {"type": "realtime", "instructions": 42}}, "invalid_type", "session.instructions"),
        (
            {"expires_after": {"anchor": "created_at", "seconds": 5}},
            "decimal_below_min_value",
            "expires_after.seconds",
        ),
        (
            {"expires_after": {"anchor": "created_at", "seconds": 7201}},
            "decimal_above_max_value",
            "expires_after.seconds",
        ),
        ({"expires_after": {"anchor": "now", "seconds": 60}}, "invalid_value", "expires_after.anchor"),
    ],
)
async def test_bad_bodies_are_400_naming_the_parameter(
    emulator: Emulator, body: dict[str, object], code: str, param: str
) -> None:
    r = await post(emulator, body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", code, param)
    # The service names the parameter in the message, except for "Invalid value: 'x'. Supported values are…".
    assert param in error["message"] or error["message"].startswith("Invalid value: ")


async def test_unparseable_json_is_400(emulator: Emulator) -> None:
    async with httpx.AsyncClient() as http:
        r = await http.post(
            f"{emulator.base_url}/realtime/client_secrets",
            content=b"{not json",
            headers={"Authorization": f"Bearer {TEST_KEY}", "Content-Type": "application/json"},
        )
    assert r.status_code == 400
    assert "could not parse the JSON body" in r.json()["error"]["message"]


async def test_injected_429_carries_retry_after_then_recovers(emulator: Emulator) -> None:
    emulator.faults.fail_next_mints(2, status=429, retry_after=3)
    for _ in range(2):
        r = await post(emulator, {})
        assert r.status_code == 429
        assert r.headers["retry-after"] == "3"
        assert r.json()["error"]["code"] == "rate_limit_exceeded"
    assert (await post(emulator, {})).status_code == 200


@pytest.mark.parametrize(
    ("status", "sdk_error"), [(500, openai.InternalServerError), (503, openai.InternalServerError)]
)
async def test_injected_5xx_reaches_the_sdk_as_a_server_error(
    emulator: Emulator, status: int, sdk_error: type[Exception]
) -> None:
    emulator.faults.fail_next_mints(1, status=status)
    with pytest.raises(sdk_error) as info:
        await sdk(emulator).realtime.client_secrets.create(session={"type": "realtime"})
    assert info.value.status_code == status  # type: ignore[attr-defined]


async def test_key_lifetime_override_applies_to_new_keys(emulator: Emulator) -> None:
    emulator.faults.key_ttl_override = 15
    body = (await post(emulator, {"expires_after": {"anchor": "created_at", "seconds": 3600}})).json()
    assert body["expires_at"] - time.time() == pytest.approx(15, abs=3)


async def test_added_latency_delays_the_endpoint(emulator: Emulator) -> None:
    emulator.faults.add_latency("client_secrets", 0.3)
    started = time.perf_counter()
    assert (await post(emulator, {})).status_code == 200
    assert time.perf_counter() - started >= 0.3


async def test_a_key_dead_on_arrival_is_refused_as_expired_and_the_next_one_works(emulator: Emulator) -> None:
    """The key that "expired on its way": minted with a normal ``expires_at``, refused at first use."""
    offer = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"  # not a usable offer: a live key gets a 400 for it
    async with httpx.AsyncClient() as http:
        r = await http.post(
            f"{emulator.origin}/_rtkit/faults",
            json={"keys_dead_on_arrival": 1},
            headers={"X-Rtkit-Admin-Token": emulator.admin_token},
        )
        assert r.status_code == 200 and r.json()["keys_dead_on_arrival"] == 1
        dead, alive = [(await post(emulator, {})).json() for _ in range(2)]
        assert dead["expires_at"] - time.time() > 60  # the client cannot tell
        answers = [
            await http.post(
                f"{emulator.base_url}/realtime/calls",
                content=offer,
                headers={"Authorization": f"Bearer {key}", "Content-Type": "application/sdp"},
            )
            for key in (dead["value"], alive["value"])
        ]
    assert answers[0].status_code == 401 and "expired" in answers[0].json()["error"]["message"]
    assert answers[1].status_code == 400, answers[1].text
