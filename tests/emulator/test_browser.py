"""Headless Chromium runs the browser WebRTC flow from the OpenAI docs against the emulator.

Python peers share aiortc with the emulator, so they cannot show that a real browser's offer, Opus
stream and SCTP data channel are accepted, that the answer gives ``ontrack`` a MediaStream a page can
play, or that the docs' ``fetch`` with an ephemeral key works unchanged. The page is served by the
emulator itself (an extra route on its app) so the POST is same-origin and needs no CORS.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from rtkit.emulator import Emulator
from tests.chromium import ALLOW_MICROPHONE, ARTIFACTS, WEBRTC_ARGS, launched_chromium, require_chromium
from tests.conftest import TEST_KEY

pytestmark = pytest.mark.browser

require_chromium()
from playwright.async_api import Browser, Page  # noqa: E402
from playwright.async_api import TimeoutError as PlaywrightTimeout  # noqa: E402

PAGE = Path(__file__).with_name("browser_call.html")
CHROMIUM_ARGS = [*WEBRTC_ARGS, ALLOW_MICROPHONE]
#: Chromium's fake microphone beeps for ~130 ms every 500 ms. Its ~370 ms gaps never add up to the
#: default 500 ms of silence, and each beep would barge in on the reply to the one before, so the
#: page tunes turn detection over the data channel as an app would.
BEEP_FRIENDLY_VAD = {
    "type": "session.update",
    "session": {
        "type": "realtime",
        "audio": {
            "input": {"turn_detection": {"type": "server_vad", "silence_duration_ms": 200, "interrupt_response": False}}
        },
    },
}
TURN_HEARD = """() => {
  const r = window.__result;
  if (r.errors.length || ["failed", "closed"].includes(r.connectionState)) return true;
  const done = r.events.some((e) => e.type === "response.done" && e.response.status === "completed");
  return done && "output_audio_buffer.stopped" in r.marks && r.out.peak > 0.01 && r.stats.maxAudioLevel > 0;
}"""


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with launched_chromium(CHROMIUM_ARGS) as chromium:
        yield chromium


async def mint(emu: Emulator) -> str:
    """The app server's half of the docs' flow: the main key stays here, the page gets an ``ek_`` key."""
    async with httpx.AsyncClient() as http:
        r = await http.post(
            f"{emu.base_url}/realtime/client_secrets",
            headers={"Authorization": f"Bearer {TEST_KEY}"},
            json={"session": {"type": "realtime", "model": "gpt-realtime"}},
        )
    r.raise_for_status()
    return str(r.json()["value"])


async def open_call_page(emu: Emulator, browser: Browser) -> Page:
    async def serve(request: Request) -> HTMLResponse:
        return HTMLResponse(PAGE.read_text())

    emu.app.router.routes.append(Route("/test-page", serve))
    page = await browser.new_page(viewport={"width": 1200, "height": 800})
    await page.goto(f"{emu.origin}/test-page")
    return page


def summary(result: dict[str, Any]) -> str:
    """What a failing assertion should show: timings, levels on both sides, and which events came."""
    counts = Counter(e["type"] for e in result["events"])
    keep = ("connectionState", "dcState", "trackStreams", "marks", "mic", "stats", "errors")
    out = {**result["out"], "loud": result["out"]["loud"][:12]}
    return json.dumps({**{k: result[k] for k in keep}, "out": out, "events": dict(counts)}, indent=1, default=str)


async def test_chromium_completes_a_spoken_turn_over_webrtc(emulator: Emulator, browser: Browser) -> None:
    page = await open_call_page(emulator, browser)
    http = await page.evaluate(
        "(o) => startCall(o)",
        {"baseUrl": emulator.base_url, "key": await mint(emulator), "sessionUpdate": BEEP_FRIENDLY_VAD},
    )
    assert http["status"] == 201, http
    assert http["contentType"].startswith("application/sdp")
    assert re.fullmatch(r"/v1/realtime/calls/rtc_\w+", http["location"]), http["location"]
    with contextlib.suppress(PlaywrightTimeout):
        await page.wait_for_function(TURN_HEARD, timeout=15_000, polling=100)
    result = await page.evaluate("() => window.__result")
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=ARTIFACTS / "browser_call.png", full_page=True)
    report = summary(result)
    (ARTIFACTS / "browser_call.json").write_text(report)

    events = result["events"]
    types = [e["type"] for e in events]
    assert result["callId"] in emulator.calls, report
    assert result["connectionState"] == "connected", report
    assert result["dcState"] == "open", report
    assert types[:2] == ["session.created", "session.updated"], report
    assert events[1]["session"]["audio"]["input"]["turn_detection"]["silence_duration_ms"] == 200
    assert result["trackStreams"] >= 1, report
    assert result["mic"]["maxDb"] > -45, f"the fake microphone is quieter than the VAD threshold:\n{report}"
    assert "input_audio_buffer.speech_started" in types, f"server VAD never heard the beeps:\n{report}"
    assert "input_audio_buffer.speech_stopped" in types, f"server VAD never ended the turn:\n{report}"
    done = next((e for e in events if e["type"] == "response.done"), None)
    assert done is not None, report
    assert done["response"]["status"] == "completed", done["response"]["status_details"]
    assert "output_audio_buffer.started" in types, report
    assert types.index("output_audio_buffer.started") > types.index("input_audio_buffer.speech_stopped")
    assert result["out"]["peak"] > 0.01, f"the reply was not audible in the page:\n{report}"
    first_at = {e["type"]: e["t"] for e in reversed(events)}
    started, stopped = first_at["output_audio_buffer.started"], first_at["output_audio_buffer.stopped"]
    heard = [t for t, _ in result["out"]["loud"] if started <= t <= stopped + 500]
    assert heard, f"nothing was heard while the first reply played ({started}..{stopped} ms):\n{report}"
    assert result["stats"]["totalSamplesReceived"] > 0, report
    assert result["stats"]["maxAudioLevel"] > 0, report
    sent = [e["event_id"] for e in emulator.server_events]
    assert [e["event_id"] for e in events] == sent[: len(events)], "the channel lost or reordered events"


@pytest.mark.parametrize("case", ["bogus", "expired"])
async def test_chromium_reads_the_401_error_body_when_the_key_is_refused(
    emulator: Emulator, browser: Browser, case: str
) -> None:
    if case == "expired":
        key = await mint(emulator)
        emulator.keys.expire(key)
    else:
        key = "ek_" + "0123456789abcdef" * 2
    page = await open_call_page(emulator, browser)
    http = await page.evaluate("(o) => startCall(o)", {"baseUrl": emulator.base_url, "key": key})
    result = await page.evaluate("() => window.__result")

    assert http["status"] == 401, http
    assert http["location"] is None
    error = http["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "invalid_api_key"
    assert error["param"] is None
    assert ("expired" in error["message"]) == (case == "expired"), error["message"]
    assert key not in json.dumps(http), "the refused key was echoed back"
    assert result["errors"] == [f"POST 401: invalid_api_key: {error['message']}"]
    assert "POST /realtime/calls -> 401" in await page.inner_text("#log")
    assert result["connectionState"] == "closed"
    assert result["events"] == []
    assert not emulator.calls


async def test_an_ordinary_browser_on_the_same_machine_reaches_the_loopback_emulator(emulator: Emulator) -> None:
    """A participant's Chromium has no ``--allow-loopback-in-peer-connection``: it offers only its network
    interfaces' candidates, yet reaches the emulator's loopback candidates on the same machine. That is what
    lets a workshop laptop's own browser talk to the emulator in its kernel (``RTKIT_AUDIO=browser``)."""
    interfaces = [a.address for addrs in psutil.net_if_addrs().values() for a in addrs if a.family == socket.AF_INET]
    if not [ip for ip in interfaces if not ip.startswith("127.")]:
        pytest.skip("no network interface besides loopback: without the flag Chromium gathers no candidate at all")
    args = [a for a in CHROMIUM_ARGS if a != "--allow-loopback-in-peer-connection"]
    async with launched_chromium(args) as ordinary:
        page = await open_call_page(emulator, ordinary)
        call = {"baseUrl": emulator.base_url, "key": await mint(emulator)}
        http = await page.evaluate("(o) => startCall(o)", call)
        with contextlib.suppress(PlaywrightTimeout):
            await page.wait_for_function("() => window.__result.dcState === 'open'", timeout=10_000, polling=100)
        result = await page.evaluate("() => window.__result")
    assert http["status"] == 201, http
    assert result["dcState"] == "open" and result["connectionState"] == "connected", summary(result)
    assert result["events"][0]["type"] == "session.created", summary(result)
