"""Resume with context for the ``BrowserCall``: the notebook's browser tab (real Chromium in a real JupyterLab)
makes the call, the emulator caps its session, and the tab's next session holds the earlier turns."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

pytest.importorskip("anywidget", reason="needs anywidget (pip install -e '.[lab]')")

from tests.jupyterlab import SCRIPTED, Lab, notebook_cells, run_in_lab, running_lab, write_notebook
from tests.widgets.test_browser_call import MAIN_KEY, skip_without_browser


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    tmp = tmp_path_factory.mktemp("lab")
    root = tmp / "notebooks"
    root.mkdir()
    write_notebook(root / "resume.ipynb", notebook_cells("setup", "resume"))
    env = {
        "RTKIT_TEST_MAIN_KEY": MAIN_KEY,
        "RTKIT_TEST_MINTED": str(tmp / "minted.json"),
        "RTKIT_TEST_MAX_SESSION_SECONDS": "6",  # every session capped, as the real ones are at 60 minutes
    }
    with running_lab(tmp, root, settings=SCRIPTED, env=env, expose_app=True) as server:
        yield server


@pytest.mark.browser
@skip_without_browser
def test_the_browser_call_resumes_after_the_cap_with_its_earlier_turns(lab: Lab) -> None:
    run = run_in_lab(lab, "resume.ipynb", allow_microphone=True, shot="resume", timeout_s=90)
    why = run.explain()
    expected = (
        "RESUMED session_expired 4 items; [('user', False, 2), ('assistant', False, 2), ('user', False, 2), "
        "('assistant', False, 2), ('user', True, 1), ('assistant', True, 1)]"
    )
    assert expected in run.output("RESUMED"), why
    assert not run.page_errors, why
