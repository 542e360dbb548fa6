"""The widgets driven through their Python API (what their buttons do), against the real emulator."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from rtkit.audio.pcm import tone
from rtkit.audio.sinks import RecorderSink
from rtkit.audio.sources import MicrophoneSource, PcmSource
from rtkit.cache import TokenCache
from rtkit.errors import ConfigurationError, MicrophoneUnavailableError, UpstreamError
from rtkit.lab import LabBackend, start_backend
from rtkit.session import RealtimeSession, ReconnectPolicy
from rtkit.widgets import BrowserCall, ConnectionPanel, KeyPanel, LatencyPlot, LevelPlot, ScenarioPanel
from tests.conftest import preflight_for

FAST = ReconnectPolicy(max_attempts=4, initial_delay=0.05, max_delay=0.3)


def _has_input_device() -> bool:
    try:
        import sounddevice as sd
    except OSError:
        return False
    return any(device["max_input_channels"] > 0 for device in sd.query_devices())


async def test_backend_defaults_to_the_emulator_without_an_api_key(backend: LabBackend) -> None:
    assert backend.emulator is not None and not backend.real
    assert "emulator" in backend.describe()


async def test_the_lesson_call_is_on_the_side_the_reader_chose(
    backend: LabBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RTKIT_AUDIO", raising=False)
    recorded = backend.call({"instructions": "Repeat."}, source=PcmSource(tone(0.2), 24_000), transport="websocket")
    assert isinstance(recorded, RealtimeSession) and isinstance(recorded.source, PcmSource)
    assert isinstance(recorded.sink, RecorderSink) and recorded.transport_choice == "websocket"

    monkeypatch.setenv("RTKIT_AUDIO", "kernel")
    kernel = backend.call(reconnect=FAST, frontend_timeout=1.0)  # a browser-only option is dropped, not an error
    assert isinstance(kernel, RealtimeSession) and isinstance(kernel.source, MicrophoneSource)
    if _has_input_device():  # a laptop: the kernel side really takes the microphone
        await kernel.connect()
        assert kernel.state == "connected"
        await kernel.disconnect()
    else:  # CI, a container: no microphone is said, typed, with a hint
        with pytest.raises(MicrophoneUnavailableError):
            await kernel.connect()
        assert kernel.state == "failed"

    monkeypatch.setenv("RTKIT_AUDIO", "Browser")
    monkeypatch.delenv("JUPYTERHUB_SERVICE_PREFIX", raising=False)
    browser = backend.call(jitter_packets=2)
    # The page reaches the kernel's emulator through the Jupyter server (jupyter-server-proxy, a lab dependency).
    assert isinstance(browser, BrowserCall) and backend.emulator is not None
    assert browser.base_url == f"proxy/{backend.emulator.port}/v1" and browser.transport_choice == "auto"
    monkeypatch.setenv("JUPYTERHUB_SERVICE_PREFIX", "/user/ada/")
    on_a_hub = backend.call(transport="webrtc")  # the proxy carries no UDP: WebRTC could never connect
    assert isinstance(on_a_hub, BrowserCall) and on_a_hub.transport_choice == "websocket"
    assert any("WebSocket" in note for note in backend.notes)
    with pytest.raises(ConfigurationError, match="Unknown audio side 'speaker'"):
        backend.call(audio="speaker")


async def test_a_browser_call_opens_a_restricted_emulator_to_its_page_only(backend: LabBackend) -> None:
    """The lab's emulator answers any page, as the service does; one started with a list of origins (here, none)
    is opened to the notebook's page when the page shows the call, and to no other."""
    page = "http://127.0.0.1:8888"
    preflight = preflight_for(page, "authorization")
    restricted = await start_backend(cors_origins=[])
    try:
        call = restricted.browser_call()
        async with httpx.AsyncClient() as http:
            default = await http.options(f"{backend.base_url}/realtime/calls", headers=preflight)
            before = await http.options(f"{restricted.base_url}/realtime/calls", headers=preflight)
            call.bridge.receive({"kind": "hello", "frontend": "tab1", "origin": page})  # the page shows it
            after = await http.options(f"{restricted.base_url}/realtime/calls", headers=preflight)
            other = await http.options(
                f"{restricted.base_url}/realtime/calls", headers=preflight_for("http://127.0.0.1:9999", "authorization")
            )
    finally:
        await restricted.close()
    assert default.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-origin" not in before.headers
    assert after.headers["access-control-allow-origin"] == page
    assert "access-control-allow-origin" not in other.headers


async def test_key_panel_mints_shows_the_fingerprint_and_counts_down(backend: LabBackend) -> None:
    panel = KeyPanel(backend.keys)
    key = await panel.mint()
    assert key.value.startswith("ek_")
    assert key.fingerprint in panel._key.value and key.value not in panel._key.value
    assert panel.countdown.startswith(("· expires in 9:5", "· expires in 10:00"))
    panel.close()


async def test_key_panel_over_a_cache_reports_hits(backend: LabBackend) -> None:
    cache = TokenCache(lambda session: backend.issuer.issue(session))
    panel = KeyPanel(cache=cache)
    first, second = await panel.mint(), await panel.mint()
    assert first.value == second.value and panel.hit is True
    assert "cache hit" in panel._key.value
    panel.close()


async def test_key_panel_shows_a_failure_in_plain_words(backend: LabBackend) -> None:
    assert backend.emulator is not None
    backend.emulator.faults.fail_next_mints(10, status=503, retry_after=0)
    backend.issuer.max_attempts = 1
    panel = KeyPanel(backend.keys)
    with pytest.raises(UpstreamError):
        await panel.mint()
    assert "overloaded" in panel._status.value and "✖" in panel._status.value
    panel.close()


async def test_connection_panel_connects_logs_events_and_disconnects(backend: LabBackend) -> None:
    session = RealtimeSession(backend.keys, base_url=backend.base_url)
    panel = ConnectionPanel(session)
    panel._transport.value = "webrtc"
    await panel.connect()
    assert panel.state == "connected" and "webrtc" in panel._status.value
    assert "#2e7d32" in panel._light.value
    session.send_text("hello panel")
    await session.wait_for("response.done", timeout=10)
    await panel.disconnect()
    panel._filter.value = "response.done"
    assert [line.split()[-2] for line in panel.visible_lines()] == ["response.done"]
    assert [c.state for c in panel.states] == ["connecting", "connected", "disconnected"]
    panel._filter.value = ""
    assert not any("output_audio_transcript.delta" in line for line in panel.visible_lines())
    panel._noisy.value = True
    assert any("output_audio_transcript.delta" in line for line in panel.visible_lines())


async def test_plots_keep_up_by_redrawing_on_a_timer(backend: LabBackend) -> None:
    from rtkit.audio.pcm import tone

    session = RealtimeSession(
        backend.keys,
        base_url=backend.base_url,
        source=PcmSource(tone(1.5), 24_000, lead_seconds=0.2),
        transport="webrtc",
    )
    levels = LevelPlot(session, fps=4)
    latency = LatencyPlot(session.metrics)
    started = time.monotonic()
    async with session:
        await session.wait_for("output_audio_buffer.stopped", timeout=15)
        await asyncio.sleep(0.3)
    elapsed = time.monotonic() - started
    assert len(levels.inputs) > 50 and len(levels.outputs) > 50
    # 50 level readings a second each way, but at most 4 redraws a second
    assert 1 <= levels.redraws <= 4 * elapsed + 2
    assert len(levels.inputs) + len(levels.outputs) >= 20 * levels.redraws
    assert bytes(levels._image.value).startswith(b"\x89PNG")
    assert latency.figure().axes[1].get_title().startswith("per turn")
    assert latency.snapshot().data.startswith(b"\x89PNG")
    assert len(session.metrics.turns) == 1


@pytest.mark.parametrize("name", ["network_drop", "upstream_429", "upstream_500", "expire_key"])
async def test_scenarios_that_recover(backend: LabBackend, name: str) -> None:
    session = RealtimeSession(backend.keys, base_url=backend.base_url, transport="webrtc", reconnect=FAST)
    panel = ScenarioPanel(session, backend)
    async with session:
        result = await panel.run(name)
    assert result.recovered, result.summary()
    if name != "expire_key":
        assert result.states[:3] == ["disconnected", "connecting", "connected"]
    else:
        assert result.error_code == "token_expired"


async def test_scenario_no_microphone_is_typed(backend: LabBackend) -> None:
    result = await ScenarioPanel(RealtimeSession(backend.keys, base_url=backend.base_url), backend).run("mic_denied")
    assert result.error_code == "microphone_unavailable" and result.recovered
    assert "Hint:" in result.summary()


async def test_scenario_webrtc_blocked_falls_back_to_websocket(backend: LabBackend) -> None:
    panel = ScenarioPanel(RealtimeSession(backend.keys, base_url=backend.base_url), backend)
    result = await panel.run("webrtc_unavailable")
    assert result.recovered and "fell back to websocket" in result.summary()
    assert backend.emulator is not None and not backend.emulator.faults.block_media


async def test_scenario_webrtc_blocked_mid_call_the_call_itself_falls_back(backend: LabBackend) -> None:
    session = RealtimeSession(backend.keys, base_url=backend.base_url, connect_timeout=2.0, reconnect=FAST)
    panel = ScenarioPanel(session, backend)
    async with session:
        assert session.transport_name == "webrtc"
        result = await panel.run("webrtc_unavailable")
        assert result.recovered and session.transport_name == "websocket", result.summary()
    assert result.states[:3] == ["disconnected", "connecting", "connected"], result.states
    assert "fell back to websocket" in result.summary()
