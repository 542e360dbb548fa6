"""The load side of the broker benchmark, run in its own process: ``python -m benchmarks._broker_load SPEC``.

``SPEC`` is one JSON object; the result is one JSON object on stdout. The client is a minimal
HTTP/1.1 keep-alive client on ``asyncio.Protocol`` (one request in flight per connection,
``Content-Length`` bodies only), because httpx costs several times more CPU per request than the
broker's own handler and would measure itself. Modes:

* ``rate``: open loop at a fixed rate over a few connections; latency is counted from each
  request's *scheduled* time, so a stall in the server shows up in the percentiles instead of
  silently lowering the offered rate (no coordinated omission).
* ``max``: closed loop, every connection sends its next request as soon as the last is answered.
* ``mint``: sequential mints alternating between the emulator directly and the broker, one
  keep-alive connection to each, for the broker's added latency.

Every loop is bounded by a count and a deadline.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any
from urllib.parse import urlsplit


class _Conn(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection with at most one request in flight."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future[int] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buf[:end]).lower()
        at = head.find(b"\r\ncontent-length:")
        length = 0
        if at >= 0:
            stop = head.find(b"\r\n", at + 2)
            length = int(head[at + 17 : stop if stop >= 0 else None])
        total = end + 4 + length
        if len(self.buf) < total:
            return
        del self.buf[:total]
        waiter.set_result(int(head[9:12]))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection closed"))

    async def request(self, raw: bytes, timeout: float = 10.0) -> int:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        return await asyncio.wait_for(self.waiter, timeout)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def _connect(url: str) -> _Conn:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    _, conn = await asyncio.get_running_loop().create_connection(_Conn, host, port)
    return conn


def _post(url: str, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    parts = urlsplit(url)
    lines = [
        f"POST {parts.path or '/'} HTTP/1.1",
        f"Host: {parts.netloc}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        *(f"{k}: {v}" for k, v in (headers or {}).items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _us(seconds: float) -> float:
    return round(seconds * 1e6, 1)


async def fixed_rate(url: str, body: str, rate: float, duration: float, conns: int) -> dict[str, Any]:
    raw = _post(url, body.encode())
    connections = [await _connect(url) for _ in range(conns)]
    for c in connections:  # unmeasured: first request on each connection
        await c.request(raw)
    total = int(rate * duration)
    latency: list[float] = []
    service: list[float] = []
    errors = 0
    start = time.perf_counter() + 0.05

    async def worker(index: int) -> None:
        nonlocal errors
        conn = connections[index]
        for k in range(index, total, conns):
            scheduled = start + k / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            sent = time.perf_counter()
            try:
                status = await conn.request(raw)
            except (TimeoutError, ConnectionError):
                errors += 1
                return
            done = time.perf_counter()
            if status != 200:
                errors += 1
            latency.append(_us(done - scheduled))
            service.append(_us(done - sent))

    await asyncio.wait_for(asyncio.gather(*(worker(i) for i in range(conns))), duration + 15.0)
    elapsed = time.perf_counter() - start
    for c in connections:
        c.close()
    return {"latency_us": latency, "service_us": service, "errors": errors, "elapsed": elapsed}


async def closed_loop(url: str, body: str, duration: float, conns: int) -> dict[str, Any]:
    raw = _post(url, body.encode())
    connections = [await _connect(url) for _ in range(conns)]
    for c in connections:
        await c.request(raw)
    latency: list[float] = []
    errors = 0
    start = time.perf_counter()
    deadline = start + duration

    async def worker(conn: _Conn) -> None:
        nonlocal errors
        for _ in range(10_000_000):  # bounded by the deadline long before this
            sent = time.perf_counter()
            if sent >= deadline:
                return
            try:
                status = await conn.request(raw)
            except (TimeoutError, ConnectionError):
                errors += 1
                return
            latency.append(_us(time.perf_counter() - sent))
            if status != 200:
                errors += 1

    await asyncio.wait_for(asyncio.gather(*(worker(c) for c in connections)), duration + 15.0)
    elapsed = time.perf_counter() - start
    for c in connections:
        c.close()
    return {"count": len(latency), "latency_us": latency, "errors": errors, "elapsed": elapsed}


async def mint(
    emulator_url: str, main_key: str, upstream_body: str, broker_url: str, count: int, warmup: int, tag: str
) -> dict[str, Any]:
    """Sequential mints, alternating direct (a) and through the broker (b), the order flipped each round."""
    direct, brokered = await _connect(emulator_url), await _connect(broker_url)
    direct_raw = _post(emulator_url, upstream_body.encode(), {"Authorization": f"Bearer {main_key}"})
    a: list[float] = []
    b: list[float] = []
    errors = {"direct": 0, "broker": 0}
    deadline = time.perf_counter() + 45.0

    async def one(which: str, i: int) -> None:
        if which == "direct":
            conn, raw, into = direct, direct_raw, a
        else:
            body = json.dumps({"sessionId": f"{tag}-{i}", "capabilities": ["audio"]}).encode()
            conn, raw, into = brokered, _post(broker_url, body), b
        sent = time.perf_counter()
        status = await conn.request(raw)
        elapsed = time.perf_counter() - sent
        if status != 200:
            errors[which] += 1
        elif i >= warmup:
            into.append(_us(elapsed))

    for i in range(warmup + count):
        if time.perf_counter() > deadline:
            break
        order = ("direct", "broker") if i % 2 == 0 else ("broker", "direct")
        for which in order:
            await one(which, i)
    direct.close()
    brokered.close()
    return {"direct_us": a, "broker_us": b, "errors": errors}


async def main(spec: dict[str, Any]) -> dict[str, Any]:
    mode = spec.pop("mode")
    if mode == "rate":
        return await fixed_rate(**spec)
    if mode == "max":
        return await closed_loop(**spec)
    if mode == "mint":
        return await mint(**spec)
    raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    result = asyncio.run(main(json.loads(sys.argv[1])))
    sys.stdout.write(json.dumps(result) + "\n")
