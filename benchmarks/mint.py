"""Mint latency: how long a backend waits for an ephemeral key from ``POST /realtime/client_secrets``.

Sequential requests against an in-process emulator, so the figure is the emulator's handler plus
loopback HTTP, as a test suite or notebook would see it: once on one keep-alive ``httpx.AsyncClient``
(a backend's pooled client) and once with a new connection per request.
"""

from __future__ import annotations

import time

import httpx

from benchmarks._common import SESSION, Options, Report, Row, command, median_p95, ms
from rtkit.emulator import Emulator

NAME = "mint"


async def _mint(http: httpx.AsyncClient, base_url: str, key: str) -> float | None:
    """One mint's latency in seconds, or None if it did not succeed."""
    url, headers = f"{base_url}/realtime/client_secrets", {"Authorization": f"Bearer {key}"}
    start = time.perf_counter()
    response = await http.post(url, headers=headers, json={"session": SESSION})
    elapsed = time.perf_counter() - start
    return elapsed if response.status_code == 200 else None


async def keep_alive(base_url: str, key: str, count: int) -> list[float | None]:
    """Sequential mints on one connection: what a backend with a pooled client sees."""
    async with httpx.AsyncClient(timeout=10.0) as http:
        await _mint(http, base_url, key)  # unmeasured: opens the connection
        return [await _mint(http, base_url, key) for _ in range(count)]


async def fresh_connections(base_url: str, key: str, count: int) -> list[float | None]:
    """Sequential mints, each on a new connection (TCP handshake included). Compared with the
    keep-alive figure it exposes per-connection effects such as Nagle/delayed-ACK stalls."""
    results = []
    for _ in range(count):
        async with httpx.AsyncClient(timeout=10.0) as http:
            results.append(await _mint(http, base_url, key))
    return results


def _value(results: list[float | None]) -> str:
    times = [r for r in results if r is not None]
    value = median_p95(ms(times))
    return value + (f"; {len(results) - len(times)} failed" if len(times) < len(results) else "")


async def run(opts: Options) -> Report:
    count = 50 if opts.quick else 200
    async with Emulator() as emu:
        pooled = await keep_alive(emu.base_url, emu.api_key, count)
        fresh = await fresh_connections(emu.base_url, emu.api_key, count // 4)
    cmd = command(NAME, opts)
    return Report(
        [
            Row(f"Mint ephemeral key, one keep-alive client ({count})", _value(pooled), "—", cmd),
            Row(f"Mint ephemeral key, new connection each ({len(fresh)})", _value(fresh), "—", cmd),
        ]
    )
