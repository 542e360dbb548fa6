# Cells of a notebook the browser tests write and run in JupyterLab (tests/jupyterlab.py notebook_cells):
# each '# %%' starts a cell. The first cell of every such notebook: the kernel's backend, and keys() that notes
# each key it mints in a file for the tests' secret scans.

# %%
# Imported here for the cells that follow (F401 is off for these files).
import asyncio
import json
import os
import re
from pathlib import Path

from rtkit.errors import MicrophoneDeniedError
from rtkit.lab import start_backend
from rtkit.session import ReconnectPolicy
from rtkit.widgets import BrowserCall, LevelPlot

# No cors_origins: the emulator answers any page, as the service does (on_frontend matters only with a list).
# RTKIT_TEST_MAX_SESSION_SECONDS caps every session (the resume notebook); the emulator's default otherwise.
cap = os.environ.get("RTKIT_TEST_MAX_SESSION_SECONDS")
options = {"max_session_seconds": float(cap)} if cap else {}
backend = await start_backend(api_key=os.environ["RTKIT_TEST_MAIN_KEY"], **options)
emu = backend.emulator
minted = []


async def keys():
    key = await backend.keys()
    minted.append(key.value)
    # For the test's secret scan: written to a file, never shown in an output.
    await asyncio.to_thread(Path(os.environ["RTKIT_TEST_MINTED"]).write_text, json.dumps(minted))
    return key
