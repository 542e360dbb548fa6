"""Shared pieces: options, result rows, statistics and the data-channel ping every benchmark reuses."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tests.probe import ProbeCall

PYTHON = ".venv/bin/python"
#: The emulator's default main key (``rtkit emulator`` without ``--api-key``).
MAIN_KEY = "sk-emulator"
SESSION = {"type": "realtime", "model": "gpt-realtime"}


@dataclass(frozen=True)
class Options:
    """What the command line asked for; each benchmark scales its counts from it."""

    quick: bool = False
    calls: int = 30
    window: float = 8.0
    caller_procs: int = 2
    emulator_workers: int = 0


@dataclass
class Row:
    """One line of the results table."""

    metric: str
    value: str
    target: str
    command: str


@dataclass
class Report:
    """A benchmark's rows, plus optional markdown printed under the main table (details, notes)."""

    rows: list[Row] = field(default_factory=list)
    details: list[str] = field(default_factory=list)


def command(name: str, opts: Options, extra: str = "") -> str:
    """The command that reruns just this benchmark with the same options, for the table's last column."""
    parts = [f"{PYTHON} -m benchmarks --only {name}"]
    if opts.quick:
        parts.append("--quick")
    if extra:
        parts.append(extra)
    return "`" + " ".join(parts) + "`"


def ms(seconds: Sequence[float]) -> list[float]:
    return [s * 1000.0 for s in seconds]


def median_p95(values_ms: Sequence[float], unit: str = "ms") -> str:
    """``median / p95`` with the sample count: the shape every latency row shares."""
    if not values_ms:
        return "no samples"
    arr = np.asarray(values_ms, dtype=float)
    med, p95 = float(np.median(arr)), float(np.percentile(arr, 95))
    return f"{fmt(med)} / {fmt(p95)} {unit} (median / p95, n={arr.size})"


def fmt(value: float) -> str:
    """Enough digits to compare runs, not more: 0.42, 4.2, 42, 420."""
    if value < 10:
        return f"{value:.2f}"
    if value < 100:
        return f"{value:.1f}"
    return f"{value:.0f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    cells = [list(header), *[list(r) for r in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return lines


class Pinger:
    """Round trips on a call's ``oai-events`` channel.

    The emulator answers every client event; retrieving an item that does not exist is the cheapest
    one it answers (an ``error`` naming our ``event_id``), and it changes no state, so it is a pure
    measure of the channel plus the engine's dispatch.
    """

    _ids = itertools.count()

    def __init__(self, call: ProbeCall) -> None:
        self.call = call
        self._waiting: dict[str, asyncio.Future[float]] = {}
        call.channel.on("message", self._on_message)

    def _on_message(self, message: str) -> None:
        if '"ping_' not in message:
            return
        now = time.perf_counter()
        event: dict[str, Any] = json.loads(message)
        event_id = str((event.get("error") or {}).get("event_id"))
        future = self._waiting.pop(event_id, None)
        if future is not None and not future.done():
            future.set_result(now)

    async def ping(self, timeout: float = 2.0) -> float | None:
        """One round trip in seconds, or None if the answer did not come within ``timeout``."""
        event_id = f"ping_{next(self._ids)}"
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._waiting[event_id] = future
        sent = time.perf_counter()
        self.call.send({"type": "conversation.item.retrieve", "item_id": "nope", "event_id": event_id})
        try:
            return await asyncio.wait_for(future, timeout) - sent
        except TimeoutError:
            self._waiting.pop(event_id, None)
            return None
