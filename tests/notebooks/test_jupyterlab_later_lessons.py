"""Lessons 2, 7, 8 and 11 to 16 on the browser side, as ``test_jupyterlab.py`` runs the others: a module of their
own, so that two pytest-xdist workers (``--dist loadfile``) share the series instead of one worker running all."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.jupyterlab import Lab
from tests.notebooks.test_jupyterlab import LATER_LESSONS, browser_side_lab, lesson_params, run_lesson_in_lab

pytestmark = pytest.mark.browser
__all__ = ["browser_side_lab"]  # the fixture, imported: it starts this module's own JupyterLab


@pytest.mark.parametrize("lesson", lesson_params(LATER_LESSONS))
def test_every_later_lesson_runs_unchanged_with_the_audio_in_the_browser_tab(
    browser_side_lab: Lab, lesson: str, tmp_path: Path
) -> None:
    """The same check as for lessons 3 to 10: the lesson's own asserts pass with ``RTKIT_AUDIO=browser``, and
    its saved copy holds no key."""
    run_lesson_in_lab(browser_side_lab, lesson, tmp_path)
