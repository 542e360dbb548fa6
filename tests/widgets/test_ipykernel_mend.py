"""The mend for ipykernel 7.4.0's stale-parent restore (``rtkit.widgets._ipykernel``), on real kernels.

Without it, measured with the burst test below on this machine: 2, 1 and 3 of 5 rounds left the second cell's
``idle`` under the first cell's request (bursts of 5, 50 and 300 messages): the cell JupyterLab leaves at [*].
"""

from __future__ import annotations

import contextvars
import time
import uuid
from collections.abc import Iterator
from importlib import metadata
from typing import Any

import pytest
from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.manager import KernelManager, start_new_kernel
from packaging.version import Version

from rtkit.widgets._ipykernel import AFFECTED, mend


def request(msg_id: str, msg_type: str = "execute_request") -> dict[str, Any]:
    return {"header": {"msg_id": msg_id, "msg_type": msg_type}, "content": {}}


def current(kernel: Any) -> str:
    return str(kernel.get_parent("shell")["header"]["msg_id"])


@pytest.fixture
def kernel() -> Any:
    from ipykernel.kernelbase import Kernel

    k = Kernel()  # type: ignore[no-untyped-call]
    assert mend(k, next(iter(AFFECTED)))
    return k


def test_a_restore_after_the_next_cell_began_is_dropped(kernel: Any) -> None:
    """The order traced in JupyterLab: a widget message arrives while cell A runs, A ends, B begins, and only
    then does the comm path put A back. ipykernel runs shell handlers in one shared context and each concurrent
    comm in a copy of it; the test does the same with the real ``Kernel``'s ``set_parent``."""
    shared = contextvars.copy_context()
    shared.run(kernel.set_parent, [b"a"], request("A"))
    saved = shared.run(kernel.get_parent, "shell")
    shared.copy().run(kernel.set_parent, [b"c"], request("C", "comm_msg"))  # the comm, in its own context
    assert shared.run(current, kernel) == "A"
    shared.run(kernel.set_parent, [b"b"], request("B"))  # A ended, B began
    shared.run(kernel.set_parent, [b"a"], saved)  # the comm path's `finally`
    assert shared.run(current, kernel) == "B"


def test_a_restore_while_the_same_cell_runs_still_happens(kernel: Any) -> None:
    """That restore is what points threads' output (the kernel's fallback context) back at the running cell."""
    shared = contextvars.copy_context()
    shared.run(kernel.set_parent, [b"a"], request("A"))
    saved = shared.run(kernel.get_parent, "shell")
    shared.copy().run(kernel.set_parent, [b"c"], request("C", "comm_msg"))
    assert kernel._shell_context[kernel._shell_parent]["header"]["msg_id"] == "C"
    shared.run(kernel.set_parent, [b"a"], saved)
    assert kernel._shell_context[kernel._shell_parent]["header"]["msg_id"] == "A"
    assert shared.run(current, kernel) == "A"


def test_only_affected_versions_are_touched() -> None:
    from ipykernel.kernelbase import Kernel

    k = Kernel()  # type: ignore[no-untyped-call]
    before = k.set_parent
    assert not mend(k, "7.3.0")
    assert k.set_parent == before
    assert mend(k, "7.4.0") and mend(k, "7.4.0")  # idempotent


SETUP = """
import asyncio
from comm import get_comm_manager
answered = None
def _target(comm, open_msg):
    @comm.on_msg
    def _got(msg):
        if answered is not None and not answered.done():
            answered.set_result(msg["content"]["data"])
get_comm_manager().register_target("probe", _target)
import rtkit.widgets  # applies the mend on import, as in a lesson
"""
AWAIT_THE_PAGE = "answered = asyncio.get_running_loop().create_future()\nawait answered"
NEXT_CELL = "await asyncio.sleep(0.1)\nprint('next cell')"


@pytest.fixture
def real_kernel() -> Iterator[BlockingKernelClient]:
    if Version(metadata.version("ipykernel")) < Version("7.4"):
        pytest.skip("before 7.4 ipykernel does not read widget messages while a cell awaits")
    km: KernelManager
    km, kc = start_new_kernel(kernel_name="python3", startup_timeout=60)
    try:
        reply = kc.execute_interactive(SETUP, timeout=60)
        assert reply["content"]["status"] == "ok", reply["content"]
        yield kc
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_a_burst_of_widget_messages_leaves_each_cell_its_own_status_and_output(
    real_kernel: BlockingKernelClient,
) -> None:
    """Run All in small: a cell awaiting the page, the next cell queued behind it, and the page's messages
    arriving in a burst (as a call's state updates do). Each cell's ``idle`` and output must name its own request."""
    kc = real_kernel
    comm_id = uuid.uuid4().hex
    kc.shell_channel.send(kc.session.msg("comm_open", {"comm_id": comm_id, "target_name": "probe", "data": {}}))
    for round_ in range(5):
        first = kc.execute(AWAIT_THE_PAGE)
        second = kc.execute(NEXT_CELL)
        time.sleep(0.3)  # both requests are in the kernel: the first awaits, the second waits its turn
        for _ in range(300):
            kc.shell_channel.send(kc.session.msg("comm_msg", {"comm_id": comm_id, "data": {"round": round_}}))
        idle: set[str] = set()
        printed_under: list[str] = []
        deadline = time.monotonic() + 30
        while second not in idle and time.monotonic() < deadline:
            try:
                msg = kc.get_iopub_msg(timeout=1)
            except Exception:  # queue.Empty: keep waiting until the deadline
                continue
            parent = msg["parent_header"].get("msg_id", "")
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                idle.add(parent)
            elif msg["msg_type"] == "stream" and "next cell" in msg["content"]["text"]:
                printed_under.append(parent)
        assert first in idle, f"round {round_}: the awaiting cell never went idle"
        assert second in idle, f"round {round_}: the next cell's idle went to another request"
        assert printed_under == [second], f"round {round_}: its output went to {printed_under}"
