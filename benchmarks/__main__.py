"""``python -m benchmarks``: run every benchmark (or ``--only`` some) and print one markdown table.

Each benchmark runs in its own event loop so one cannot slow the next with leftover tasks; a
benchmark that crashes becomes a row saying so, and the others still run.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from benchmarks import (
    audio,
    broker,
    capacity,
    connect,
    drop_detection,
    hostile,
    mint,
    roundtrip,
    session_vs_browser,
    workshop,
)
from benchmarks._common import Options, Report, Row, command, markdown_table

BENCHMARKS: dict[str, Callable[[Options], Coroutine[Any, Any, Report]]] = {
    mint.NAME: mint.run,
    connect.NAME: connect.run,
    roundtrip.NAME: roundtrip.run,
    audio.NAME: audio.run,
    capacity.NAME: capacity.run,
    broker.NAME: broker.run,
    session_vs_browser.NAME: session_vs_browser.run,
    hostile.NAME: hostile.run,
    drop_detection.NAME: drop_detection.run,
    workshop.NAME: workshop.run,
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller counts and shorter windows (~1 minute)")
    parser.add_argument(
        "--calls",
        type=int,
        default=30,
        metavar="N",
        help="most concurrent calls the capacity benchmark tries (default 30)",
    )
    parser.add_argument(
        "--window",
        type=float,
        default=None,
        metavar="SECONDS",
        help="capacity measurement window per step (default 8, or 4 with --quick)",
    )
    parser.add_argument(
        "--caller-procs",
        type=int,
        default=2,
        metavar="K",
        help="worker processes the capacity benchmark's callers are spread over (default 2)",
    )
    parser.add_argument(
        "--emulator-workers",
        type=int,
        default=0,
        metavar="W",
        help="run the capacity benchmark's emulator with W worker processes for its calls (default 0)",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=list(BENCHMARKS),
        default=None,
        metavar="NAME",
        help=f"run only these: {', '.join(BENCHMARKS)}",
    )
    return parser


def _run_one(name: str, opts: Options) -> Report:
    started = time.perf_counter()
    try:
        report = asyncio.run(BENCHMARKS[name](opts))
    except Exception as exc:  # report, don't abort: the other benchmarks are still worth having
        why = f"{type(exc).__name__}: {exc}"[:200]
        report = Report([Row(f"{name}: failed", why, "—", command(name, opts))])
    print(f"  {name}: {time.perf_counter() - started:.1f} s", flush=True)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    window = args.window if args.window is not None else (4.0 if args.quick else 8.0)
    calls, procs = max(1, args.calls), max(1, args.caller_procs)
    opts = Options(
        quick=args.quick,
        calls=calls,
        window=max(1.0, window),
        caller_procs=procs,
        emulator_workers=max(0, args.emulator_workers),
    )
    logging.basicConfig(level=logging.ERROR)
    started = time.perf_counter()
    print("running benchmarks…", flush=True)
    reports = [_run_one(name, opts) for name in args.only or BENCHMARKS]
    rows = [[r.metric, r.value, r.target, r.command] for report in reports for r in report.rows]
    print()
    print("\n".join(markdown_table(["metric", "value", "target", "command"], rows)))
    for report in reports:
        if report.details:
            print()
            print("\n".join(report.details))
    print(f"\ntotal runtime: {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
