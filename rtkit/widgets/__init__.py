"""Jupyter widgets for rtkit (needs the ``lab`` extra: ``pip install 'rtkit[lab]'``).

Each widget has a Python API that does what its buttons do, so notebooks, headless runs and tests can
drive it: ``await keys.mint()``, ``await connection.connect()``, ``await scenarios.run("network_drop")``.
"""

from rtkit.widgets._ipykernel import mend_running_kernel
from rtkit.widgets.browser_call import BrowserCall
from rtkit.widgets.connection import ConnectionPanel
from rtkit.widgets.keys import KeyPanel
from rtkit.widgets.plots import LatencyPlot, LevelPlot
from rtkit.widgets.scenarios import SCENARIOS, ScenarioPanel, ScenarioResult
from rtkit.widgets.timeline import ConversationTimeline
from rtkit.widgets.transcript import Transcript

# Widgets talk to their page while cells await; ipykernel 7.4.0 can then hand a cell's status to the cell before.
mend_running_kernel()

__all__ = [
    "SCENARIOS",
    "BrowserCall",
    "ConnectionPanel",
    "ConversationTimeline",
    "KeyPanel",
    "LatencyPlot",
    "LevelPlot",
    "ScenarioPanel",
    "ScenarioResult",
    "Transcript",
]
