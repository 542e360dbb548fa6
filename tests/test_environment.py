"""The conda description and pyproject must not drift apart."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~\[ ;]", r.strip(), maxsplit=1)[0].lower() for r in requirements}


def test_environment_yml_lists_the_runtime_and_lab_dependencies_of_pyproject() -> None:
    """A conda user gets what the lessons need (the lab extras), not only the core library."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    wanted = _names(pyproject["project"]["dependencies"]) | _names(pyproject["project"]["optional-dependencies"]["lab"])
    pip_section = re.search(r"- pip:\n((?:\s+(?:- .+|#.*)\n)+)", (ROOT / "environment.yml").read_text())
    assert pip_section, "environment.yml has no pip section"
    lines = [line.strip() for line in pip_section.group(1).splitlines()]
    listed = _names([line[2:] for line in lines if line.startswith("- ")])
    assert listed == wanted


def test_environment_yml_brings_portaudio_for_sounddevice() -> None:
    assert re.search(r"^\s+- portaudio\b", (ROOT / "environment.yml").read_text(), re.M)


def test_ci_runs_exactly_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert [line for line in ci.splitlines() if line and not line.startswith(("#", "set ", "cd "))] == ["make test"]
    head = "\n".join((ROOT / "README.md").read_text().splitlines()[:15])
    assert "make test" in head and "make demo" in head
