"""Resume with context for the ``BrowserCall``: the notebook's browser tab (real Chromium in a real JupyterLab)
makes the call, the emulator caps its session, and the tab's next session holds the earlier turns."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

pytest.importorskip("anywidget", reason="needs anywidget (pip install -e '.[lab]')")

from tests.jupyterlab import Lab, lab_with_notebooks, notebook_cells, run_in_lab
from tests.widgets.test_browser_call import skip_without_browser


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    notebook = {"resume.ipynb": notebook_cells("setup", "resume")}
    # Every session capped at 6 s, as the real ones are at 60 minutes.
    with lab_with_notebooks(tmp_path_factory.mktemp("lab"), notebook, RTKIT_TEST_MAX_SESSION_SECONDS="6") as server:
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
