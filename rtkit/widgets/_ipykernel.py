"""A mend for ipykernel 7.4.0's concurrent comm path, which the kit's browser calls depend on.

7.4.0 is the first ipykernel that handles a widget's message while an async cell runs (a ``BrowserCall`` awaits
the page's answers that way; on 7.3.0 the page is not heard until the cell ends). That path remembers the request
running when the message came in and sets it back as the kernel's parent once the message is handled. If that
request ended and the next cell began in between (a burst of widget messages around a cell's end is enough), the
next cell's output and its ``idle`` status go to the request that already ended: JupyterLab leaves the cell at
``[*]`` with the kernel idle, and its prints show under the cell before.

The mend keeps that restore from going back in time: a parent the kernel has moved past is not set again. Every
other ``set_parent`` goes through unchanged, and a restore while the same request still runs still happens (it
puts stdout back after the widget's message). It is applied to the running kernel only, on the versions known to
have the bug; a fixed release needs nothing from us.
"""

from __future__ import annotations

from collections import deque
from importlib import metadata
from typing import Any

#: ipykernel releases with the stale-parent restore (7.4.0 is the newest in the registry, 2026-11-30).
AFFECTED = frozenset({"7.4.0"})

_MARK = "_rtkit_parent_mend"


def _msg_id(parent: Any) -> str | None:
    header = parent.get("header") if isinstance(parent, dict) else None
    msg_id = header.get("msg_id") if isinstance(header, dict) else None
    return msg_id if isinstance(msg_id, str) and msg_id else None


def mend(kernel: Any, version: str) -> bool:
    """Wrap ``kernel.set_parent`` so that a stale restore is dropped; True if the kernel is (now) mended.

    ``version`` is the running ipykernel's; only the affected ones are touched. Idempotent.
    """
    if getattr(kernel, _MARK, False):
        return True
    if version not in AFFECTED:
        return False
    original = kernel.set_parent
    left: deque[str] = deque(maxlen=512)  # requests the shell parent moved away from, newest last

    def set_parent(ident: Any, parent: Any, channel: str = "shell") -> None:
        if channel == "shell":
            new = _msg_id(parent)
            current = _msg_id(kernel.get_parent("shell"))
            if new is not None and new != current:
                if new in left:
                    return  # the concurrent comm path putting back a request the kernel has moved past
                if current is not None and (not left or left[-1] != current):
                    left.append(current)  # once per move: every widget message of a cell would repeat it
        original(ident, parent, channel)

    kernel.set_parent = set_parent
    setattr(kernel, _MARK, True)
    return True


def mend_running_kernel() -> bool:
    """Mend the kernel this code runs in, if it is an affected ipykernel; False anywhere else."""
    try:
        from IPython import get_ipython

        version = metadata.version("ipykernel")
    except (ImportError, metadata.PackageNotFoundError):
        return False
    shell = get_ipython()
    kernel = getattr(shell, "kernel", None)
    if kernel is None or not hasattr(kernel, "set_parent") or not hasattr(kernel, "get_parent"):
        return False
    return mend(kernel, version)
