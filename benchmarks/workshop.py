"""Workshop: what one participant of a JupyterHub class costs the hub machine, for N = 1, 2, 3 participants.

A participant on a hub is a single-user Jupyter server (here ``jupyter lab`` with jupyter-server-proxy, as
``jupyterhub-singleuser`` runs it), one kernel running a lesson's first cell (``start_backend()``: the emulator
inside the kernel) and a browser call that reaches that emulator through the server's proxy over the
WebSocket transport (``RTKIT_AUDIO=browser`` on a hub, see ``rtkit/lab.py``). Everything of it that runs on the
hub is the server's process tree, and that is what is measured (psutil: CPU time over a window, RSS and USS).

The browser page runs on the participant's laptop, so it is not the hub's cost. It is stood in for by an
``rtkit`` session in this process (``transport="websocket"``, base URL ``proxy/<port>/v1`` on the server), which
talks without pause: a 1 s tone every 3 s, each echoed back by the emulator, both ways in real time. That is
the worst case (a whole class talking at once). What the stand-in does not do is the page's widget traffic to
the kernel (levels, events and ``getStats`` readings as comm messages), so the hub's real cost is somewhat higher.

The servers run with authentication off on loopback (the stand-in cannot carry both Jupyter's token and the
``ek_`` key in one ``Authorization`` header); nothing else differs from a hub's single-user server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
from jupyter_client.asynchronous import AsyncKernelClient

from benchmarks._common import Options, Report, Row, command, fmt, markdown_table
from benchmarks._servers import ServerProcess, free_port, spawn, stopped_on_error
from rtkit._lab_server import lab_launch, wait_until_up
from rtkit.audio.pcm import REALTIME_RATE, tone
from rtkit.audio.sinks import NullSink
from rtkit.audio.sources import PcmSource
from rtkit.keys import IssuerKeys
from rtkit.session import RealtimeSession, ReconnectPolicy
from rtkit.tokens import TokenIssuer

NAME = "workshop"
#: The lesson's first cell, as every notebook starts; the last line tells us where the emulator listens.
FIRST_CELL = """\
from rtkit.lab import start_backend
backend = await start_backend()
print("EMULATOR", backend.emulator.port, backend.emulator.api_key)
"""
START_TIMEOUT_S = 90.0
#: Share of the machine a class may use before it stutters: headroom for bursts, the hub and the OS.
HEADROOM = 0.8


@dataclass
class Participant:
    """One participant's hub side: the Jupyter server (its proxy and its kernel are in its process tree)."""

    server: ServerProcess
    port: int
    #: The server's runtime dir, where its kernels' connection files appear.
    runtime: Path
    emulator_port: int = 0
    api_key: str = ""
    tmp: tempfile.TemporaryDirectory[str] = field(default_factory=tempfile.TemporaryDirectory)

    def processes(self) -> list[psutil.Process]:
        root = self.server.ps
        return [root, *root.children(recursive=True)]

    def cpu_seconds(self) -> tuple[float, float]:
        """CPU seconds used so far by the Jupyter server itself (its proxy included) and by the whole tree."""
        server = total = 0.0
        for proc in self.processes():
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                total += times.user + times.system
                if proc.pid == self.server.proc.pid:
                    server = times.user + times.system
        return server, total

    def memory_mb(self) -> tuple[float, float]:
        """(RSS, USS) of the whole tree in MB; USS counts only pages no other process shares."""
        rss = uss = 0
        for proc in self.processes():
            with contextlib.suppress(psutil.Error):
                info = proc.memory_full_info()
                rss, uss = rss + info.rss, uss + info.uss
        return rss / 2**20, uss / 2**20

    async def stop(self) -> None:
        await self.server.stop()
        self.tmp.cleanup()


async def _run_first_cell(participant: Participant, kernel_id: str) -> None:
    """Run the lesson's first cell in the participant's kernel, through its connection file."""
    connection = participant.runtime / f"kernel-{kernel_id}.json"
    deadline = time.monotonic() + START_TIMEOUT_S
    while not connection.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"kernel {kernel_id} wrote no connection file")
        await asyncio.sleep(0.2)
    client = AsyncKernelClient()
    client.load_connection_file(str(connection))
    client.start_channels()
    printed: list[str] = []

    def keep_output(message: dict[str, Any]) -> None:
        if message["msg_type"] == "stream":
            printed.append(message["content"]["text"])
        elif message["msg_type"] == "error":
            printed.append("\n".join(message["content"]["traceback"]))

    try:
        await client.wait_for_ready(timeout=START_TIMEOUT_S)
        await client.execute_interactive(FIRST_CELL, output_hook=keep_output, timeout=START_TIMEOUT_S)
    finally:
        client.stop_channels()
    line = next((ln for ln in "".join(printed).splitlines() if ln.startswith("EMULATOR ")), "")
    if not line:
        raise RuntimeError(f"the first cell printed no emulator: {''.join(printed)[-300:]}")
    _, port, participant.api_key = line.split()
    participant.emulator_port = int(port)


async def start_participant() -> Participant:
    """``jupyter lab`` on a free loopback port with its own Jupyter dirs, one kernel, the first cell run in it."""
    port = free_port()
    tmp = tempfile.TemporaryDirectory(prefix="rtkit-workshop-")
    root = Path(tmp.name)
    launch = lab_launch(root, root, port, token="", log_level="WARN")
    participant = Participant(
        ServerProcess(*await spawn(launch.args, env=launch.env)), port, launch.runtime_dir, tmp=tmp
    )
    async with stopped_on_error(participant.server):
        proc = participant.server.proc
        await asyncio.to_thread(
            wait_until_up, launch, lambda: proc.returncode, participant.server.stderr_tail, START_TIMEOUT_S
        )
        async with httpx.AsyncClient(timeout=5.0) as http:
            kernel = (await http.post(f"{launch.url}/api/kernels", json={"name": "python3"})).json()
        await _run_first_cell(participant, kernel["id"])
    return participant


@contextlib.asynccontextmanager
async def participants(count: int) -> AsyncIterator[list[Participant]]:
    started: list[Participant] = []
    try:
        for _ in range(count):  # one at a time: each start is CPU-bound, in parallel they only time out
            started.append(await start_participant())
        yield started
    finally:
        await asyncio.gather(*(p.stop() for p in started), return_exceptions=True)


def _talker(participant: Participant) -> tuple[RealtimeSession, TokenIssuer]:
    """The page's stand-in: the kernel's key (minted on loopback, as the kernel does), the call through the proxy."""
    issuer = TokenIssuer(participant.api_key, base_url=f"http://127.0.0.1:{participant.emulator_port}/v1")
    speech = np.concatenate([tone(1.0), np.zeros(2 * REALTIME_RATE, dtype=np.int16)])
    session = RealtimeSession(
        IssuerKeys(issuer),
        {"audio": {"input": {"turn_detection": {"type": "server_vad", "silence_duration_ms": 500}}}},
        base_url=f"http://127.0.0.1:{participant.port}/proxy/{participant.emulator_port}/v1",
        source=PcmSource(speech, REALTIME_RATE, lead_seconds=0.3, loop=True),
        sink=NullSink(realtime=True),
        transport="websocket",
        reconnect=ReconnectPolicy(max_attempts=0),
    )
    return session, issuer


@dataclass
class Level:
    """What one level (N participants talking at once) measured, per participant."""

    talking: int
    cpu_pct: list[float] = field(default_factory=list)
    server_pct: list[float] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)
    uss_mb: list[float] = field(default_factory=list)
    replies: list[int] = field(default_factory=list)
    machine_pct: float = 0.0
    stand_in_pct: float = 0.0


async def _measure_idle(group: list[Participant], window: float) -> Level:
    level = Level(0)
    before = [p.cpu_seconds() for p in group]
    await asyncio.sleep(window)
    _record(level, group, before, window)
    return level


def _record(level: Level, group: list[Participant], before: list[tuple[float, float]], window: float) -> None:
    """Each participant's CPU share since ``before`` over ``window`` seconds, and its memory now."""
    for p, (server_before, total_before) in zip(group, before, strict=True):
        server, total = p.cpu_seconds()
        level.cpu_pct.append(100 * (total - total_before) / window)
        level.server_pct.append(100 * (server - server_before) / window)
        rss, uss = p.memory_mb()
        level.rss_mb.append(rss)
        level.uss_mb.append(uss)


async def _measure_talking(group: list[Participant], window: float) -> Level:
    level = Level(len(group))
    calls = [_talker(p) for p in group]
    me = psutil.Process()
    try:
        await asyncio.gather(*(session.connect() for session, _ in calls))
        await asyncio.sleep(2.0)  # past the connect and the first turn's lead
        done_before = [len(s.metrics.turns) for s, _ in calls]
        before = [p.cpu_seconds() for p in group]
        mine = sum(me.cpu_times()[:2])
        psutil.cpu_percent()
        await asyncio.sleep(window)
        level.machine_pct = psutil.cpu_percent()
        level.stand_in_pct = 100 * (sum(me.cpu_times()[:2]) - mine) / window
        _record(level, group, before, window)
        level.replies = [len(s.metrics.turns) - n for (s, _), n in zip(calls, done_before, strict=True)]
    finally:
        for session, issuer in calls:
            with contextlib.suppress(Exception):
                await session.disconnect()
            await issuer.aclose()
    return level


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else 0.0


async def run(opts: Options) -> Report:
    most = 2 if opts.quick else 3
    window = max(6.0, opts.window)
    levels: list[Level] = []
    async with participants(most) as group:
        await asyncio.sleep(3.0)  # let the kernels settle after their first cell
        levels.append(await _measure_idle(group, window))
        for n in range(1, most + 1):
            levels.append(await _measure_talking(group[:n], window))
    cmd = command(NAME, opts)
    idle, busiest = levels[0], levels[-1]
    cpu_each = _mean(busiest.cpu_pct)
    uss_each = max(_mean(busiest.uss_mb), _mean(idle.uss_mb))
    cores, memory_mb = psutil.cpu_count() or 1, psutil.virtual_memory().total / 2**20
    by_cpu = HEADROOM * cores * 100 / cpu_each if cpu_each else float("inf")
    by_memory = HEADROOM * memory_mb / uss_each if uss_each else float("inf")
    rows = [
        Row(
            "workshop: one participant idle (Jupyter server + kernel + emulator), CPU / RSS / USS",
            f"{fmt(_mean(idle.cpu_pct))} % of a core / {fmt(_mean(idle.rss_mb))} / {fmt(_mean(idle.uss_mb))} MB",
            "—",
            cmd,
        ),
        Row(
            f"workshop: one participant talking nonstop, {busiest.talking} at once (WebSocket via the proxy)",
            f"{fmt(cpu_each)} % of a core / {fmt(_mean(busiest.rss_mb))} / {fmt(uss_each)} MB USS",
            "—",
            cmd,
        ),
        Row(
            f"workshop: participants this machine carries ({cores} cores, {memory_mb / 1024:.1f} GB, "
            f"{HEADROOM:.0%} of it, all talking)",
            f"{int(min(by_cpu, by_memory))} (CPU allows {int(by_cpu)}, memory {int(by_memory)})",
            "—",
            cmd,
        ),
    ]
    table = [
        [
            "idle" if lv.talking == 0 else str(lv.talking),
            " / ".join(fmt(c) for c in lv.cpu_pct),
            " / ".join(fmt(c) for c in lv.server_pct),
            " / ".join(fmt(m) for m in lv.rss_mb),
            " / ".join(fmt(m) for m in lv.uss_mb),
            " / ".join(str(r) for r in lv.replies) or "—",
            fmt(lv.stand_in_pct) if lv.talking else "—",
            fmt(lv.machine_pct) if lv.talking else "—",
        ]
        for lv in levels
    ]
    header = [
        "talking",
        "hub CPU per participant (% of a core)",
        "of which the Jupyter server and its proxy",
        "RSS (MB)",
        "USS (MB)",
        f"replies in {window:g} s",
        "stand-ins' CPU %",
        "machine CPU %",
    ]
    details = [
        f"Workshop set-up per participant (`{NAME}`; {window:g} s windows; each column lists the participants):",
        "",
        *markdown_table(header, table),
        "",
        json.dumps({"cpu_pct_per_participant": round(cpu_each, 1), "uss_mb_per_participant": round(uss_each, 1)}),
    ]
    return Report(rows, details)
