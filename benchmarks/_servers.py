"""Servers the benchmarks run as child processes (``rtkit emulator``, ``rtkit broker``): start, stop, say why.

Each server leads a process group of its own, and stopping it signals the whole group: ``rtkit emulator
--workers N`` dies on SIGTERM without stopping its worker processes, and on Python 3.11 asyncio's
``Process.wait()`` does not return while such orphans still hold the server's stdout pipe (an earlier
``stop()`` hung there for good). Every wait here has a bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any

import psutil

#: From SIGTERM to SIGKILL, and from SIGKILL to giving up (with a warning on stderr).
STOP_TIMEOUT_S = 10.0
KILL_TIMEOUT_S = 5.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def emulator_command(port: int, *extra: str) -> list[str]:
    """``python -m rtkit emulator`` on loopback ``port``, logging warnings only."""
    return [sys.executable, "-m", "rtkit", "emulator", "--port", str(port), "--log-level", "warning", *extra]


@dataclass
class ServerProcess:
    """A server in a child process that leads its own process group; its stderr is kept in a temporary file."""

    proc: asyncio.subprocess.Process
    stderr: IO[bytes]

    @property
    def ps(self) -> psutil.Process:
        return psutil.Process(self.proc.pid)

    def stderr_tail(self, lines: int = 5) -> str:
        self.stderr.seek(0)
        return " / ".join(self.stderr.read().decode(errors="replace").strip().splitlines()[-lines:])

    def _signal(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def _gone(self) -> bool:
        """The server has exited and nothing it started is left in its process group."""
        if self.proc.returncode is None:  # set when the child is reaped, whoever holds its pipes
            return False
        try:
            os.killpg(self.proc.pid, 0)
        except ProcessLookupError:
            return True
        return False

    async def _wait_gone(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self._gone():
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    async def stop(self) -> None:
        """Terminate the server and every process it started, kill what is left after ``STOP_TIMEOUT_S``.

        Safe to call more than once, and bounded: what is still there after SIGKILL is reported on stderr.
        """
        if not self._gone():
            self._signal(signal.SIGTERM)
            if not await self._wait_gone(STOP_TIMEOUT_S):
                self._signal(signal.SIGKILL)
                if not await self._wait_gone(KILL_TIMEOUT_S):
                    print(f"warning: process group {self.proc.pid} survived SIGKILL", file=sys.stderr)
        if self.proc.stdout is not None:
            try:  # drain to EOF so the pipe transport closes inside the loop
                await asyncio.wait_for(self.proc.stdout.read(), KILL_TIMEOUT_S)
            except TimeoutError:
                print(f"warning: the stdout of process {self.proc.pid} is still held open", file=sys.stderr)
        self.stderr.close()


async def spawn(
    args: Sequence[str],
    *,
    stdout: int | IO[bytes] = asyncio.subprocess.DEVNULL,
    env: Mapping[str, str] | None = None,
    preexec_fn: Callable[[], Any] | None = None,
) -> tuple[asyncio.subprocess.Process, IO[bytes]]:
    """Start ``args`` as the leader of a new process group, its stderr to a temporary file: (process, stderr)."""
    stderr = tempfile.TemporaryFile()
    try:
        proc = await asyncio.create_subprocess_exec(
            *args, stdout=stdout, stderr=stderr, env=env, preexec_fn=preexec_fn, start_new_session=True
        )
    except BaseException:
        stderr.close()
        raise
    return proc, stderr


@contextlib.asynccontextmanager
async def stopped_on_error(server: ServerProcess) -> AsyncIterator[None]:
    """Stop ``server`` if the block fails or is cancelled, so a server that never came up is not left behind."""
    try:
        yield
    except BaseException:
        await server.stop()
        raise
