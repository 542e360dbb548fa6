"""``BrowserCall``: the notebook's browser tab makes the call, the kernel is its backend.

Two halves. The first drives the kernel side through a scripted page (a ``PageBridge`` passed to the call as
``bridge=``), to pin down the protocol, the error mapping and reconnection in milliseconds. The second
is the real thing: JupyterLab from the venv, a notebook that starts the emulator in its kernel and shows a
``BrowserCall``, and Debian's Chromium (headless, fake microphone) running its cells; the notebook asserts
in its own cells, and the test reads the saved notebook and the page. Screenshots go to ``artifacts/``.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import ipywidgets as widgets
import pytest

pytest.importorskip("anywidget", reason="needs anywidget (pip install -e '.[lab]')")

from rtkit.call import CallCore
from rtkit.errors import (
    ConfigurationError,
    MicrophoneDeniedError,
    MicrophoneUnavailableError,
    NetworkLostError,
    RateLimitedError,
    TokenExpiredError,
    UpstreamError,
)
from rtkit.session import RealtimeSession, ReconnectPolicy, StateChange
from rtkit.widgets import BrowserCall, ConnectionPanel, LevelPlot
from rtkit.widgets.page import PageBridge, PageTransport
from tests.jupyterlab import (
    MAIN_KEY,
    Lab,
    NotebookRun,
    lab_with_notebooks,
    missing_lab_tools,
    notebook_cells,
    run_in_lab,
)

FAST = ReconnectPolicy(max_attempts=3, initial_delay=0.01, max_delay=0.05)
#: What a key looks like (the widget's own source mentions "ek_" in its comments, never with a value).
EK = re.compile(r"ek_[A-Za-z0-9]{8,}")


# ---- the kernel side, with a scripted browser ---------------------------------------------------------


class ScriptedPage(PageBridge):
    """The kernel's end of the protocol, with the page scripted: what the kernel posts is kept in ``posted``, and
    each ``ScriptedBrowser`` tab answers through ``receive``, as the widget's messages would arrive."""

    def __init__(self) -> None:
        super().__init__()
        self.posted: list[dict[str, Any]] = []
        self.opens_read = 0

    def post(self, message: dict[str, Any]) -> None:
        self.posted.append(message)


@dataclass
class ScriptedBrowser:
    """One tab showing the call: answers as ``static/browser_call.js`` would."""

    page: ScriptedPage
    frontend: str = "tab1"
    #: The attempt of the call this tab opened last.
    attempt: int | None = None

    @property
    def posted(self) -> list[dict[str, Any]]:
        return self.page.posted

    def tab(self, frontend: str) -> ScriptedBrowser:
        """Another page showing the same notebook (a second tab, or this one reloaded)."""
        return ScriptedBrowser(self.page, frontend)

    def say(self, kind: str, **fields: Any) -> None:
        self.page.receive({"kind": kind, "frontend": self.frontend, **fields})

    async def next_open(self, timeout: float = 2.0) -> dict[str, Any]:
        """The next ``open`` message the kernel posts (the key and the attempt to answer)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            opens = [m for m in self.posted if m["kind"] == "open"]
            if len(opens) > self.page.opens_read:
                self.page.opens_read += 1
                return opens[self.page.opens_read - 1]
            await asyncio.sleep(0.005)
        raise AssertionError(f"no open message; posted: {self.posted}")

    def start_session(self, open_msg: dict[str, Any], transport: str = "webrtc") -> None:
        self.attempt = open_msg["attempt"]
        self.say("event", event={"type": "session.created", "event_id": "event_1", "session": {}})
        self.say("opened", attempt=open_msg["attempt"], transport=transport, timings={"answer_ms": 12.5})


class Keys:
    """A key provider that counts its mints and hands out a new ``ek_`` value each time."""

    def __init__(self) -> None:
        self.minted: list[str] = []

    async def __call__(self) -> str:
        self.minted.append(f"ek_test{len(self.minted)}{secrets.token_hex(8)}")
        return self.minted[-1]


def scripted(keys: Keys | None = None, **options: Any) -> tuple[BrowserCall, ScriptedBrowser]:
    """A call whose page is scripted, and its first tab."""
    page = ScriptedPage()
    return BrowserCall(keys if keys is not None else Keys(), bridge=page, **options), ScriptedBrowser(page)


async def connected(call: BrowserCall, browser: ScriptedBrowser) -> None:
    task = asyncio.ensure_future(call.connect())
    browser.say("hello")
    browser.start_session(await browser.next_open())
    await task


async def test_connect_hands_the_key_over_in_a_message_and_never_in_the_widget_state() -> None:
    keys = Keys()
    call, browser = scripted(keys, base_url="http://127.0.0.1:9/v1/")
    states: list[StateChange] = []
    call.states.on(states.append)
    task = asyncio.ensure_future(call.connect())
    browser.say("hello")
    opened = await browser.next_open()
    assert opened["key"] == keys.minted[0] and opened["frontend"] == "tab1" and opened["transport"] == "auto"
    browser.start_session(opened)
    await task

    assert call.state == call.widget.status == "connected" and call.transport_name == "webrtc"
    assert isinstance(call.transport, PageTransport) and call.widget.transport == "webrtc"
    assert [s.state for s in states] == ["connecting", "connected"]
    record = call.metrics.connects[-1]
    assert record.ok and record.transport == "webrtc" and record.answer_ms == 12.5 and record.mint_ms is not None
    state = json.dumps(call.widget.get_state(), default=str)
    assert keys.minted[0] not in state and not EK.findall(state)
    assert call.widget.get_state()["base_url"] == "http://127.0.0.1:9/v1"
    await call.close()


async def test_without_a_page_showing_the_widget_connect_says_so() -> None:
    call, _ = scripted(frontend_timeout=0.05)
    with pytest.raises(ConfigurationError, match="No browser page is showing this widget"):
        await call.connect()
    assert call.state == "failed" and "display it" in call.message


async def test_a_refused_key_earns_one_fresh_key_and_then_token_expired() -> None:
    keys = Keys()
    call, browser = scripted(keys)
    expired = json.dumps({"error": {"message": "The ephemeral client secret has expired.", "code": "invalid_api_key"}})
    task = asyncio.ensure_future(call.connect())
    browser.say("hello")
    for _ in range(2):
        opened = await browser.next_open()
        browser.say("failed", attempt=opened["attempt"], code="http", message="refused", status=401, body=expired)
    with pytest.raises(TokenExpiredError, match="freshly minted key too"):
        await task
    assert len(keys.minted) == 2 and keys.minted[0] != keys.minted[1]
    assert call.state == "failed" and call.message_kind == "error"
    assert browser.posted[-1] == {"kind": "hangup"}  # the microphone is released


async def test_a_refused_key_then_a_good_one_connects() -> None:
    keys = Keys()
    call, browser = scripted(keys)
    task = asyncio.ensure_future(call.connect())
    browser.say("hello")
    opened = await browser.next_open()
    browser.say("failed", attempt=opened["attempt"], code="http", message="refused", status=401, body="{}")
    browser.start_session(await browser.next_open())
    await task
    assert call.state == "connected" and len(keys.minted) == 2


@pytest.mark.parametrize(
    ("report", "error", "words"),
    [
        ({"code": "microphone_denied", "message": "Microphone access is blocked."}, MicrophoneDeniedError, "blocked"),
        (
            {"code": "http", "status": 429, "retryAfter": "3", "body": '{"error": {"message": "Slow down."}}'},
            RateLimitedError,
            "Slow down",
        ),
        ({"code": "http", "status": 503, "body": "{}"}, UpstreamError, "503"),
        ({"code": "upstream_unreachable", "message": "cannot be reached"}, UpstreamError, "cannot be reached"),
        ({"code": "network_lost", "message": "did not start"}, NetworkLostError, "did not start"),
    ],
)
async def test_browser_failures_raise_the_matching_rtkit_error(
    report: dict[str, Any], error: type[Exception], words: str
) -> None:
    call, browser = scripted()
    task = asyncio.ensure_future(call.connect())
    browser.say("hello")
    opened = await browser.next_open()
    browser.say("failed", attempt=opened["attempt"], **report)
    with pytest.raises(error, match=words) as caught:
        await task
    if isinstance(caught.value, RateLimitedError):
        assert caught.value.retry_after == 3.0
    assert call.state == "failed" and words in call.message


async def test_a_lost_call_reconnects_with_a_fresh_key() -> None:
    keys = Keys()
    call, browser = scripted(keys, reconnect=FAST)
    await connected(call, browser)
    back = asyncio.ensure_future(call.wait_for_state("connected", timeout=2))
    browser.say("lost", attempt=browser.attempt, reason="the data channel closed")
    assert call.state == "disconnected" and "Reconnecting" in call.message
    browser.start_session(await browser.next_open())
    change = await back
    assert change.attempt == 1 and len(keys.minted) == 2 and call.message == ""
    # A late report from the old attempt changes nothing.
    browser.say("lost", attempt=1, reason="late")
    assert call.state == "connected"


async def test_levels_and_events_from_the_browser_feed_plots_and_turn_metrics() -> None:
    call, browser = scripted()
    plot = LevelPlot(call)
    await connected(call, browser)
    browser.say("levels", levels=[{"direction": "input", "rms": -20.0, "peak": -6.0, "ms": 50}])
    browser.say("levels", levels=[{"direction": "input", "rms": None, "peak": None, "ms": 50}])
    for event in (
        {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 900, "item_id": "item_1"},
        {"type": "response.created", "response": {"id": "resp_1", "status": "in_progress"}},
        {"type": "output_audio_buffer.started", "response_id": "resp_1"},
    ):
        browser.say("event", event=event)
    browser.say("levels", levels=[{"direction": "output", "rms": -18.0, "peak": -3.0, "ms": 50}])
    browser.say("event", event={"type": "output_audio_buffer.stopped", "response_id": "resp_1"})
    stopped = time.perf_counter()
    # The server is done sending, the browser is still playing its jitter buffer: the turn is not over yet.
    await asyncio.sleep(0.1)
    browser.say("levels", levels=[{"direction": "output", "rms": -20.0, "peak": -5.0, "ms": 50}])
    browser.say("stats", stats={"rtt_ms": 0.4, "jitter_ms": 1.5, "packets_lost": 0, "unknown": 1})
    assert not call.metrics.turns

    assert [v for _, v in plot.inputs] == [-20.0, -80.0] and [v for _, v in plot.outputs] == [-18.0, -20.0]
    assert call.input_meter.last is not None and call.input_meter.last.rms_dbfs == float("-inf")
    (turn,) = await call.metrics.wait_for_turns(1, timeout=2)
    assert turn.response_id == "resp_1" and turn.first_audio_ms is not None and turn.reply_seconds == 0.1
    # The reply ended with the browser's last loud reading, 0.1 s after the server's output_audio_buffer.stopped.
    assert turn.reply_end_ms is not None and turn.reply_end_ms >= turn.first_audio_ms + 90
    assert time.perf_counter() - stopped >= 0.1 + 0.25
    assert call.last_stats is not None and call.last_stats.rtt_ms == 0.4 and call.last_stats.packets_lost == 0


async def test_client_events_go_to_the_browser_and_waiters_see_its_events() -> None:
    call, browser = scripted()
    with pytest.raises(NetworkLostError):
        call.send_text("too early")
    await connected(call, browser)
    call.send_text("Hello!")
    call.update_session(instructions="Be brief.")
    call.cancel_response()
    sent = [m["event"]["type"] for m in browser.posted if m["kind"] == "send"]
    assert sent == ["conversation.item.create", "response.create", "session.update", "response.cancel"]
    assert call.config == {"instructions": "Be brief."}

    waiting = asyncio.ensure_future(call.wait_for("response.done", timeout=1))
    await asyncio.sleep(0)
    browser.say("event", event={"type": "response.done", "response": {"status": "failed", "status_details": {}}})
    assert (await waiting)["response"]["status"] == "failed"

    browser.tab("another-tab").say("lost", attempt=browser.attempt, reason="not the calling tab")
    assert call.state == "connected"  # only the page that makes the calls is listened to

    await call.disconnect()
    assert call.state == "disconnected" and browser.posted[-1] == {"kind": "hangup"}


async def test_a_reload_of_the_page_reconnects_in_the_new_page() -> None:
    keys = Keys()
    call, browser = scripted(keys, reconnect=FAST)
    await connected(call, browser)
    reloaded = browser.tab("tab2")
    reloaded.say("hello")
    assert {"kind": "hangup", "frontend": "tab1"} in browser.posted and call.state == "disconnected"
    opened = await reloaded.next_open()
    assert opened["frontend"] == "tab2"
    reloaded.start_session(opened)
    await call.wait_for_state("connected", timeout=2)
    assert len(keys.minted) == 2


async def test_messages_arriving_on_a_kernel_subshell_thread_are_handled_on_the_notebook_loop() -> None:
    call = BrowserCall(Keys())  # constructed in a cell: the notebook's loop is running
    threads: list[int] = []
    call.events.on(lambda event: threads.append(threading.get_ident()))

    async def subshell() -> None:  # JupyterLab may deliver widget messages on a subshell: its own thread and loop
        call.bridge.receive({"kind": "hello", "frontend": "tab1"})
        call.bridge.receive({"kind": "notice", "frontend": "tab1", "type": "rtkit.x"})

    worker = threading.Thread(target=asyncio.run, args=(subshell(),))
    worker.start()
    worker.join()
    for _ in range(100):
        if threads:
            break
        await asyncio.sleep(0.01)
    assert threads == [threading.get_ident()] and call.frontend_connected


async def test_the_connection_panel_shows_a_browser_calls_card_as_its_one_set_of_controls() -> None:
    call, browser = scripted()
    panel = ConnectionPanel(call)
    assert panel.children[0] is call.widget, "the call's own card (microphone, speaker, buttons) leads the panel"
    # One set of buttons and one status line for one call: the card's (Connect, Mute, Hang up), none of the panel's.
    assert not [w for w in _descendants(panel) if isinstance(w, widgets.Button | widgets.Dropdown)]
    browser.say("hello")
    connecting = asyncio.ensure_future(panel.connect())
    browser.start_session(await browser.next_open(), transport="websocket")
    await connecting
    assert panel.state == "connected" and call.widget.status == "connected" and call.widget.transport == "websocket"
    assert any("session.created" in line for line in panel.lines)
    await panel.disconnect()
    assert call.state == "disconnected" and browser.posted[-1] == {"kind": "hangup"}


def _descendants(box: widgets.Box) -> list[widgets.Widget]:
    found: list[widgets.Widget] = []
    for child in box.children:
        found.append(child)
        if isinstance(child, widgets.Box):
            found.extend(_descendants(child))
    return found


async def test_the_call_shows_as_its_card_and_shares_one_lifecycle_with_the_session() -> None:
    call, browser = scripted()
    assert isinstance(call, CallCore) and not isinstance(call, widgets.Widget)  # owns its widget, is not one
    data, _ = call._repr_mimebundle_()  # what a cell ending with `call` shows
    assert data["application/vnd.jupyter.widget-view+json"]["model_id"] == call.widget.model_id
    assert data["text/plain"] == repr(call)
    assert repr(call) == "BrowserCall('https://api.openai.com/v1', state='disconnected', transport=None)"
    call.muted = True  # rtkit.lab mutes text-turn calls; the card's Mute button flips the same synced trait
    assert call.widget.muted is True
    call.widget.muted = False
    assert call.muted is False
    await connected(call, browser)
    await call.close()  # async, as the session's: hangs up in the page and closes the card
    assert call.state == "disconnected" and browser.posted[-1] == {"kind": "hangup"} and call.widget.comm is None


def test_a_call_core_must_say_how_it_opens_a_transport_and_checks_the_microphone() -> None:
    with pytest.raises(TypeError) as refused:
        CallCore("ek_x")  # type: ignore[abstract]
    assert "_open_transport" in str(refused.value) and "check_microphone" in str(refused.value)
    # One connect path (a key, one fresh key after a refusal, the config, the restore) and one lifecycle: in
    # CallCore, for both calls.
    shared = ("_establish", "_open_with_one_fresh_key", "connect", "disconnect", "send", "transport_name")
    assert not [name for name in shared if name in vars(RealtimeSession) or name in vars(BrowserCall)]


async def test_the_page_origin_reaches_on_frontend_before_any_call() -> None:
    origins: list[str] = []
    call, browser = scripted(on_frontend=origins.append)
    browser.say("hello", origin="https://hub.example.org")
    assert origins == ["https://hub.example.org"] and call.frontend_connected


@pytest.mark.parametrize(
    ("report", "error"),
    [
        ({"ok": True}, None),
        ({"ok": False, "code": "microphone_denied", "message": "Microphone access is blocked."}, MicrophoneDeniedError),
        ({"ok": False, "code": "microphone_unavailable", "message": "No microphone."}, MicrophoneUnavailableError),
    ],
)
async def test_check_microphone_asks_the_page(report: dict[str, Any], error: type[Exception] | None) -> None:
    call, browser = scripted()
    browser.say("hello")
    checking = asyncio.ensure_future(call.check_microphone())
    await asyncio.sleep(0.01)
    (probe,) = [m for m in browser.posted if m["kind"] == "probe_microphone"]
    browser.say("microphone", probe=probe["probe"], **report)
    if error is None:
        await checking
    else:
        with pytest.raises(error, match=report["message"]):
            await checking
    assert call.state == "disconnected", "a probe is not a call"


# ---- the real thing: JupyterLab, a notebook, headless Chromium ------------------------------------------

skip_without_browser = pytest.mark.skipif(missing_lab_tools() is not None, reason=missing_lab_tools() or "")

#: The notebooks this module runs in JupyterLab, from the cell files in tests/widgets/cells/.
NOTEBOOKS = {
    "call.ipynb": notebook_cells("setup", "spoken_turn", "call", "barge_in", "call_recovery"),
    "denied.ipynb": notebook_cells("setup", "denied"),
    "websocket.ipynb": notebook_cells("setup", "spoken_turn", "websocket", "barge_in"),
    "scenarios.ipynb": notebook_cells("setup", "scenarios"),
}


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """One JupyterLab for the module's notebooks; the kernels learn the main key and where to note the keys
    they mint (for the secret scans) from its environment."""
    with lab_with_notebooks(tmp_path_factory.mktemp("lab"), NOTEBOOKS) as server:
        yield server


def minted_keys(lab: Lab) -> list[str]:
    return list(json.loads((lab.root.parent / "minted.json").read_text()))


@pytest.fixture(scope="module")
def call_run(lab: Lab) -> NotebookRun:
    return run_in_lab(lab, "call.ipynb", allow_microphone=True, shot="connected")


@pytest.mark.browser
@skip_without_browser
def test_the_browser_tab_makes_the_call_and_the_kernel_hears_everything(call_run: NotebookRun) -> None:
    why = call_run.explain()
    assert "ALL CHECKS PASSED" in call_run.output("ALL CHECKS PASSED"), why
    assert "CONNECTED over webrtc" in call_run.output("CONNECTED"), why
    assert "TURN TurnRecord" in call_run.output("TURN"), why
    assert "RECOVERED at attempt 1" in call_run.output("RECOVERED"), why
    # The session's interrupt_response is false here (set for the beeps): the page cancels the reply itself.
    barge_in = call_run.output("BARGE-IN")
    assert "BARGE-IN over webrtc played" in barge_in and "cancelled True" in barge_in, why
    assert "connected" in call_run.widget_text and "webrtc" in call_run.widget_text, why
    assert not call_run.page_errors, why


@pytest.mark.browser
@skip_without_browser
def test_the_saved_notebook_and_its_widget_state_hold_no_key(call_run: NotebookRun, lab: Lab) -> None:
    minted = minted_keys(lab)
    assert len(minted) >= 2 and all(k.startswith("ek_") for k in minted)
    saved = call_run.saved["metadata"]["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    calls = [m["state"] for m in saved.values() if m["state"].get("_anywidget_id", "").endswith("BrowserCallWidget")]
    assert calls and calls[0]["status"] == "connected", "the saved widget state should hold the call's card"
    for key in minted:
        assert key not in call_run.saved_text
    assert not EK.findall(call_run.saved_text)
    assert MAIN_KEY not in call_run.saved_text


@pytest.mark.browser
@skip_without_browser
def test_a_denied_microphone_is_explained_in_the_widget_and_raised_in_python(lab: Lab) -> None:
    run = run_in_lab(lab, "denied.ipynb", allow_microphone=False, shot="microphone_denied", timeout_s=40)
    why = run.explain()
    assert "RAISED MicrophoneDeniedError: Microphone access is blocked" in run.output("RAISED"), why
    assert "failed" in run.widget_text and "Microphone access is blocked" in run.widget_text, why
    assert not run.page_errors, why


@pytest.mark.browser
@skip_without_browser
def test_without_webrtc_the_browser_falls_back_to_a_websocket_and_says_so(lab: Lab) -> None:
    run = run_in_lab(
        lab,
        "websocket.ipynb",
        allow_microphone=True,
        shot="websocket_fallback",
        timeout_s=40,
        init_script="delete window.RTCPeerConnection;",  # a browser (or policy) without WebRTC
    )
    why = run.explain()
    assert "FELL BACK to websocket - This browser has no WebRTC" in run.output("FELL BACK"), why
    assert "BARGE-IN over websocket played" in run.output("BARGE-IN"), why
    assert "websocket ·" in run.widget_text and "no WebRTC" in run.widget_text, why
    assert not run.page_errors, why


@pytest.mark.browser
@skip_without_browser
def test_the_classic_failures_in_the_browser_tab_are_met_by_the_call(lab: Lab) -> None:
    """A key that expired on the way (a real 401 to the browser's POST /calls), then the scenario panel: the
    network drops, the API rate limits and fails at mint, the key expires, the microphone is asked for, and
    WebRTC is blocked mid-call (the browser falls back to its WebSocket)."""
    run = run_in_lab(lab, "scenarios.ipynb", allow_microphone=True, shot="scenarios", timeout_s=150)
    why = run.explain()
    assert "FRESH KEY after the API refused the expired one; connected over webrtc" in run.output("FRESH KEY"), why
    assert "SCENARIOS PASSED" in run.output("SCENARIOS PASSED"), why
    summary = run.output("SCENARIOS PASSED")
    assert "found and opened in the browser" in summary and "fell back to websocket" in summary, why
    assert "RATE LIMITED 2.0 - " in run.output("RATE LIMITED"), why
    assert "API DOWN then back: connected at attempt 2" in run.output("API DOWN"), why
    assert not run.page_errors, why
    for key in minted_keys(lab):
        assert key not in run.saved_text
