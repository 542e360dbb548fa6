"""What a widget leaves where widgets do not render, and the lesson helpers (``rtkit.lab``), against the emulator."""

from __future__ import annotations

import asyncio
import base64

import numpy as np
import pytest

from rtkit.audio.pcm import tone
from rtkit.audio.sources import PcmSource, SilenceSource, SpeechSource
from rtkit.lab import LabBackend, check, listen
from rtkit.session import RealtimeSession
from rtkit.widgets import ConnectionPanel, KeyPanel, LatencyPlot, LevelPlot, ScenarioPanel

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


async def test_each_widget_output_carries_a_static_copy_beside_its_view(backend: LabBackend) -> None:
    session = RealtimeSession(backend.keys, base_url=backend.base_url)
    panels = [KeyPanel(backend.keys), ConnectionPanel(session), ScenarioPanel(session, backend)]
    plots = [LevelPlot(session), LatencyPlot(session.metrics)]
    for widget in panels:
        bundle = widget._repr_mimebundle_()
        assert WIDGET_VIEW in bundle and "rtkit-static" in bundle["text/html"]
    for widget in plots:
        bundle = widget._repr_mimebundle_()
        assert WIDGET_VIEW in bundle and base64.b64decode(bundle["image/png"]).startswith(b"\x89PNG")


async def test_the_connection_panels_static_copy_is_its_log_oldest_first(backend: LabBackend) -> None:
    session = RealtimeSession(backend.keys, base_url=backend.base_url, source=SilenceSource(), transport="webrtc")
    panel = ConnectionPanel(session)
    await panel.connect()
    session.send_text("hello")
    await session.wait_for("response.done", timeout=10)
    await panel.disconnect()
    copy = panel.static_html()
    order = ["● connecting", "session.created", "● connected", "response.done status=completed", "● disconnected"]
    positions = [copy.index(line) for line in order]
    assert positions == sorted(positions) and "<b>disconnected</b>" in copy


async def test_the_key_panels_static_copy_says_when_the_key_expires_never_the_key(backend: LabBackend) -> None:
    panel = KeyPanel(backend.keys)
    key = await panel.mint()
    copy = panel.static_html()
    assert key.fingerprint in copy and key.value not in copy and "expires at" in copy
    panel.close()


async def test_the_level_plots_copy_ends_at_its_last_reading_with_its_speech_line(backend: LabBackend) -> None:
    session = RealtimeSession(
        backend.keys, base_url=backend.base_url, source=PcmSource(tone(1.0), 24_000, lead_seconds=0.2)
    )
    plot = LevelPlot(session)
    async with session:
        await session.wait_for("output_audio_buffer.stopped", timeout=15)
    ax = plot.figure(static=True).axes[0]
    assert ax.get_title() and ax.get_xlabel() == "seconds before the last reading" and ax.get_ylabel()
    assert any(line.get_ydata()[0] == -45 for line in ax.get_lines())  # the speech line
    drawn = [line for line in ax.get_lines() if len(line.get_xdata()) > 1 and line.get_ydata()[0] != -45]
    assert drawn and max(max(line.get_xdata()) for line in drawn) == pytest.approx(0, abs=0.05)


async def test_listen_plays_back_the_recorded_question_and_each_reply(backend: LabBackend) -> None:
    source = SpeechSource(lead_seconds=0.3)
    call = backend.call({"instructions": "Repeat."}, source=source, transport="webrtc")
    await call.connect()
    await call.wait_for("response.done", timeout=30)
    await call.metrics.wait_for_turns(1, timeout=30)
    await call.disconnect()
    heard = await listen(call)
    assert heard.note.startswith("The kit played a recorded sentence") and source.text in heard.note
    assert [label for label, _ in heard.clips] == ["the question (what the kit played)", "reply"]
    question, reply = (pcm.size / 24_000 for _, pcm in heard.clips)
    assert abs(reply - question) < 1.0  # the emulator echoes what it heard
    page = heard._repr_html_()
    assert page.count("<audio controls") == 2 and "data:audio/mpeg;base64," in page


async def test_listen_pairs_each_tone_the_kit_played_with_its_reply_turn_by_turn(backend: LabBackend) -> None:
    """Lesson 5's case: a ``PcmSource`` of two tones apart by more than the VAD's window is two questions."""
    pause = np.zeros(int(1.6 * 24_000), dtype=np.int16)
    source = PcmSource(np.concatenate([tone(0.5), pause, tone(0.5, frequency=660.0), pause]), 24_000, 0.3)
    vad = {"type": "server_vad", "silence_duration_ms": 300}
    call = backend.call({"audio": {"input": {"turn_detection": vad}}}, source=source, transport="webrtc")
    await call.connect()
    await call.metrics.wait_for_turns(2, timeout=30)
    await asyncio.sleep(1.0)  # the second reply plays out
    await call.disconnect()
    heard = await listen(call)
    labels = [label for label, _ in heard.clips]
    assert labels == [
        "the question 1 (what the kit played)",
        "reply 1",
        "the question 2 (what the kit played)",
        "reply 2",
    ], labels
    assert "nobody spoke" in heard.note
    asked = [pcm.size / 24_000 for label, pcm in heard.clips if label.startswith("the question")]
    assert all(0.55 <= seconds <= 0.75 for seconds in asked), asked  # each tone, padded up to 0.1 s each side


async def test_listen_says_there_is_nothing_to_replay_when_the_audio_played_live(
    backend: LabBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RTKIT_AUDIO", "kernel")
    heard = await listen(backend.call())
    assert heard.clips == [] and "Nothing to replay" in heard.note


def test_check_passes_quietly_and_fails_with_what_the_reader_should_have_seen() -> None:
    check(True, "anything")
    with pytest.raises(AssertionError, match=r"^Expected: a green light\. "):
        check(False, "a green light")


async def test_only_on_runs_a_cell_on_its_backend_and_says_what_was_skipped(
    backend: LabBackend, capsys: pytest.CaptureFixture[str]
) -> None:
    assert backend.only_on("emulator", "it injects faults")
    assert capsys.readouterr().out == ""
    assert not backend.only_on("real", "it needs the real API")
    assert capsys.readouterr().out == "skipped on the emulator: it needs the real API\n"
