"""Debian's Chromium runs the docs' WebRTC flow from a page on another origin against an emulator started with
no CORS setting, as a student's dev server (``http://localhost:5173``) calls the real API.

The page (``browser_call.html``) is served by a tiny server of its own on another loopback port, so the
offer's POST is cross-origin and the browser sends its own preflight (``Authorization`` and the agents SDK's
``X-OpenAI-Agents-SDK`` header require one) and reads ``Location`` only if it is exposed.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from rtkit._serve import LoopServer
from rtkit.emulator import Emulator
from tests.chromium import ALLOW_MICROPHONE, ARTIFACTS, WEBRTC_ARGS, launched_chromium, require_chromium
from tests.conftest import TEST_KEY, assert_valid_server_events
from tests.emulator.test_websocket import mint

pytestmark = pytest.mark.browser

require_chromium()
from playwright.async_api import TimeoutError as PlaywrightTimeout  # noqa: E402

from tests.emulator.test_browser import PAGE, summary  # noqa: E402

SESSION_CREATED = """() => {
  const r = window.__result;
  return r.errors.length > 0 || ["failed", "closed"].includes(r.connectionState)
    || (r.dcState === "open" && r.events.some((e) => e.type === "session.created"));
}"""


@contextlib.asynccontextmanager
async def page_server() -> AsyncIterator[str]:
    """Serves ``browser_call.html`` at ``/`` on a free loopback port: the page's origin, not the emulator's."""

    async def page(request: Request) -> HTMLResponse:
        return HTMLResponse(PAGE.read_text())

    server = LoopServer(
        Starlette(routes=[Route("/", page)]),
        "127.0.0.1",
        0,
        what="page server",
        error_body=lambda status, message: message.encode(),
    )
    await server.start()
    try:
        yield server.origin
    finally:
        await server.stop()


async def test_chromium_on_another_origin_opens_a_call_on_an_emulator_started_without_cors_settings() -> None:
    async with Emulator(api_key=TEST_KEY) as emu, page_server() as origin:
        async with launched_chromium([*WEBRTC_ARGS, ALLOW_MICROPHONE]) as chromium:
            page = await chromium.new_page(viewport={"width": 1200, "height": 800})
            await page.goto(f"{origin}/")
            page_origin = await page.evaluate("() => location.origin")
            call = {
                "baseUrl": emu.base_url,
                "key": await mint(emu, {"type": "realtime", "model": "gpt-realtime"}),
                "model": "gpt-realtime",
                "headers": {"X-OpenAI-Agents-SDK": "openai-agents-sdk.0.1.0"},
            }
            http = await page.evaluate("(o) => startCall(o)", call)
            with contextlib.suppress(PlaywrightTimeout):
                await page.wait_for_function(SESSION_CREATED, timeout=10_000, polling=100)
            result = await page.evaluate("() => window.__result")
            ARTIFACTS.mkdir(exist_ok=True)
            await page.screenshot(path=ARTIFACTS / "browser_cors_call.png", full_page=True)
    report = summary(result)
    assert page_origin == origin != emu.origin
    assert http["status"] == 201, http  # 0 and "Failed to fetch" when the preflight is refused
    assert re.fullmatch(r"/v1/realtime/calls/rtc_\w+", http["location"] or ""), http
    assert result["callId"] == http["location"].rsplit("/", 1)[1]
    assert result["errors"] == [], report
    assert result["dcState"] == "open", report
    assert result["events"][0]["type"] == "session.created", report
    assert result["connectionState"] == "connected", report
    assert_valid_server_events(list(emu.server_events))
