"""The broker's demo page in Debian's Chromium: a spoken turn, reconnection, and each error scenario of the guide.

The page is served by the real broker and calls the real emulator on another loopback port (another
origin, as when the Realtime API is elsewhere), so its fetches, CORS preflights, WebRTC and WebSocket
are the browser's own. Each test leaves a screenshot in ``artifacts/``.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from rtkit.broker import Broker, BrokerSettings
from rtkit.emulator import Emulator
from tests.chromium import ALLOW_MICROPHONE, ARTIFACTS, CHROMIUM, WEBRTC_ARGS, require_chromium
from tests.conftest import TEST_KEY, assert_valid_server_events, free_port

pytestmark = pytest.mark.browser

require_chromium()
from playwright.async_api import Browser, Page, Response, async_playwright  # noqa: E402
from playwright.async_api import TimeoutError as PlaywrightTimeout  # noqa: E402

CHROMIUM_ARGS = WEBRTC_ARGS
#: Chromium's fake microphone beeps every 500 ms; the page's flag shortens turn detection's silence to fit.
BEEPS = "?silenceMs=200"
TURN_HEARD = """() => {
  const d = window.rtkitDemo;
  if (d.state === "failed") return true;
  const done = d.events.some((e) => e.type === "response.done" && e.status === "completed");
  const ended = ["output_audio_buffer.stopped", "response.output_audio.done"];
  const stopped = d.events.some((e) => ended.includes(e.type));
  return done && stopped && d.levels.outputPeak > 0.01 && d.transcript.length > 0;
}"""
OpenPage = Callable[..., Awaitable["Page"]]


@dataclass
class Stack:
    emulator: Emulator
    broker: Broker


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    port = free_port()
    origin = f"http://127.0.0.1:{port}"
    async with Emulator(api_key=TEST_KEY, cors_origins=[origin]) as emu:
        settings = BrokerSettings(
            upstream_url=emu.base_url,
            api_key=TEST_KEY,
            dev_mode=True,
            # Chromium sends Origin on a same-origin POST too, and the broker refuses origins it does not know.
            allowed_origins=[origin],
            upstream_attempts=1,
            upstream_timeout=2.0,
        )
        async with Broker(settings, port=port) as broker:
            yield Stack(emu, broker)
    assert_valid_server_events(list(emu.server_events))


@pytest.fixture
async def open_page(stack: Stack) -> AsyncIterator[OpenPage]:
    """Opens the demo page in a fresh Chromium; at teardown, the page must have thrown nothing uncaught."""
    errors: list[str] = []
    async with async_playwright() as p:
        browsers: list[Browser] = []

        async def open_(query: str = "", *, allow_microphone: bool = True, init_script: str | None = None) -> Page:
            args = [*CHROMIUM_ARGS, ALLOW_MICROPHONE] if allow_microphone else CHROMIUM_ARGS
            browser = await p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=args)
            browsers.append(browser)
            page = await browser.new_page(viewport={"width": 1000, "height": 900})
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            if init_script:
                await page.add_init_script(init_script)
            await page.goto(f"{stack.broker.url}/{query}")
            await page.wait_for_function("() => window.rtkitDemo && window.rtkitDemo.ready", timeout=5_000)
            return page

        yield open_
        for browser in browsers:
            await browser.close()
    assert not errors, f"uncaught errors in the page: {errors}"


async def demo(page: Page) -> dict[str, Any]:
    return dict(await page.evaluate("() => window.rtkitDemo"))


async def report(page: Page) -> str:
    """What a failing assertion should show: the page's state and its event log."""
    d = await demo(page)
    d["events"] = [e["type"] for e in d["events"]][-40:]
    return json.dumps(d, indent=1) + "\n" + await page.inner_text("#log")


async def until(page: Page, condition: str, timeout: float = 10_000) -> None:
    try:
        await page.wait_for_function(condition, timeout=timeout, polling=100)
    except PlaywrightTimeout as exc:
        raise AssertionError(f"waited {timeout:.0f} ms for {condition}:\n{await report(page)}") from exc


async def screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=ARTIFACTS / f"broker_page_{name}.png", full_page=True)


PAGE_FILES = ("/", "/config.json", "/static/app.js", "/static/realtime.js", "/static/app.css")


async def test_page_and_its_files_never_carry_the_main_key(stack: Stack) -> None:
    async with httpx.AsyncClient() as http:
        bodies = {path: await http.get(f"{stack.broker.url}{path}") for path in PAGE_FILES}
    for path, r in bodies.items():
        assert r.status_code == 200, path
        assert TEST_KEY not in r.text, path
    assert bodies["/"].headers["content-type"].startswith("text/html")
    assert "javascript" in bodies["/static/app.js"].headers["content-type"]
    assert bodies["/config.json"].json() == {"realtimeUrl": stack.emulator.base_url, "model": "gpt-realtime"}


async def test_page_connects_and_hears_a_spoken_reply(stack: Stack, open_page: OpenPage) -> None:
    page = await open_page(BEEPS)
    responses: list[Response] = []
    page.on("response", lambda r: responses.append(r))
    await page.click("#connect")
    await until(page, "() => rtkitDemo.state === 'connected'")
    await until(page, TURN_HEARD, 15_000)
    await screenshot(page, "spoken_turn")
    d, why = await demo(page), await report(page)

    types = [e["type"] for e in d["events"]]
    assert d["states"] == ["disconnected", "connecting", "connected"], why
    assert d["transport"] == "webrtc"
    assert types[0] == "session.created", why
    assert "input_audio_buffer.speech_started" in types and "input_audio_buffer.speech_stopped" in types, why
    assert {"type": "response.done", "status": "completed"} in [
        {"type": e["type"], "status": e.get("status")} for e in d["events"]
    ], why
    assert d["levels"]["inputPeak"] > 0.01 and d["levels"]["outputPeak"] > 0.01, why
    # One read of both: the fake microphone keeps beeping, so the next reply may be streaming in already.
    kept, shown = await page.evaluate("() => [rtkitDemo.transcript, document.getElementById('transcript').textContent]")
    assert kept and shown == kept, why
    assert stack.emulator.keys.issued == 1
    seen = [(r.url, await r.text()) for r in responses if r.request.method != "OPTIONS"]
    assert any(url.endswith("/api/client-secret") for url, _ in seen), [url for url, _ in seen]
    assert any(url.endswith("/v1/realtime/calls") for url, _ in seen), [url for url, _ in seen]
    assert not [url for url, text in seen if TEST_KEY in text], "the main key reached the page"


async def test_page_reconnects_with_a_fresh_key_after_a_drop(stack: Stack, open_page: OpenPage) -> None:
    page = await open_page()
    await page.click("#connect")
    await until(page, "() => rtkitDemo.state === 'connected'")
    first_call = next(iter(stack.emulator.calls))
    assert stack.emulator.keys.issued == 1

    await stack.emulator.drop_call()
    await until(page, "() => rtkitDemo.state === 'connected' && rtkitDemo.states.length > 3", 10_000)
    await screenshot(page, "reconnected")
    d, why = await demo(page), await report(page)

    assert d["states"] == ["disconnected", "connecting", "connected", "disconnected", "connecting", "connected"], why
    assert stack.emulator.keys.issued == 2, why
    assert list(stack.emulator.calls) != [first_call] and len(stack.emulator.calls) == 1
    assert "connection lost" in why
    assert not await page.is_visible("#message")

    # Disconnect is not a lost line: the call ends and stays ended.
    await page.click("#disconnect")
    await page.wait_for_timeout(1_000)
    assert (await demo(page))["states"][-1] == "disconnected"
    assert not stack.emulator.calls and stack.emulator.keys.issued == 2


async def test_page_gives_up_after_the_reconnection_limit(stack: Stack, open_page: OpenPage) -> None:
    page = await open_page("?retries=3")
    await page.click("#connect")
    await until(page, "() => rtkitDemo.state === 'connected'")

    started = time.monotonic()
    await stack.emulator.stop()
    await until(page, "() => rtkitDemo.state === 'failed'", 20_000)
    await screenshot(page, "unable_to_reconnect")
    d, why = await demo(page), await report(page)

    assert "Unable to reconnect" in await page.inner_text("#message"), why
    assert d["states"][2:] == ["connected", *["disconnected", "connecting"] * 3, "disconnected", "failed"], why
    # Three attempts: the first after ~0.5 s, the next two after the broker's retryAfter of 2 s.
    assert 4.0 < time.monotonic() - started < 12.0, why
    assert await page.is_enabled("#connect") and not await page.is_enabled("#disconnect")


async def test_page_explains_a_denied_microphone(stack: Stack, open_page: OpenPage) -> None:
    page = await open_page(allow_microphone=False)
    await page.click("#connect")
    await until(page, "() => rtkitDemo.state === 'failed'")
    await screenshot(page, "microphone_denied")
    message = await page.inner_text("#message")

    assert "Microphone access is blocked" in message and "allow the microphone" in message, await report(page)
    assert (await demo(page))["states"] == ["disconnected", "connecting", "failed"]
    assert stack.emulator.keys.issued == 0, "no key is minted for a call that cannot have a microphone"


async def test_page_gets_a_fresh_key_when_its_key_expired_on_the_way(stack: Stack, open_page: OpenPage) -> None:
    emu = stack.emulator
    page = await open_page()
    # The first key dies between mint and call: the emulator expires it the moment it is minted, while the
    # broker (and the page) still believe its expires_at.
    emu.faults.keys_dead_on_arrival = 1
    await page.click("#connect")

    await until(page, "() => ['connected', 'failed'].includes(rtkitDemo.state)")
    await screenshot(page, "token_expired")
    d, why = await demo(page), await report(page)

    assert d["state"] == "connected", why
    assert d["states"] == ["disconnected", "connecting", "connected"], why
    assert "HTTP 401" in why and "fresh key" in why
    assert emu.keys.issued == 2 and d["keysMinted"] == 2


@pytest.mark.parametrize("old_browser", [True, False], ids=["no-RTCPeerConnection", "query-flag"])
async def test_page_falls_back_to_websocket_without_webrtc(
    stack: Stack, open_page: OpenPage, old_browser: bool
) -> None:
    if old_browser:  # emulated: the page finds no RTCPeerConnection
        page = await open_page(BEEPS, init_script="delete window.RTCPeerConnection;")
    else:
        page = await open_page(BEEPS + "&transport=websocket")
    await page.click("#connect")
    await until(page, "() => rtkitDemo.state === 'connected'")
    await until(page, TURN_HEARD, 15_000)
    await screenshot(page, "websocket_fallback" if old_browser else "websocket_flag")
    d, why = await demo(page), await report(page)

    types = [e["type"] for e in d["events"]]
    assert d["transport"] == "websocket" and ("no WebRTC" in why) == old_browser
    assert types[0] == "session.created", why
    assert "input_audio_buffer.speech_started" in types, "the microphone did not reach the server over the WebSocket"
    assert "response.output_audio.delta" in types and d["levels"]["outputPeak"] > 0.01, why
    assert not stack.emulator.calls, "no WebRTC call was opened"


async def test_page_shows_the_brokers_message_when_the_api_is_down(stack: Stack, open_page: OpenPage) -> None:
    stack.emulator.faults.fail_next_mints(5, status=429, retry_after=7)
    page = await open_page()
    await page.click("#connect")
    await until(page, "() => rtkitDemo.state === 'failed'")
    await screenshot(page, "api_down")
    message = await page.inner_text("#message")

    assert "The Realtime API is rate limiting the broker" in message, await report(page)
    assert "retry after 7 s" in message
    assert (await demo(page))["states"] == ["disconnected", "connecting", "failed"]
    assert not stack.emulator.calls


LONG_REPLY = [
    {
        "type": "conversation.item.create",
        "item": {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "Read this out: " + "one two three four five six seven " * 6}],
        },
    },
    {"type": "response.create"},
]


@pytest.mark.parametrize("transport", ["webrtc", "websocket"])
async def test_page_cuts_a_reply_it_was_talked_over_to_what_it_played(
    stack: Stack, open_page: OpenPage, transport: str
) -> None:
    """The barge-in the notebook's BrowserCall makes (one PageCall in realtime.js): playback stops and the reply is
    truncated to the milliseconds the page played. Over the WebSocket, reached by the page's fallback in a browser
    without WebRTC, what was played is counted on the 24 kHz queue and never exceeds what the API produced."""
    page = await open_page(init_script="delete window.RTCPeerConnection;" if transport == "websocket" else None)
    await page.click("#connect")
    await until(page, "() => rtkitDemo.state === 'connected'")
    assert (await demo(page))["transport"] == transport
    await page.click("#mute")  # the fake microphone's beeps stop; their turn ends and its short reply plays out
    await page.wait_for_timeout(2_500)
    before = len((await demo(page))["events"])
    await page.evaluate("(events) => events.forEach((e) => rtkitDemo.send(e))", LONG_REPLY)
    playing = "output_audio_buffer.started" if transport == "webrtc" else "response.output_audio.delta"
    await until(page, f"() => rtkitDemo.events.slice({before}).some((e) => e.type === '{playing}')")
    await page.wait_for_timeout(1_500)
    await page.click("#mute")  # unmuted: the next beep talks over the reply
    await until(page, "() => rtkitDemo.bargeIns.some((b) => b.truncated)", 10_000)
    await page.wait_for_timeout(500)  # an error about the page's events would be here by now
    await screenshot(page, f"barge_in_{transport}")
    d, why = await demo(page), await report(page)

    cut = next(b for b in d["bargeIns"] if b["truncated"])
    truncated = [e for e in stack.emulator.server_events if e["type"] == "conversation.item.truncated"]
    assert [(e["item_id"], e["audio_end_ms"]) for e in truncated] == [(cut["item_id"], cut["played_ms"])], why
    # 1.5 s after the reply started playing (less the jitter buffer's delay over WebRTC), before it ended.
    assert 800 < cut["played_ms"] < 10_000 and cut["transport"] == transport, cut
    if transport == "websocket":
        assert cut["produced_ms"] is not None and cut["played_ms"] <= cut["produced_ms"], cut
    assert not [e for e in d["events"] if e["type"] == "error"], why
    assert f"barge-in over {transport}: {cut['played_ms']} ms" in why
