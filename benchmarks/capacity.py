"""Capacity: how many live calls one emulator process carries at 50 audio frames/s each way.

The emulator runs as ``rtkit emulator`` in its own process (as in a classroom); the callers run in
``--caller-procs`` worker processes (see ``_callers``), and this process only orchestrates. All of
them share the machine's cores, as on a laptop, so the CPU of each side is reported next to the
audio rates: that is what tells an emulator limit from a caller or machine limit.

Each call streams a continuous low-level tone with turn detection off (so the emulator only
listens) and the emulator streams its track (silence) back. Over a fixed window we count:

* caller tx: frames each probe's microphone track produced (the load we offered);
* emulator rx: audio the emulator's engine received, read back without touching its code by
  clearing the input buffer at the window's start and committing it at the end: with
  transcription on, ``conversation.item.input_audio_transcription.completed`` reports the
  committed audio's duration in ``usage.seconds``;
* caller rx: RTP packets that reached each probe (what the emulator managed to send; its track
  never drops frames, so falling short means it is falling behind real time) and frames decoded;
* round trips on the data channel under that load, and the largest gap between received frames.

Every level runs for the same window; a level passes when every call keeps ≥ 49 frames/s both ways.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from typing import Any

import httpx
import numpy as np
import psutil

from benchmarks._callers import BARRIER_TIMEOUT_S, PING_TIMEOUT_S, worker_entry
from benchmarks._common import Options, Report, Row, command, fmt, markdown_table, ms
from benchmarks._servers import ServerProcess, emulator_command, free_port, spawn, stopped_on_error

NAME = "capacity"
OK_FPS = 49.0
#: The parent's bounds, each a little past the callers' own (see ``_callers``): from spawning the
#: workers to the window's start (they open calls for up to OPEN_BUDGET_S, then meet at the barrier),
#: from the window's end to their answers (commit, transcription result within 15 s, hang-up), and for
#: them to exit after SIGTERM, then SIGKILL.
START_TIMEOUT_S = BARRIER_TIMEOUT_S + 30
COLLECT_TIMEOUT_S = 60.0
REAP_TIMEOUT_S = 10.0
DRAIN_TIMEOUT_S = 10.0


@dataclass
class EmulatorProcess(ServerProcess):
    """``rtkit emulator`` in a child process, with what it printed at start."""

    base_url: str = ""
    admin_token: str = ""

    @property
    def origin(self) -> str:
        return self.base_url.removesuffix("/v1")


async def _read_banner(emu: EmulatorProcess, timeout: float) -> None:
    """Read the base URL and admin token the emulator prints at start, within ``timeout``."""
    deadline = time.monotonic() + timeout
    assert emu.proc.stdout is not None
    while not emu.admin_token and time.monotonic() < deadline:
        try:
            line = (await asyncio.wait_for(emu.proc.stdout.readline(), deadline - time.monotonic())).decode()
        except TimeoutError:
            break
        if not line:
            break
        if line.startswith("rtkit emulator on "):
            emu.base_url = line.split()[3]
        if "admin token" in line:
            emu.admin_token = line.rsplit(":", 1)[1].strip()
    if not (emu.base_url and emu.admin_token):
        raise RuntimeError(f"the emulator did not start: {emu.stderr_tail() or 'no output'}")


async def start_emulator(timeout: float = 30.0, workers: int = 0) -> EmulatorProcess:
    """Start ``python -m rtkit emulator`` and read its base URL and admin token from stdout."""
    args = emulator_command(free_port(), "--workers", str(workers))
    emu = EmulatorProcess(*await spawn(args, stdout=asyncio.subprocess.PIPE))
    async with stopped_on_error(emu):
        await _read_banner(emu, timeout)
    return emu


@dataclass
class Step:
    """What one concurrency level measured."""

    wanted: int
    procs: int = 1
    setup_s: float = 0.0
    opened: int = 0
    connected_on_emulator: int = 0
    caller_rx: list[float] = field(default_factory=list)  # frames/s per call
    caller_tx: list[float] = field(default_factory=list)
    caller_rtp: list[float] = field(default_factory=list)  # RTP packets/s per call, before decoding
    emulator_rx: list[float] = field(default_factory=list)
    max_gap_ms: float = 0.0
    rtts: list[float] = field(default_factory=list)
    lost_pings: int = 0
    emulator_cpu: float = 0.0
    caller_cpu: float = 0.0
    machine_cpu: float = 0.0
    errors: list[str] = field(default_factory=list)
    #: Why this level could not run to the end (a stage failed or timed out); empty when it did.
    stalled: str = ""

    @property
    def ok(self) -> bool:
        if self.stalled or self.opened != self.wanted or not self.caller_rx or len(self.emulator_rx) != self.opened:
            return False
        return min(self.caller_rx) >= OK_FPS and min(self.emulator_rx) >= OK_FPS


async def _connected_on_emulator(emu: EmulatorProcess) -> int:
    async with httpx.AsyncClient(timeout=5.0) as http:
        headers = {"X-Rtkit-Admin-Token": emu.admin_token}
        response = await http.get(f"{emu.origin}/_rtkit/calls", headers=headers)
    return sum(1 for c in response.json()["calls"] if c["state"] == "connected")


async def _wait_drained(emu: EmulatorProcess, timeout: float = DRAIN_TIMEOUT_S) -> str:
    """Wait (bounded) until the emulator has let go of every call, so steps do not overlap: "" or why not."""
    deadline = time.monotonic() + timeout
    why = ""
    async with httpx.AsyncClient(timeout=2.0) as http:
        while time.monotonic() < deadline:
            try:
                left = (await http.get(f"{emu.origin}/_rtkit/health")).json()["calls"]
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                why = f"the emulator's health check failed ({type(exc).__name__})"
            else:
                if left == 0:
                    return ""
                why = f"{left} calls still open on the emulator"
            await asyncio.sleep(0.2)
    return f"{why} {timeout:g} s after the step"


def _shares(total: int, procs: int) -> list[int]:
    """Split ``total`` calls over at most ``procs`` workers as evenly as possible."""
    procs = max(1, min(procs, total))
    return [total // procs + (1 if i < total % procs else 0) for i in range(procs)]


class CpuMeter:
    """CPU of the emulator, of all caller workers together, and of the whole machine, since ``start()``."""

    def __init__(self, emu: EmulatorProcess, workers: Sequence[BaseProcess]) -> None:
        # The emulator and, with --emulator-workers, its worker processes: their CPU adds up.
        self.emulators = [emu.ps, *emu.ps.children(recursive=True)]
        self.callers = [psutil.Process(w.pid) for w in workers if w.pid is not None]

    def start(self) -> None:
        for p in (*self.emulators, *self.callers):
            p.cpu_percent(None)
        psutil.cpu_percent(None)

    def read(self, step: Step) -> None:
        step.emulator_cpu = sum(p.cpu_percent(None) for p in self.emulators)
        step.machine_cpu = psutil.cpu_percent(None)
        step.caller_cpu = sum(p.cpu_percent(None) for p in self.callers)


def _merge(step: Step, result: dict[str, Any]) -> None:
    step.opened += result.get("opened", 0)
    step.setup_s = max(step.setup_s, result.get("setup_s", 0.0))
    for key in ("caller_rx", "caller_tx", "caller_rtp", "emulator_rx", "rtts"):
        getattr(step, key).extend(result.get(key, []))
    step.max_gap_ms = max(step.max_gap_ms, result.get("max_gap_ms", 0.0))
    step.lost_pings += result.get("lost_pings", 0)
    step.errors.extend(result.get("errors", []))


async def _collect(workers: Sequence[BaseProcess], results: Any, step: Step, timeout: float) -> bool:
    """Merge each worker's numbers as they arrive, until all have answered (True), all have exited, or ``timeout``."""
    deadline = time.monotonic() + timeout
    answered = 0
    while answered < len(workers) and time.monotonic() < deadline:
        exited = not any(w.is_alive() for w in workers)  # read before get(): a worker puts, then exits
        try:  # short gets: a cancelled run must not leave a thread blocked here for long
            result = await asyncio.to_thread(results.get, True, min(1.0, max(0.0, deadline - time.monotonic())))
        except queue.Empty:
            if exited:
                break
            continue
        _merge(step, result)
        answered += 1
    if answered < len(workers):
        missing = len(workers) - answered
        why = "exited without an answer" if not any(w.is_alive() for w in workers) else f"not answered in {timeout:g} s"
        step.stalled = step.stalled or f"{missing} of {len(workers)} caller workers {why}"
    return answered == len(workers)


async def _exited(workers: Sequence[BaseProcess], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while any(w.is_alive() for w in workers):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def _reap(workers: Sequence[BaseProcess], grace: float) -> str:
    """Let the workers exit within ``grace`` s, then terminate, then kill: "" or which survived."""
    if await _exited(workers, grace):
        return ""
    for w in workers:
        if w.is_alive():
            w.terminate()
    if await _exited(workers, REAP_TIMEOUT_S):
        return ""
    for w in workers:
        if w.is_alive():
            w.kill()
    if await _exited(workers, REAP_TIMEOUT_S):
        return ""
    return f"caller workers {[w.pid for w in workers if w.is_alive()]} survived SIGKILL"


async def _measure(emu: EmulatorProcess, workers: Sequence[BaseProcess], window: float, step: Step) -> None:
    """This process's side of the window: who is connected, and the CPU of every process while it lasts."""
    window_end = time.monotonic() + window
    cpu = CpuMeter(emu, workers)
    cpu.start()
    step.connected_on_emulator = await _connected_on_emulator(emu)
    await asyncio.sleep(max(0.0, window_end - time.monotonic()))
    cpu.read(step)


async def run_step(emu: EmulatorProcess, wanted: int, opts: Options) -> Step:
    """Spawn caller workers for ``wanted`` calls, measure one window together, collect their numbers.

    Bounded at every stage; a stage that cannot finish sets ``stalled``, and the workers are always
    reaped (terminated, then killed) before this returns or raises.
    """
    ctx = multiprocessing.get_context("spawn")
    shares = _shares(wanted, opts.caller_procs)
    barrier, results = ctx.Barrier(len(shares) + 1), ctx.Queue()
    workers = [
        ctx.Process(target=worker_entry, args=(emu.base_url, n, opts.window, barrier, results), daemon=True)
        for n in shares
    ]
    step = Step(wanted, procs=len(workers))
    grace = 0.0  # for the workers to exit by themselves: none unless they have all answered
    collect_timeout = COLLECT_TIMEOUT_S
    try:
        for w in workers:
            w.start()
        started = time.monotonic()
        try:
            await asyncio.to_thread(barrier.wait, START_TIMEOUT_S)
        except threading.BrokenBarrierError:
            if time.monotonic() - started >= START_TIMEOUT_S:
                step.stalled = f"the caller workers were not all ready within {START_TIMEOUT_S:g} s"
                collect_timeout = REAP_TIMEOUT_S  # past their opening budget: those still silent are wedged
            else:
                step.stalled = "a caller worker failed before the window"
        else:
            try:
                await _measure(emu, workers, opts.window, step)
            except Exception as exc:  # the workers still measure: collect what they saw
                step.stalled = f"measuring failed: {type(exc).__name__}: {exc}"
        if await _collect(workers, results, step, collect_timeout):
            grace = REAP_TIMEOUT_S
    finally:
        barrier.abort()  # wakes a barrier.wait thread left behind by a cancelled run; harmless once passed
        survived = await _reap(workers, grace)
        if survived:
            step.errors.append(survived)
    left = await _wait_drained(emu)
    if left:
        step.errors.append(left)
    return step


def levels(opts: Options) -> list[int]:
    """Concurrency levels to try: 1, 5, 10, 20, 30 (fewer with --quick), capped at and including --calls."""
    base = [1, 10] if opts.quick else [1, 5, 10, 20, 30]
    chosen = {n for n in base if n < opts.calls} | {opts.calls}
    if opts.calls > 30 and not opts.quick:
        chosen |= set(range(40, opts.calls, 10))
    return sorted(chosen)


async def run(opts: Options) -> Report:
    emu = await start_emulator(workers=opts.emulator_workers)
    steps: list[Step] = []
    try:
        for n in levels(opts):
            # Every level runs, even past the first miss: the target level shows how far off it is. Not past
            # a stall or the emulator's exit, though: a higher level would only stall too, or cannot run.
            step = await run_step(emu, n, opts)
            steps.append(step)
            if emu.proc.returncode is not None:
                step.stalled = f"the emulator exited ({emu.proc.returncode}): {emu.stderr_tail() or 'no output'}"
            if step.stalled:
                break
    finally:
        await emu.stop()
    return _report(steps, opts)


def _mn_med(values: list[float]) -> str:
    return f"{fmt(min(values))} / {fmt(float(np.median(values)))}" if values else "—"


def _detail_row(s: Step) -> list[str]:
    rtt = ms(s.rtts)
    rtt_text = f"{fmt(float(np.median(rtt)))} / {fmt(float(np.percentile(rtt, 95)))}" if rtt else "—"
    if not rtt and s.lost_pings:
        rtt_text = f"> {PING_TIMEOUT_S * 1000:.0f}"
    if s.lost_pings:
        rtt_text += f" ({s.lost_pings} lost)"
    calls = [f"{s.opened}/{s.wanted}", str(s.procs), str(s.connected_on_emulator), f"{s.setup_s:.1f}"]
    rates = [_mn_med(s.caller_tx), _mn_med(s.emulator_rx), _mn_med(s.caller_rtp), _mn_med(s.caller_rx)]
    rates += [fmt(s.max_gap_ms), rtt_text]
    cpu = [f"{s.emulator_cpu:.0f}", f"{s.caller_cpu:.0f}", f"{s.machine_cpu:.0f}"]
    return [*calls, *rates, *cpu, "yes" if s.ok else "**no**"]


HEADER = [
    "calls open",
    "caller procs",
    "connected (emulator)",
    "setup s",
    "caller tx fps min/med",
    "emulator rx fps min/med",
    "caller rx RTP pkt/s min/med",
    "caller rx fps min/med",
    "max rx gap ms",
    "DC RTT ms med/p95",
    "emulator CPU %",
    "callers CPU %",
    "machine CPU %",
    f"all ≥ {OK_FPS:g} fps",
]


def _low(values: list[float]) -> float:
    return min(values) if values else 0.0


def diagnose(s: Step) -> str:
    """Which leg fell short first, in the order audio flows: offered, taken in, sent back, decoded."""
    if s.stalled:
        return f"stalled: {s.stalled}"
    if s.opened < s.wanted:
        return f"only {s.opened} of {s.wanted} calls opened"
    if _low(s.caller_tx) < OK_FPS:
        return f"the callers could not offer the load (mic tx {fmt(_low(s.caller_tx))} fps)"
    if _low(s.emulator_rx) < OK_FPS:
        return f"the emulator took in only {fmt(_low(s.emulator_rx))} fps"
    if _low(s.caller_rtp) < OK_FPS:
        sent = fmt(_low(s.caller_rtp))
        return f"the emulator's outgoing audio fell behind real time ({sent} RTP pkt/s per call)"
    return f"the callers decoded only {fmt(_low(s.caller_rx))} fps of what arrived"


def _failure(s: Step) -> str:
    """The failing level in one line: what fell short, and how busy each process was."""
    cpu = f"CPU emulator {s.emulator_cpu:.0f}%, callers {s.caller_cpu:.0f}%, machine {s.machine_cpu:.0f}%"
    errors = f"; {len(s.errors)} errors" if s.errors else ""
    return f"at {s.wanted} calls {diagnose(s)}; {cpu}{errors}"


def _report(steps: list[Step], opts: Options) -> Report:
    good = [s.wanted for s in steps if s.ok]
    best = max(good) if good else 0
    tried = ", ".join(str(s.wanted) for s in steps)
    skipped = [str(n) for n in levels(opts) if n > steps[-1].wanted] if steps else []
    not_tried = f"; not tried {', '.join(skipped)}" if skipped else ""
    value = f"{best} calls (tried {tried}{not_tried}; {opts.window:g} s window each)"
    failed = [s for s in steps if not s.ok]
    if failed:
        value += f"; first miss at {failed[0].wanted}: {diagnose(failed[0])}"
    extra = " ".join(
        ([f"--calls {opts.calls}"] if opts.calls != 30 else [])
        + ([f"--caller-procs {opts.caller_procs}"] if opts.caller_procs != 2 else [])
        + ([f"--emulator-workers {opts.emulator_workers}"] if opts.emulator_workers else [])
    )
    details = [
        f"Capacity detail (emulator in its own process; {psutil.cpu_count()} CPUs; process CPU % is of one "
        "core, machine % of all cores and includes anything else running):",
        "",
        *markdown_table(HEADER, [_detail_row(s) for s in steps]),
        *[f"\nAt {_failure(s).removeprefix('at ')}." for s in failed],
        *[f"\nErrors at {s.wanted} calls: {'; '.join(s.errors[:3])}" for s in steps if s.errors],
    ]
    return Report(
        [
            Row(
                f"Capacity: concurrent calls at ≥ {OK_FPS:g} frames/s both ways",
                value,
                "30 calls",
                command(NAME, opts, extra),
            )
        ],
        details,
    )
