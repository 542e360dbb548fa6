"""A real JupyterLab for the browser tests: the venv's ``jupyter lab`` on loopback, Chromium running notebooks in it.

The server is started as ``rtkit._lab_server`` starts every lab of the kit's tooling (the workshop benchmark's
too): a random token, a free port, temporary Jupyter dirs and no ``OPENAI_API_KEY``. Kernels inherit the
server's environment: that is how a test hands a notebook what it needs (``RTKIT_AUDIO``, where to note minted
keys...).
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from rtkit._lab_server import JUPYTER, lab_launch, wait_until_up
from tests.chromium import ALLOW_MICROPHONE, ARTIFACTS, CHROMIUM, WEBRTC_ARGS
from tests.conftest import free_port

#: Lab user settings for every run: no news toast over the screenshots (it would also fetch from the internet).
QUIET = {"@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False}}
#: For runs driven through Lab's commands: widget state saved with the notebook (what secret scans read) and
#: every cell kept in the DOM (no windowing).
SCRIPTED = {
    **QUIET,
    "@jupyter-widgets/jupyterlab-manager/plugin": {"saveState": True},
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
}


def missing_lab_tools() -> str | None:
    """Why the JupyterLab browser tests cannot run here, or ``None``."""
    if not CHROMIUM.exists():
        return f"needs Debian's chromium at {CHROMIUM} (apt-get install chromium)"
    if not JUPYTER.exists():
        return f"needs the venv's jupyter command at {JUPYTER}"
    try:
        import jupyterlab  # noqa: F401
        import jupyterlab_widgets  # noqa: F401
        import playwright.sync_api  # noqa: F401
    except ImportError as exc:
        return f"needs {exc.name} (pip install -e '.[dev]'; the browser is Debian's, never downloaded)"
    return None


@dataclass
class Lab:
    url: str
    token: str
    root: Path
    log: Path
    proc: subprocess.Popen[bytes] = field(repr=False)

    def server_log(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


@contextlib.contextmanager
def running_lab(
    tmp: Path,
    root: Path,
    *,
    settings: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
    expose_app: bool = False,
) -> Iterator[Lab]:
    """``jupyter lab --no-browser`` serving ``root`` until the block ends (started as ``rtkit._lab_server`` says,
    with a random token). ``env`` reaches the kernels; ``expose_app`` sets ``window.jupyterapp``, for tests that run
    cells and save through Lab's own commands."""
    port = free_port()
    launch = lab_launch(
        tmp,
        root,
        port,
        settings=settings or QUIET,
        env={"RTKIT_TEST_LAB_ORIGIN": f"http://127.0.0.1:{port}", **(env or {})},
        expose_app=expose_app,
    )
    log = tmp / "jupyterlab.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(launch.args, env=launch.env, cwd=tmp, stdout=out, stderr=subprocess.STDOUT)
    lab = Lab(launch.url, launch.token, root, log, proc)
    try:
        try:
            wait_until_up(launch, proc.poll, lab.server_log, timeout=30)
        except RuntimeError as exc:
            pytest.fail(str(exc))
        yield lab
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


#: Notebooks the browser tests run, as real files that lint and format see: one '# %%' per cell.
CELLS = Path(__file__).resolve().parent / "widgets" / "cells"


def notebook_cells(*names: str) -> list[str]:
    """The cells of ``tests/widgets/cells/<name>.py`` for each name, in order (the text before a file's first
    ``# %%`` says what it is for, and is not a cell)."""
    cells: list[str] = []
    for name in names:
        parts = re.split(r"^# %%$", (CELLS / f"{name}.py").read_text(), flags=re.MULTILINE)
        cells.extend(part.strip("\n") for part in parts[1:])
    return cells


def write_notebook(path: Path, cells: list[str]) -> None:
    import nbformat

    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, path)


#: The main key the browser tests' kernels start their emulator with (random: a scan for it means something).
MAIN_KEY = "sk-browser-call-test-main-" + secrets.token_hex(8)


@contextlib.contextmanager
def lab_with_notebooks(tmp: Path, notebooks: dict[str, list[str]], **env: str) -> Iterator[Lab]:
    """A JupyterLab as the browser tests drive it (scripted settings, the app exposed to Playwright), serving one
    notebook per entry of ``notebooks`` (file name: cells). Its kernels learn the main key and where to note each
    key they mint (``minted.json`` in ``tmp``, for the secret scans) from their environment, plus ``env``."""
    root = tmp / "notebooks"
    root.mkdir()
    for name, cells in notebooks.items():
        write_notebook(root / name, cells)
    kernel_env = {"RTKIT_TEST_MAIN_KEY": MAIN_KEY, "RTKIT_TEST_MINTED": str(tmp / "minted.json"), **env}
    with running_lab(tmp, root, settings=SCRIPTED, env=kernel_env, expose_app=True) as lab:
        yield lab


def strip_outputs(path: Path) -> None:
    """Clear a copied notebook's outputs and widget state, so nothing saved can pass for this run's."""
    notebook = json.loads(path.read_text())
    notebook["metadata"].pop("widgets", None)
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
    path.write_text(json.dumps(notebook, indent=1))


# ---- running a whole notebook in Chromium through Lab's own commands ---------------------------------------

#: True once every code cell shows an execution number, or as soon as one shows an error (JupyterLab stops a
#: "run all" at the first error, so the cells after it would stay unnumbered).
CELLS_DONE = """() => {
  const cells = [...document.querySelectorAll('.jp-Notebook .jp-CodeCell')];
  const stderr = '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]';
  const numbered = (c) => /^\\[\\d+\\]:$/.test(c.querySelector('.jp-InputPrompt').textContent.trim());
  // A failure ends the run early; a warning on stderr (a dev-mode broker says so there) does not.
  const failed = (c) => [...c.querySelectorAll(stderr)].some((e) => /Traceback|Error/.test(e.textContent));
  return cells.some(failed) || (cells.length > 0 && cells.every(numbered));
}"""
KERNEL_IDLE = """() => {
  const panel = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const kernel = panel && panel.sessionContext && panel.sessionContext.session && panel.sessionContext.session.kernel;
  return Boolean(kernel && kernel.connectionStatus === 'connected' && kernel.status === 'idle');
}"""


@dataclass
class NotebookRun:
    saved: dict[str, Any]
    saved_text: str
    outputs: list[str]
    widget_text: str
    page_errors: list[str]
    console: list[str]

    def output(self, marker: str) -> str:
        return next((text for text in self.outputs if marker in text), "")

    def explain(self) -> str:
        return "\n---\n".join(
            [*self.outputs, f"widget: {self.widget_text}", f"page errors: {self.page_errors}", *self.console[-40:]]
        )


def run_in_lab(
    lab: Lab,
    notebook: str,
    *,
    allow_microphone: bool,
    shot: str,
    timeout_s: float = 60,
    init_script: str | None = None,
    extra_args: list[str] | None = None,
    widget: str = ".rtkit-call",
) -> NotebookRun:
    """Open ``notebook`` in Chromium, run all its cells with Lab's own command, save it, and read back what the
    file and the page say. Screenshots of the page and of the first ``widget`` go to ``artifacts/``."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    args = [*WEBRTC_ARGS, *(extra_args or [])]
    if allow_microphone:
        args.append(ALLOW_MICROPHONE)
    page_errors: list[str] = []
    console: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=args)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1600})
            page.on("pageerror", lambda exc: page_errors.append(str(exc)))
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
            if init_script:
                page.add_init_script(init_script)
            # ?reset: a fresh workspace, or Lab would reopen another notebook (and its call) in this browser too.
            page.goto(f"{lab.url}/lab/tree/{notebook}?reset&token={lab.token}")
            page.wait_for_function(KERNEL_IDLE, timeout=30_000, polling=100)
            page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
            try:
                page.wait_for_function(CELLS_DONE, timeout=timeout_s * 1000, polling=200)
            except PlaywrightTimeout:
                if page.evaluate(KERNEL_IDLE):  # every cell ran, one never got its idle: see rtkit.widgets._ipykernel
                    raise AssertionError(f"{notebook}: a cell left at [*] with the kernel idle") from None
                raise
            finally:
                ARTIFACTS.mkdir(exist_ok=True)
                page.screenshot(path=ARTIFACTS / f"browser_call_{shot}.png")
            view = page.locator(widget).first
            view.scroll_into_view_if_needed()
            view.screenshot(path=ARTIFACTS / f"browser_call_{shot}_widget.png")
            widget_text = view.inner_text()
            page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")  # awaits the save
        finally:
            browser.close()
    text = (lab.root / notebook).read_text()
    saved = json.loads(text)
    outputs = []
    for cell in saved["cells"]:
        parts = []
        for out in cell.get("outputs", []):
            if out["output_type"] == "stream":
                parts.append("".join(out["text"]))
            elif out["output_type"] == "error":
                parts.append(f"{out['ename']}: {out['evalue']}")
        outputs.append("".join(parts))
    return NotebookRun(saved, text, outputs, widget_text, page_errors, console)
