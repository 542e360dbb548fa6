"""Recording both sides of a ``BrowserCall``: real Chromium in a real JupyterLab, its fake microphone beeping, an
emulator in the kernel that answers with a 3 s tone. The page records what it sent and what it played on its
AudioContext clock and hands it over when the kernel asks; the notebook (``tests/widgets/cells/recording.py``)
checks, over WebRTC and over the WebSocket, that the beep sits on the left where the server heard it (its decoded
input, by cross-correlation: within 1 ms over the WebSocket, one 20 ms frame over WebRTC) and where its VAD
placed it, and the reply on the right where the page played it (within one 20 ms frame), that a barge-in cuts the right
channel where playback stopped, that ``record_audio(call)`` gives the same recording with per-turn clips, and
that ``rtkit.lab.listen`` replays the question and the reply."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator

import numpy as np
import pytest

pytest.importorskip("anywidget", reason="needs anywidget (pip install -e '.[lab]')")

from rtkit.audio.pcm import tone
from rtkit.lab import listen
from rtkit.recording import AudioRecording, record_audio
from tests.jupyterlab import NotebookRun, lab_with_notebooks, notebook_cells, run_in_lab
from tests.widgets.test_browser_call import ScriptedBrowser, connected, scripted, skip_without_browser


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NotebookRun]:
    notebook = {"recording.ipynb": notebook_cells("spoken_turn", "recording")}
    with lab_with_notebooks(tmp_path_factory.mktemp("lab"), notebook) as lab:
        yield run_in_lab(lab, "recording.ipynb", allow_microphone=True, shot="recording", timeout_s=90)


def _lines(run: NotebookRun, *markers: str) -> str:
    return "\n".join(line for text in run.outputs for line in text.splitlines() if line.startswith(markers))


@pytest.mark.browser
@skip_without_browser
@pytest.mark.parametrize("transport", ["webrtc", "websocket"])
def test_the_stereo_recording_holds_the_users_beep_left_where_the_vad_heard_it_and_the_reply_right_where_it_played(
    run: NotebookRun, transport: str
) -> None:
    why = run.explain()
    turn = run.output(f"TURN {transport}")
    # The measured offsets, for the log (-rP).
    print(_lines(run, f"TURN {transport}", f"MAP {transport}", f"STRETCH {transport}", f"CLIPS {transport}"))
    assert re.search(rf"TURN {transport}: left onset - VAD start [+-]\d+\.\d ms", turn), why
    placed = run.output(f"MAP {transport}")
    assert re.search(rf"MAP {transport}: left onset - server's onset [+-]\d+\.\d ms", placed), why
    assert f"CLIPS {transport}: user at" in run.output(f"CLIPS {transport}"), why
    # Over WebRTC the tone's length is checked against the jitter buffer's own counters (getStats).
    stretch = run.output(f"STRETCH {transport}")
    assert bool(re.search(r"the tone played \d\.\d{3} s", stretch)) == (transport == "webrtc"), why
    assert not run.page_errors, why


@pytest.mark.browser
@skip_without_browser
@pytest.mark.parametrize("transport", ["webrtc", "websocket"])
def test_a_barge_in_cuts_the_right_channel_where_the_page_stopped_playing(run: NotebookRun, transport: str) -> None:
    why = run.explain()
    print(_lines(run, f"BARGE-IN {transport}", f"LISTEN {transport}"))
    assert f"BARGE-IN {transport}: played" in run.output(f"BARGE-IN {transport}"), why
    assert f"LISTEN {transport}: ['the question 1'" in run.output(f"LISTEN {transport}"), why
    assert "RECORDING PASSED" in run.output("RECORDING PASSED"), why


# ---- the kernel's side of the hand-over, with a scripted page -------------------------------------------------

RATE = 24_000


def _answer_recording(browser: ScriptedBrowser, page_now: float) -> None:
    """Answer the kernel's latest ``recording`` request as a page whose clock reads ``page_now``: 0.4 s kept, the
    user's beep 0.1 s in (where the VAD placed it), the reply's tone from 0.25 s (a WebRTC span: no end)."""
    (request,) = [m for m in browser.posted if m["kind"] == "recording"][-1:]
    left, right = np.zeros(int(0.4 * RATE), np.int16), np.zeros(int(0.4 * RATE), np.int16)
    left[int(0.1 * RATE) : int(0.2 * RATE)] = tone(0.1, 300.0)
    right[int(0.25 * RATE) :] = tone(0.15, 440.0)
    start = page_now - 0.4
    content = {
        "kind": "recording",
        "frontend": browser.frontend,
        "request": request["request"],
        "start": start,
        "now": page_now,
        "outputLatency": 0.03,
        "origins": [{"t": start - 1.0, "transport": "webrtc"}],
        "users": [{"item_id": "item_u", "start": start + 0.1, "end": start + 0.2}],
        "replies": [{"item_id": "item_a", "start": start + 0.22, "end": None}],
    }
    browser.page.receive(content, [left.tobytes(), right.tobytes()])


async def _fetched(recording: AudioRecording, browser: ScriptedBrowser, page_now: float) -> None:
    fetching = asyncio.ensure_future(recording.fetch())
    await asyncio.sleep(0.01)
    _answer_recording(browser, page_now)
    await fetching


async def test_a_browser_calls_recording_is_the_pages_hand_over_on_the_kernels_clock_with_its_turns() -> None:
    call, browser = scripted()
    await connected(call, browser)
    for item in ({"id": "item_u", "role": "user"}, {"id": "item_a", "role": "assistant"}):
        browser.say("event", event={"type": "conversation.item.added", "item": {"type": "message", **item}})
    rec = record_audio(call)
    assert rec.seconds == 0 and rec.clips() == []  # nothing until the page hands it over
    await asyncio.sleep(0.5)
    await _fetched(rec, browser, page_now=1000.0)
    # The page kept 0.4 s up to "now", 0.5 s after the recording began: it starts about 0.1 s in.
    left, right = rec.left, rec.right
    on_l, on_r = np.flatnonzero(left)[0] / RATE, np.flatnonzero(right)[0] / RATE
    assert abs(on_l - 0.2) <= 0.02 and abs(on_r - on_l - 0.15) <= 1 / RATE, (on_l, on_r)
    user, reply = rec.clips()
    assert (user.item_id, reply.item_id) == ("item_u", "item_a")
    # Two samples: the track is placed on whole samples (half a sample of rounding), and a sine's first sample
    # is 0, so the first non-zero sample is one after the tone's start.
    assert abs(user.start - on_l) <= 2 / RATE and abs(user.end - user.start - 0.1) <= 1 / RATE, user
    # A reply's clip runs from its first to its last sound (the span the page gave had no end).
    assert abs(reply.start - on_r) <= 2 / RATE and abs(reply.end - reply.start - 0.15) <= 0.002, reply
    # stop() ends the recording there: a later hand-over is cut at that point.
    rec.stop()
    await asyncio.sleep(0.2)
    await _fetched(rec, browser, page_now=1000.2)
    assert rec.seconds <= 0.5 + 0.02 + 0.02, rec.seconds
    # rtkit.lab.listen replays the page's recording from the oldest audio it kept: the question and the reply.
    listening = asyncio.ensure_future(listen(call))
    await asyncio.sleep(0.01)
    _answer_recording(browser, page_now=1000.3)
    heard = await listening
    assert [label for label, _ in heard.clips] == ["the question", "the reply"], heard
    assert heard.clips[0][1].size == int(0.1 * RATE) and "recorded both sides" in heard.note
