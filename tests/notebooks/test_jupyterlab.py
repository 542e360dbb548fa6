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
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.chromium import ARTIFACTS, BASE_ARGS, CHROMIUM, require_chromium

pytestmark = pytest.mark.browser

JUPYTER = Path(sys.executable).with_name("jupyter")
require_chromium()
from playwright.async_api import Browser, Locator, Page, async_playwright, expect  # noqa: E402

try:
    import jupyterlab  # noqa: F401
    import jupyterlab_widgets  # noqa: F401
except ImportError:
    pytest.skip("needs jupyterlab and jupyterlab_widgets (pip install -e '.[lab]')", allow_module_level=True)
if not JUPYTER.exists():
    pytest.skip(f"needs the venv's jupyter command at {JUPYTER}", allow_module_level=True)

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"
NOTEBOOK = "01_quickstart.ipynb"
SCREENSHOT = ARTIFACTS / "jupyterlab_quickstart.png"
CHROMIUM_ARGS = BASE_ARGS
#: Tall enough that the whole lesson fits: JupyterLab scrolls inside its own panel, so a "full page"
#: screenshot is only ever the viewport, and off-screen cells are skipped by content-visibility.
VIEWPORT = {"width": 1280, "height": 2200}
#: Lab user settings for the run. Only the news opt-in toast is silenced (it would cover the bottom
#: right of the screenshot and asks to fetch from the internet); errors still pop up as usual.
LAB_SETTINGS = {"@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False}}
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
class Lab:
    url: str
    token: str
    root: Path
    log: Path
    repo_digest: str
    proc: subprocess.Popen[bytes] = field(repr=False)

    def server_log(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def strip_outputs(path: Path) -> None:
    """Clear the copy's saved outputs and widget state, so a stale ``reply:`` line or saved widget
    value cannot pass for this run's."""
    notebook = json.loads(path.read_text())
    notebook["metadata"].pop("widgets", None)
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
    path.write_text(json.dumps(notebook, indent=1))


def code_cells(path: Path) -> int:
    return sum(cell["cell_type"] == "code" for cell in json.loads(path.read_text())["cells"])


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    """``jupyter lab`` from the venv on a free loopback port, with a random token and XSRF checks on.

    ``OPENAI_API_KEY`` is removed so the lesson uses the emulator. ``JUPYTER_CONFIG_DIR``, ``_DATA_DIR``,
    ``_RUNTIME_DIR`` and ``IPYTHONDIR`` point at temp dirs; the venv's own ``share/jupyter`` (kernelspec,
    the ``@jupyter-widgets/jupyterlab-manager`` extension) and ``etc/jupyter`` (server extensions) stay
    on Jupyter's search path because they come from ``sys.prefix``, not from those variables.
    """
    repo_digest = digest(NOTEBOOKS / NOTEBOOK)
    root = tmp_path / "notebooks"
    shutil.copytree(NOTEBOOKS, root, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    strip_outputs(root / NOTEBOOK)
    dirs = {name: tmp_path / name for name in ("config", "data", "runtime", "ipython")}
    for d in dirs.values():
        d.mkdir()
    for plugin, settings in LAB_SETTINGS.items():
        target = dirs["config"] / "lab" / "user-settings" / f"{plugin}.jupyterlab-settings"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(settings))
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL")}
    env.update(
        JUPYTER_CONFIG_DIR=str(dirs["config"]),
        JUPYTER_DATA_DIR=str(dirs["data"]),
        JUPYTER_RUNTIME_DIR=str(dirs["runtime"]),
        IPYTHONDIR=str(dirs["ipython"]),
    )
    port, token = free_port(), secrets.token_hex(24)
    log = tmp_path / "jupyterlab.log"
    args = [
        str(JUPYTER),
        "lab",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        "--ServerApp.disable_check_xsrf=False",
        "--ServerApp.terminals_enabled=False",
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
    if os.geteuid() == 0:
        args.append("--allow-root")  # containers and CI run as root; jupyter_server refuses without it
    with log.open("wb") as out:
        proc = subprocess.Popen(args, env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)
    server = Lab(f"http://127.0.0.1:{port}", token, root, log, repo_digest, proc)
    try:
        wait_for_server(server, timeout=30)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def wait_for_server(lab: Lab, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if lab.proc.poll() is not None:
            pytest.fail(f"jupyter lab exited with {lab.proc.returncode}:\n{lab.server_log()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{lab.url}/api/status", params={"token": lab.token}, timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    pytest.fail(f"jupyter lab did not answer /api/status within {timeout:.0f} s:\n{lab.server_log()}")


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        chromium = await p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()


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


async def test_quickstart_runs_in_jupyterlab_and_its_widgets_render_and_connect(lab: Lab, page: Page) -> None:
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
    assert await cells.count() == count == 6, await prompts(page)

    # Everything but the last cell, which closes the session and would turn the light grey again.
    await cells.nth(count - 1).locator(".jp-InputPrompt").click()
    await run_from_menu(page, "Run All Above Selected Cell")
    await page.wait_for_function(CELLS_DONE, arg=[count - 1, STDERR], timeout=60_000, polling=250)
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
