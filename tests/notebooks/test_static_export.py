"""The saved lessons read where widgets do not render (GitHub, nbviewer, an HTML export without widget JS).

Every widget output carries a static copy beside its view (``text/html`` for panels, ``image/png`` for plots),
and the copy is the panel *as it ended*: the notebook was saved after the last cell, and the copy was updated
after each cell. These tests read the committed files, and export them with nbconvert as such a viewer would.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from nbconvert import HTMLExporter

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
STATIC = ("text/html", "image/png")
#: Lessons with widgets saved before widgets carried static copies: each leaves this list when it is saved
#: again (``make notebooks``).
SAVED_BEFORE: set[str] = set()
LESSONS = [
    pytest.param(
        path,
        id=path.name,
        marks=pytest.mark.xfail(reason="saved before static copies") if path.stem in SAVED_BEFORE else [],
    )
    for path in NOTEBOOKS
]


def outputs(notebook: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]


def export_without_widgets(path: Path) -> str:
    """The HTML a viewer without the widget manager shows: nbconvert, with the saved widget state left out."""
    notebook = nbformat.read(path, as_version=4)
    notebook.metadata.pop("widgets", None)
    body, _ = HTMLExporter().from_notebook_node(notebook)
    return body


@pytest.mark.parametrize("path", LESSONS)
def test_no_saved_output_is_only_a_widget_view(path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    bare = [o for o in outputs(notebook) if WIDGET_VIEW in o.get("data", {}) and not set(STATIC) & set(o.data)]
    assert not bare, f"{len(bare)} widget outputs with no static copy: {[o.data['text/plain'][:40] for o in bare]}"


@pytest.mark.parametrize("path", LESSONS)
def test_a_lesson_exported_to_html_without_widget_js_shows_every_static_copy(path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    copies = [o for o in outputs(notebook) if WIDGET_VIEW in o.get("data", {})]
    body = export_without_widgets(path)
    assert WIDGET_VIEW not in body
    assert not re.search(r"\b(KeyPanel|ConnectionPanel|LevelPlot|LatencyPlot|ScenarioPanel)\(children=", body)
    html_copies = sum("text/html" in o.data for o in copies)
    assert body.count("rtkit-static") == html_copies


def test_the_saved_quickstart_shows_its_panels_as_they_ended_and_the_turn_to_listen_to() -> None:
    body = export_without_widgets(next(p for p in NOTEBOOKS if p.name == "01_quickstart.ipynb"))
    assert re.search(r"<code>ek_…[A-Za-z0-9]{4}</code> · expires at \d\d:\d\d:\d\d UTC", body)
    log = body[body.index("<b>Connection panel</b>") :]
    assert "<b>disconnected</b>" in log[:600]  # the state after the last cell, not when it was displayed
    order = ["● connecting", "session.created", "● connected", "speech_stopped", "response.done", "● disconnected"]
    positions = [log.index(line) for line in order]
    assert positions == sorted(positions), "the saved event log reads oldest first"
    assert "The kit played a recorded sentence" in body  # the recorded side says what it played
    assert body.count("<audio controls") == 2  # the question and the reply


def test_the_saved_events_lesson_keeps_the_whole_turn_and_the_refused_update_in_its_log() -> None:
    body = export_without_widgets(next(p for p in NOTEBOOKS if p.name == "03_session_and_events.ipynb"))
    log = body[body.index("<b>Connection panel</b>") :]
    order = ["session.created", "response.created", "response.done status=completed", "error unknown_parameter"]
    positions = [log.index(line) for line in order]
    assert positions == sorted(positions)
