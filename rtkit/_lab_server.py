"""The one way rtkit's own tooling starts a JupyterLab: the venv's ``jupyter lab`` on loopback, in throwaway dirs.

The browser tests (``tests/jupyterlab.py``) and the workshop benchmark (``benchmarks/workshop.py``) both run real
servers; they share the command, the environment and the wait here, so what a benchmark measures is the server
the tests prove. Each starts the process its own way (the tests a ``Popen``, the benchmark an asyncio child it
measures). The server gets temporary Jupyter config/data/runtime dirs and ``HOME`` (nothing from the developer's
profile changes what renders or runs) and no ``OPENAI_API_KEY`` (the lessons use the emulator). Kernels inherit
the server's environment: that is how a caller hands a notebook what it needs (``RTKIT_AUDIO``...). The venv's own
``share/jupyter`` and ``etc/jupyter`` (kernelspec, widgets extension, server-proxy) stay on Jupyter's search
path because they come from ``sys.prefix``, not from those variables.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

JUPYTER = Path(sys.executable).with_name("jupyter")
#: Variables of the caller's environment a lab never inherits: its kernels use the emulator, and each caller says
#: which audio side they run (``env``).
SCRUBBED = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "RTKIT_AUDIO")


@dataclass(frozen=True)
class LabLaunch:
    """What to run, with which environment, and where the server will answer. ``token`` is ``""`` when the
    server runs without authentication."""

    args: list[str]
    env: dict[str, str]
    url: str
    token: str
    #: Where the server writes its kernels' connection files (``kernel-<id>.json``).
    runtime_dir: Path


def lab_launch(
    scratch: Path,
    root: Path,
    port: int,
    *,
    token: str | None = None,
    settings: Mapping[str, Mapping[str, Any]] | None = None,
    env: Mapping[str, str] | None = None,
    expose_app: bool = False,
    log_level: str | None = None,
) -> LabLaunch:
    """``jupyter lab --no-browser`` on ``127.0.0.1:port`` serving ``root``, its Jupyter dirs made under ``scratch``.

    ``token=None`` picks a random token; ``""`` turns authentication (and with it the XSRF check, which only a
    token-less client could not pass) off. ``settings`` are Lab user settings by plugin id, ``env`` reaches the
    kernels, ``expose_app`` sets ``window.jupyterapp`` (for driving Lab's own commands from a browser).
    """
    dirs = {name: scratch / name for name in ("home", "config", "data", "runtime", "ipython")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    for plugin, values in (settings or {}).items():
        target = dirs["config"] / "lab" / "user-settings" / f"{plugin}.jupyterlab-settings"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(values))
    token = secrets.token_hex(24) if token is None else token
    server_env = {k: v for k, v in os.environ.items() if k not in SCRUBBED}
    server_env.update(
        HOME=str(dirs["home"]),
        JUPYTER_CONFIG_DIR=str(dirs["config"]),
        JUPYTER_DATA_DIR=str(dirs["data"]),
        JUPYTER_RUNTIME_DIR=str(dirs["runtime"]),
        IPYTHONDIR=str(dirs["ipython"]),
        **(env or {}),
    )
    args = [
        str(JUPYTER),
        "lab",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        f"--ServerApp.disable_check_xsrf={not token}",
        "--ServerApp.terminals_enabled=False",
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
    if not token:
        args.append("--ServerApp.password=")
    if log_level:
        args.append(f"--ServerApp.log_level={log_level}")
    if expose_app:
        args.append("--LabApp.expose_app_in_browser=True")
    if os.geteuid() == 0:
        args.append("--allow-root")  # containers and CI run as root; jupyter_server refuses without it
    return LabLaunch(args, server_env, f"http://127.0.0.1:{port}", token, dirs["runtime"])


def wait_until_up(
    launch: LabLaunch, exit_code: Callable[[], int | None], log: Callable[[], str], timeout: float
) -> None:
    """Block until the server answers ``/api/status``; ``RuntimeError`` with the end of its ``log`` if it exits
    (``exit_code`` says so) or is not up within ``timeout`` seconds. An async caller runs it in a thread."""
    deadline = time.monotonic() + timeout
    params = {"token": launch.token} if launch.token else {}
    while time.monotonic() < deadline:
        code = exit_code()
        if code is not None:
            raise RuntimeError(f"jupyter lab exited with {code}:\n{log()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{launch.url}/api/status", params=params, timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"jupyter lab did not answer /api/status within {timeout:.0f} s:\n{log()}")
