"""Headless Chromium opens the quick-start lesson in a real JupyterLab and runs it like a learner would.

nbval runs the notebooks in a kernel, but no browser: it cannot show that the ipywidgets front end
(the ``jupyterlab_widgets`` lab extension) is found, that the ``KeyPanel`` and ``ConnectionPanel``
views render from the kernel's comm messages, or that their HTML (state light, masked key) displays as
HTML rather than as a ``KeyPanel(children=...)`` repr. Here Debian's Chromium, driven by Playwright,
loads JupyterLab from the venv, runs the cells through the Run menu against the emulator, and keeps
screenshots in ``artifacts/`` for a human to look at.

The server sees a temporary copy of ``notebooks/`` (outputs stripped, so everything asserted on was
produced by this run) and temporary Jupyter config/data/runtime dirs, so nothing from the developer's
profile changes what renders, and nothing the browser does reaches the repository's notebooks.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import shutil
import wave
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.chromium import ARTIFACTS, BASE_ARGS, launched_chromium, require_chromium
from tests.jupyterlab import SCRIPTED, Lab, NotebookRun, missing_lab_tools, run_in_lab, running_lab, strip_outputs

pytestmark = pytest.mark.browser

require_chromium()
if missing_lab_tools() is not None:
    pytest.skip(missing_lab_tools() or "", allow_module_level=True)
from playwright.async_api import Browser, Locator, Page, expect  # noqa: E402
from playwright.async_api import TimeoutError as PlaywrightTimeout  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"
HELLO_WAV = REPO / "rtkit" / "audio" / "data" / "hello.wav"
NOTEBOOK = "01_quickstart.ipynb"
SCREENSHOT = ARTIFACTS / "jupyterlab_quickstart.png"
CHROMIUM_ARGS = BASE_ARGS
#: Tall enough that the whole lesson fits: JupyterLab scrolls inside its own panel, so a "full page"
#: screenshot is only ever the viewport, and off-screen cells are skipped by content-visibility.
VIEWPORT = {"width": 1280, "height": 2200}
STDERR = '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'
#: A widget view mounted by ipywidgets' lab manager (its renderer sets no ``data-mime-type``).
WIDGET_VIEW = ".jp-OutputArea-output > .jupyter-widgets"
UI_TIMEOUT = 10_000
PROMPT_NUMBERED = re.compile(r"^\[\d+\]:$")
#: True once every listed code cell shows an execution count, or as soon as a cell shows an error
#: (JupyterLab stops a run at the first error, so the remaining cells would stay unnumbered).
CELLS_DONE = """([count, stderr]) => {
  const prompts = [...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt')].slice(0, count);
  const failed = [...document.querySelectorAll(stderr)].some((e) => /Traceback|Error/.test(e.textContent));
  return failed || (prompts.length === count && prompts.every((p) => /^\\[\\d+\\]:$/.test(p.textContent.trim())));
}"""


@dataclass
class LessonLab:
    lab: Lab
    repo_digest: str

    @property
    def url(self) -> str:
        return self.lab.url

    @property
    def token(self) -> str:
        return self.lab.token

    @property
    def root(self) -> Path:
        return self.lab.root


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def code_cells(path: Path) -> int:
    return sum(cell["cell_type"] == "code" for cell in json.loads(path.read_text())["cells"])


def lesson_copy(tmp_path: Path) -> Path:
    """The lessons, copied with the quick start's outputs stripped: everything asserted on is this run's."""
    root = tmp_path / "notebooks"
    shutil.copytree(NOTEBOOKS, root, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    strip_outputs(root / NOTEBOOK)
    return root


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[LessonLab]:
    """JupyterLab serving a copy of the lessons, with XSRF checks on and no ``OPENAI_API_KEY`` (the emulator)."""
    repo_digest = digest(NOTEBOOKS / NOTEBOOK)
    with running_lab(tmp_path, lesson_copy(tmp_path)) as server:
        yield LessonLab(server, repo_digest)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with launched_chromium(CHROMIUM_ARGS) as chromium:
        yield chromium


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    """A tab for the lab; whatever happens, its last state is kept as ``jupyterlab_quickstart_final.png``
    (after a failure, that is the screen to look at, next to the server log in the test's tmp dir)."""
    tab = await browser.new_page(viewport=VIEWPORT)
    try:
        yield tab
    finally:
        ARTIFACTS.mkdir(exist_ok=True)
        with contextlib.suppress(Exception):
            await tab.screenshot(path=str(ARTIFACTS / "jupyterlab_quickstart_final.png"), timeout=5_000)
        await tab.close()


async def run_from_menu(page: Page, item: str) -> None:
    """What a learner does: open the menu bar's Run menu and click the item (no shortcut or command id,
    whose bindings differ between JupyterLab versions and keyboard layouts)."""
    await page.locator(".lm-MenuBar-item", has_text=re.compile(r"^Run$")).click()
    await page.locator(".lm-Menu-item", has_text=re.compile(rf"^{re.escape(item)}")).click()


async def prompts(page: Page) -> list[str]:
    return [p.strip() for p in await page.locator(".jp-Notebook .jp-CodeCell .jp-InputPrompt").all_inner_texts()]


async def errors_shown(page: Page) -> list[str]:
    return [t for t in await page.locator(STDERR).all_inner_texts() if "Traceback" in t or "Error" in t]


def state_label(panel: Locator) -> Locator:
    """The word beside the state light (``light()`` renders ``<span dot></span> <b>state</b>``)."""
    return panel.locator(".widget-html-content:has(span[style*='border-radius']) > b").first


async def light_colour(output: Locator) -> str:
    """The state light's dot colour as the browser painted it (only true if the HTML was rendered)."""
    dot = output.locator(".widget-html-content span[style*='border-radius']").first
    return str(await dot.evaluate("(e) => getComputedStyle(e).backgroundColor"))


async def test_quickstart_runs_in_jupyterlab_and_its_widgets_render_and_connect(lab: LessonLab, page: Page) -> None:
    """The issue-5 check: a learner's browser runs lesson 1 and sees a masked key and a green light."""
    page_errors: list[str] = []
    page.on("pageerror", lambda exc: page_errors.append(str(exc)))
    await page.goto(f"{lab.url}/lab/tree/{NOTEBOOK}?token={lab.token}")
    # JupyterLab adds cells to the DOM in batches after the panel appears: wait for the last one.
    count = code_cells(lab.root / NOTEBOOK)
    cells = page.locator(".jp-Notebook .jp-CodeCell")
    await cells.nth(count - 1).wait_for(timeout=30_000)
    # The kernel has started and the notebook is connected to it (the toolbar's circle, "Idle").
    await page.locator(".jp-NotebookPanel .jp-Notebook-ExecutionIndicator[data-status='idle']").wait_for(timeout=30_000)
    assert await cells.count() == count == 7, await prompts(page)

    # Everything but the last cell, which closes the session and would turn the light grey again.
    await cells.nth(count - 1).locator(".jp-InputPrompt").click()
    await run_from_menu(page, "Run All Above Selected Cell")
    try:
        await page.wait_for_function(CELLS_DONE, arg=[count - 1, STDERR], timeout=60_000, polling=250)
    except PlaywrightTimeout:
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "jupyterlab_quickstart_timeout.png"), full_page=True)
        kernel = await page.locator(".jp-NotebookPanel .jp-Notebook-ExecutionIndicator").get_attribute("data-status")
        raise AssertionError(f"cells not done in 60 s: prompts {await prompts(page)}, kernel {kernel}") from None
    assert not await errors_shown(page), "\n\n".join(await errors_shown(page))
    assert all(PROMPT_NUMBERED.match(p) for p in (await prompts(page))[:-1]), await prompts(page)

    # The widget views rendered (not the text/plain repr a notebook shows when the lab extension is missing).
    # Views mount asynchronously after the comm opens, so these wait rather than read once.
    key_out, conn_out = cells.nth(1).locator(WIDGET_VIEW), cells.nth(2).locator(WIDGET_VIEW)
    await expect(page.locator(WIDGET_VIEW)).to_have_count(2, timeout=UI_TIMEOUT)
    await expect(page.get_by_text(re.compile(r"(KeyPanel|ConnectionPanel)\(children="))).to_have_count(0)
    await expect(page.get_by_text("Error displaying widget")).to_have_count(0)

    # KeyPanel: the masked key and its countdown, never the key itself.
    await expect(key_out.locator("code").first).to_have_text(re.compile(r"^ek_…[A-Za-z0-9]{4}$"), timeout=UI_TIMEOUT)
    await expect(key_out).to_contain_text(re.compile(r"expires in \d+:\d\d"), timeout=UI_TIMEOUT)
    assert not re.search(r"ek_[A-Za-z0-9]{8,}", await key_out.inner_text()), "the full key reached the page"

    # ConnectionPanel: a green "connected" light, the transport the session settled on, and the event log
    # (redrawn from the kernel by its throttle) down to the completed turn.
    await expect(state_label(conn_out)).to_have_text("connected", timeout=UI_TIMEOUT)
    assert await light_colour(conn_out) == "rgb(46, 125, 50)"  # STATE_COLOURS["connected"]
    await expect(conn_out).to_contain_text(re.compile(r"connected over (webrtc|websocket)"), timeout=UI_TIMEOUT)
    await expect(conn_out).to_contain_text("● connected", timeout=UI_TIMEOUT)
    await expect(conn_out).to_contain_text("response.done status=completed", timeout=UI_TIMEOUT)

    # The turn: the echo model's reply transcript printed by cell 4, and the metrics cell after it.
    await expect(cells.nth(3).locator(".jp-OutputArea")).to_contain_text("reply: [echo of")
    await expect(cells.nth(4).locator(".jp-OutputArea")).to_contain_text(re.compile(r"connected over \w+ in \d+ ms"))

    ARTIFACTS.mkdir(exist_ok=True)
    await cells.nth(2).scroll_into_view_if_needed()
    await page.screenshot(path=str(SCREENSHOT), full_page=True)
    await cells.nth(1).screenshot(path=str(ARTIFACTS / "jupyterlab_quickstart_keypanel.png"))
    await cells.nth(2).screenshot(path=str(ARTIFACTS / "jupyterlab_quickstart_connection.png"))

    # The last cell closes the session: the live view follows the kernel to "disconnected", without errors.
    await cells.nth(count - 1).locator(".jp-InputPrompt").click()
    await run_from_menu(page, "Run Selected Cell and Do not Advance")
    await page.wait_for_function(CELLS_DONE, arg=[count, STDERR], timeout=30_000, polling=250)
    await expect(state_label(conn_out)).to_have_text("disconnected", timeout=UI_TIMEOUT)
    assert not await errors_shown(page), "\n\n".join(await errors_shown(page))
    assert all(PROMPT_NUMBERED.match(p) for p in await prompts(page)), await prompts(page)
    assert not page_errors, page_errors

    # The browser worked on the temp copy: the repository's saved lesson is byte for byte what it was.
    assert not (lab.root / NOTEBOOK).samefile(NOTEBOOKS / NOTEBOOK)
    assert digest(NOTEBOOKS / NOTEBOOK) == lab.repo_digest, f"{NOTEBOOK} in the repository changed"


def participant(
    path: Path, *, says: int = 1, seconds: float | None = None, pause: float = 3.0, lead: float = 0.0
) -> Path:
    """A fake microphone's WAV: ``lead`` s of silence, then the shipped sentence (or its first ``seconds``)
    ``says`` times, each followed by ``pause`` s of digital silence; ``says=0`` is a participant who keeps
    quiet. Chromium starts the file again for each new capture (each call's microphone). At the end of a
    ``%noloop`` file its fake capture repeats its last buffer for ever: after bare speech that is a buzz no
    VAD takes for silence, hence the pause at the end too."""
    with wave.open(str(HELLO_WAV)) as source:
        rate, width, channels = source.getframerate(), source.getsampwidth(), source.getnchannels()
        frames = source.readframes(source.getnframes())
    if seconds is not None:
        frames = frames[: int(seconds * rate) * width * channels]
    silence = bytes(int(pause * rate) * width * channels)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(width)
        out.setframerate(rate)
        out.writeframes(bytes(int(lead * rate) * width * channels) + (frames + silence) * says + silence)
    return path


def tracebacks(run: NotebookRun) -> list[dict[str, Any]]:
    """The saved notebook's error outputs (a lesson may print an error it caught on purpose: lesson 2 does)."""
    outputs = [o for c in run.saved["cells"] for o in c.get("outputs", [])]
    return [o for o in outputs if o["output_type"] == "error" or "Traceback" in json.dumps(o)]


def run_with_participant(
    lab: Lab, notebook: str, microphone: Path, *, shot: str, timeout_s: float = 100, widget: str = ".rtkit-call"
) -> NotebookRun:
    """Run ``notebook`` in Chromium, its microphone (granted) playing ``microphone`` once per capture."""
    return run_in_lab(
        lab,
        notebook,
        allow_microphone=True,
        shot=shot,
        timeout_s=timeout_s,
        extra_args=[f"--use-file-for-fake-audio-capture={microphone}%noloop"],
        widget=widget,
    )


@pytest.mark.parametrize(
    ("where", "transport"),
    [("laptop", "webrtc"), ("hub", "websocket")],
    ids=["same-machine", "jupyterhub"],
)
def test_quickstart_talks_from_the_browser_tab_when_the_audio_is_there(
    tmp_path: Path, where: str, transport: str
) -> None:
    """The workshop set-up: ``RTKIT_AUDIO=browser`` for the kernel, and a participant whose microphone says the
    shipped sentence once (Chromium's fake capture plays a WAV file). The same lesson, unchanged, makes its
    call from the page: the kernel mints, the page reaches the kernel's emulator through the Jupyter server
    (jupyter-server-proxy: same origin, XSRF header), the echo comes back, and the lesson's own asserts pass.
    On a hub (``JUPYTERHUB_SERVICE_PREFIX`` set) the call runs over the proxied WebSocket."""
    root = lesson_copy(tmp_path)
    sentence = participant(tmp_path / "participant.wav")
    env = {"RTKIT_AUDIO": "browser"}
    if where == "hub":
        env["JUPYTERHUB_SERVICE_PREFIX"] = "/"  # what a hub sets for the single-user server and its kernels
    with running_lab(tmp_path, root, settings=SCRIPTED, env=env, expose_app=True) as server:
        run = run_with_participant(server, NOTEBOOK, sentence, shot=f"quickstart_browser_{where}")
        # jupyter-server-proxy logs each WebSocket it carries to the kernel's emulator.
        ws_proxied = "Websocket connection established to ws://localhost:" in server.log.read_text()
    why = run.explain()
    assert not [o for o in run.outputs if "Error" in o], why
    assert re.search(r"reply: \[echo of \d+\.\d+ s of your audio\]", "".join(run.outputs)), why
    assert re.search(rf"connected over {transport} in \d+ ms", "".join(run.outputs)), why
    assert re.search(r"end of speech → first reply audio: \d+ ms", "".join(run.outputs)), why
    assert "disconnected" in run.widget_text and "proxy/" in run.widget_text, why  # reached through Jupyter
    assert not re.findall(r"ek_[A-Za-z0-9]{8,}", run.saved_text), "a key reached the saved notebook"
    assert not run.page_errors, why
    assert ws_proxied == (transport == "websocket"), "the WebSocket should go through the Jupyter server"


#: The other lessons on the browser side: what the participant's microphone does in each (the fake capture).
LESSONS = {
    # No call of their own (keys and the cache, the broker, the real API's sessions from the kernel), so no
    # microphone; they run in the same hub set-up all the same, and must run unchanged there.
    "02_keys_and_cache.ipynb": {"says": 0},
    "07_broker_in_production.ipynb": {"says": 0},
    "08_real_api.ipynb": {"says": 0},
    "03_session_and_events.ipynb": {"says": 0},  # text turns: a quiet participant
    "04_audio_levels.ipynb": {"says": 1},
    "05_latency.ipynb": {"says": 3, "seconds": 1.5},  # three short utterances, as the recorded lesson plays
    "06_error_scenarios.ipynb": {"says": 0},
    "09_function_calling.ipynb": {"says": 0},
    # Text turns run muted (their recorded side is silence); the barge-in call's microphone speaks 4 s in,
    # over the long reply, as the recorded lesson's SpeechSource does.
    "10_long_conversations.ipynb": {"says": 1, "lead": 4.0, "seconds": 1.5},
    # The first half of the sentence, a 0.6 s pause, the first half again: one utterance with a pause in it,
    # as the recorded lesson plays (it starts 1.2 s in); every call of a section hears it at once.
    "11_turn_detection.ipynb": {"says": 2, "seconds": 1.55, "pause": 0.6, "lead": 1.2},
    "12_webrtc_or_websocket.ipynb": {"says": 1, "lead": 1.0},  # one sentence, heard by both calls
    "13_instructions_and_voice.ipynb": {"says": 0},  # text questions, spoken replies: a quiet participant
    # Two calls each hear the sentence once (each new capture starts the file again); the ?intent=transcription
    # part sends the kit's recording from the kernel.
    "14_transcription.ipynb": {"says": 1},
    "15_what_it_cost.ipynb": {"says": 1},  # one spoken turn; the rest is text, the microphone muted for the replay
    "16_final_project.ipynb": {"says": 1},  # one spoken question: the cassette's function call, then its answer
}
#: Lessons without a call: nothing on the page says "proxy/" or "disconnected", and the screenshot is their first
#: output.
WITHOUT_A_CALL = {"02_keys_and_cache.ipynb", "07_broker_in_production.ipynb", "08_real_api.ipynb"}
#: Lessons that take longer than the default run allows (two capped sessions, a long reply, two brokers).
TIMEOUTS = {"10_long_conversations.ipynb": 180, "11_turn_detection.ipynb": 150}


@pytest.fixture(scope="module")
def browser_side_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    tmp = tmp_path_factory.mktemp("browser_side")
    root = lesson_copy(tmp)
    for lesson in LESSONS:
        strip_outputs(root / lesson)
    with running_lab(tmp, root, settings=SCRIPTED, env={"RTKIT_AUDIO": "browser"}, expose_app=True) as server:
        yield server


#: Lessons run by the second module (``test_jupyterlab_later_lessons.py``): with ``--dist loadfile`` each module
#: goes to one worker, and the series in one module was the suite's long pole.
LATER_LESSONS = [
    "02_keys_and_cache.ipynb",
    "07_broker_in_production.ipynb",
    "08_real_api.ipynb",
    "11_turn_detection.ipynb",
    "12_webrtc_or_websocket.ipynb",
    "13_instructions_and_voice.ipynb",
    "14_transcription.ipynb",
    "15_what_it_cost.ipynb",
    "16_final_project.ipynb",
]


def lesson_params(lessons: list[str]) -> list[Any]:
    return [
        pytest.param(lesson, marks=pytest.mark.timeout(TIMEOUTS.get(lesson, 100) + 60), id=lesson) for lesson in lessons
    ]


def run_lesson_in_lab(lab: Lab, lesson: str, tmp_path: Path) -> None:
    """Run ``lesson`` with its participant's microphone, and check what every lesson must leave."""
    microphone = participant(tmp_path / "participant.wav", **LESSONS[lesson])  # type: ignore[arg-type]
    has_call = lesson not in WITHOUT_A_CALL
    run = run_with_participant(
        lab,
        lesson,
        microphone,
        shot=f"lesson_{lesson[:2]}_browser",
        timeout_s=TIMEOUTS.get(lesson, 100),
        widget=".rtkit-call" if has_call else ".jp-OutputArea-output",
    )
    why = run.explain()
    cells = [c for c in run.saved["cells"] if c["cell_type"] == "code"]
    assert all(c["execution_count"] for c in cells), why  # Lab stops a run at the first failing assert
    assert not tracebacks(run), why
    assert not has_call or ("proxy/" in run.widget_text and "disconnected" in run.widget_text), why
    assert not re.findall(r"ek_[A-Za-z0-9]{8,}", run.saved_text), "a key reached the saved notebook"
    assert not run.page_errors, why


@pytest.mark.parametrize("lesson", lesson_params([lesson for lesson in LESSONS if lesson not in LATER_LESSONS]))
def test_every_lesson_runs_unchanged_with_the_audio_in_the_browser_tab(
    browser_side_lab: Lab, lesson: str, tmp_path: Path
) -> None:
    """ "The other lessons take whichever session the reader chose": each lesson's own asserts pass with
    ``RTKIT_AUDIO=browser`` (the lesson's call is a BrowserCall, reaching the kernel's emulator through the
    Jupyter server), and its saved copy holds no key."""
    run_lesson_in_lab(browser_side_lab, lesson, tmp_path)
