"""Child processes that do not outlive their parent."""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import threading


def exit_with_parent(code: int = 0) -> None:
    """End this ``multiprocessing`` child as soon as its parent is gone, however it went (even SIGKILL).

    An orphaned emulator worker or benchmark caller would otherwise keep its port, its calls and its CPU, and
    load whatever runs next on the machine. A daemon thread waits on the parent's sentinel, which becomes
    ready when the parent exits; ``os._exit`` then ends the child without running anything of the parent's.
    """
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(code)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
