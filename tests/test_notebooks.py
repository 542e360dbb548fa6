"""The saved notebooks: lessons that read well on a code host, and leak no secret."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
FULL_KEY = re.compile(r"\b(ek_[A-Za-z0-9]{8,}|sk-[A-Za-z0-9_-]{16,})")


def test_there_is_a_lesson_series() -> None:
    assert [p.name[:2] for p in NOTEBOOKS] == [f"{n:02d}" for n in range(1, len(NOTEBOOKS) + 1)]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_saved_notebook_shows_no_key(path: Path) -> None:
    """Outputs, widget state and sources: keys appear only as fingerprints (``ek_…abcd``)."""
    text = path.read_text()
    assert not FULL_KEY.findall(text)
    assert "OPENAI_API_KEY=" not in text


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_saved_notebook_is_executed_and_reads_like_a_lesson(path: Path) -> None:
    notebook = json.loads(path.read_text())
    cells = notebook["cells"]
    assert cells[0]["cell_type"] == "markdown" and cells[0]["source"][0].startswith("# ")
    code = [c for c in cells if c["cell_type"] == "code"]
    assert all(c["execution_count"] for c in code), "save notebooks executed: make notebooks"
    assert not any(o.get("output_type") == "error" for c in code for o in c["outputs"])
    assert max(len("".join(c["source"]).splitlines()) for c in code) <= 20, "keep cells short: logic lives in rtkit"
