"""What a hostile run leaves behind: RSS, open file descriptors and live calls of both servers, before
and after.

``rtkit emulator`` and ``rtkit broker`` run as child processes, as an operator runs them. The run sends
each of issue 16's abuses in bulk: JSON nested 5,000 deep, 20 MB bodies, 1 MB headers, 10,000
headers, connections that never finish their headers (slowloris), WebSocket frames nested and
garbled, and SDP offers without ICE candidates that are never followed up (abandoned calls). Then it
waits for the servers' own bounds (header deadline, call connect bound) and measures again. The
figures say whether anything is kept: descriptors and calls must return to the baseline; RSS may stay
a little above it (the allocator keeps freed arenas), and must not grow with the size of the abuse.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sys
import time
from dataclasses import dataclass

import httpx
import psutil
import websockets
from aiortc import RTCPeerConnection

from benchmarks._common import MAIN_KEY, Options, Report, Row, command, fmt
from benchmarks._servers import ServerProcess, emulator_command, free_port, spawn, stopped_on_error
from rtkit._ice import loopback_candidates, rtc_configuration

NAME = "hostile"
ADMIN = "hostile-benchmark-admin"
#: The emulator's connect bound in this run: short, so the benchmark does not wait the default 15 s.
CONNECT_BOUND_S = 2.0
SETTLE_TIMEOUT_S = 60.0


@dataclass
class Usage:
    rss_mb: float
    fds: int


def usage(server: ServerProcess) -> Usage:
    """The server and the processes it started (emulator workers), added up."""
    root = psutil.Process(server.proc.pid)
    rss, fds = 0, 0
    for proc in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):  # a short-lived child (espeak-ng) may be gone already
            rss, fds = rss + proc.memory_info().rss, fds + proc.num_fds()
    return Usage(rss / 2**20, fds)


async def _up(url: str, server: ServerProcess) -> None:
    deadline = time.monotonic() + 30
    async with httpx.AsyncClient(timeout=2) as http:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(url)).status_code < 500:
                    return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not come up: {server.stderr_tail()}")


async def start() -> tuple[ServerProcess, str, ServerProcess, str]:
    port = free_port()
    extra = ["--admin-token", ADMIN, "--call-connect-timeout", str(CONNECT_BOUND_S)]
    emu = ServerProcess(*await spawn(emulator_command(port, *extra)))
    emu_url = f"http://127.0.0.1:{port}"
    async with stopped_on_error(emu):
        await _up(f"{emu_url}/_rtkit/health", emu)
        bport = free_port()
        args = [sys.executable, "-m", "rtkit", "broker", "--port", str(bport), "--upstream", f"{emu_url}/v1", "--dev"]
        args += ["--rate-limit-ip", "1000000/minute", "--rate-limit-caller", "1000000/minute"]
        env = {"OPENAI_API_KEY": MAIN_KEY, "PATH": "/usr/bin:/bin"}
        broker = ServerProcess(*await spawn(args, env=env))
        broker_url = f"http://127.0.0.1:{bport}"
        async with stopped_on_error(broker):
            await _up(f"{broker_url}/healthz", broker)
    return emu, emu_url, broker, broker_url


async def live_calls(emu_url: str) -> int:
    async with httpx.AsyncClient(timeout=5) as http:
        r = await http.get(f"{emu_url}/_rtkit/calls", headers={"X-Rtkit-Admin-Token": ADMIN})
        return len(r.json()["calls"])


async def _raw(port: int, data: bytes) -> None:
    with contextlib.suppress(OSError):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(data)
        with contextlib.suppress(OSError):
            await writer.drain()
            await asyncio.wait_for(reader.read(65536), 10)
        writer.close()


async def bodies(emu_url: str, broker_url: str, rounds: int) -> None:
    nested = b"[" * 5000 + b"]" * 5000
    huge = json.dumps({"session": {"type": "realtime", "instructions": "x" * 20_000_000}}).encode()
    json_h = {"Content-Type": "application/json", "Authorization": f"Bearer {MAIN_KEY}"}
    async with httpx.AsyncClient(timeout=30) as http:
        for i in range(rounds):
            await http.post(f"{emu_url}/v1/realtime/client_secrets", content=nested, headers=json_h)
            await http.post(f"{broker_url}/api/client-secret", content=nested, headers=json_h)
            await http.post(f"{broker_url}/api/client-secret", content=b'{"sessionId": "\\ud800"}', headers=json_h)
            if i % 40 == 0:
                for url in (f"{emu_url}/v1/realtime/client_secrets", f"{broker_url}/api/client-secret"):
                    # Refused from its Content-Length with 413 and closed: the upload may break off midway.
                    # Its own connection, so that one broken off cannot fail the next request on the pool.
                    async with httpx.AsyncClient(timeout=30) as once:
                        with contextlib.suppress(httpx.TransportError):
                            await once.post(url, content=huge, headers=json_h)


async def heads(ports: list[int], rounds: int) -> None:
    big = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 1_000_000 + b"\r\n\r\n"
    many = b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(10_000)) + b"\r\n"
    for _ in range(rounds):
        await asyncio.gather(*(_raw(port, data) for port in ports for data in (big, many)))


async def slowloris(ports: list[int], count: int) -> float:
    """Connections that never finish their headers; seconds until the servers closed the last of them."""
    started = time.monotonic()
    writers = []
    for i in range(count):
        reader, writer = await asyncio.open_connection("127.0.0.1", ports[i % len(ports)])
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        writers.append((reader, writer))
    await asyncio.gather(*(_until_closed(r) for r, _ in writers))
    for _, writer in writers:
        writer.close()
    return time.monotonic() - started


async def _until_closed(reader: asyncio.StreamReader) -> None:
    with contextlib.suppress(OSError):
        await asyncio.wait_for(reader.read(), SETTLE_TIMEOUT_S)


async def websocket_abuse(emu_url: str, count: int) -> None:
    url = emu_url.replace("http://", "ws://") + "/v1/realtime?model=gpt-realtime"
    for _ in range(count):
        async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {MAIN_KEY}"}) as ws:
            for frame in ("[" * 100_000, b"\xff\xfe", '{"type": "x"}' * 3, "NaN"):
                await ws.send(frame)
            await ws.recv()


async def abandoned_offers(emu_url: str, count: int) -> None:
    """Offers without candidates, never followed by ICE: each answer opens a call that cannot connect."""
    for _ in range(count):
        pc = RTCPeerConnection(rtc_configuration())  # no STUN: gathering is instant on loopback
        pc.addTransceiver("audio", direction="sendrecv")
        pc.createDataChannel("oai-events")
        with loopback_candidates():
            await pc.setLocalDescription(await pc.createOffer())
        sdp = re.sub(r"a=candidate:[^\r\n]*\r\n", "", pc.localDescription.sdp)
        await pc.close()
        async with httpx.AsyncClient(timeout=30) as http:  # a stranger's offer: a connection of its own
            r = await http.post(
                f"{emu_url}/v1/realtime/calls",
                content=sdp,
                headers={"Authorization": f"Bearer {MAIN_KEY}", "Content-Type": "application/sdp"},
            )
            if r.status_code != 201:
                raise RuntimeError(f"the emulator refused an offer: {r.status_code} {r.text[:200]}")


@dataclass
class Peak:
    """The highest usage and live-call count seen while the abuse ran (sampled every 0.2 s)."""

    usage: dict[str, Usage]
    calls: int = 0


async def sample(servers: dict[str, ServerProcess], emu_url: str, peak: Peak) -> None:
    while True:
        for name, server in servers.items():
            now = usage(server)
            seen = peak.usage[name]
            peak.usage[name] = Usage(max(seen.rss_mb, now.rss_mb), max(seen.fds, now.fds))
        peak.calls = max(peak.calls, await live_calls(emu_url))
        await asyncio.sleep(0.2)


async def run(opts: Options) -> Report:
    rounds = 40 if opts.quick else 200
    emu, emu_url, broker, broker_url = await start()
    try:
        await asyncio.sleep(1.0)
        servers = {"emulator": emu, "broker": broker}
        before = {name: usage(server) for name, server in servers.items()}
        peak = Peak(dict(before))
        sampler = asyncio.ensure_future(sample(servers, emu_url, peak))
        ports = [int(emu_url.rsplit(":", 1)[1]), int(broker_url.rsplit(":", 1)[1])]
        offers = 20 if opts.quick else 100
        loris = asyncio.ensure_future(slowloris(ports, 100 if opts.quick else 400))
        await bodies(emu_url, broker_url, rounds)
        await heads(ports, rounds // 10)
        await websocket_abuse(emu_url, rounds // 4)
        await asyncio.gather(*(abandoned_offers(emu_url, offers // 10) for _ in range(10)))
        abandoned_at = time.monotonic()
        while True:
            calls = await live_calls(emu_url)
            if not calls or time.monotonic() - abandoned_at > SETTLE_TIMEOUT_S:
                break
            await asyncio.sleep(0.2)
        freed_after = time.monotonic() - abandoned_at
        loris_s = await loris
        sampler.cancel()
        await asyncio.sleep(1.0)
        after = {name: usage(server) for name, server in servers.items()}
    finally:
        await broker.stop()
        await emu.stop()
    cmd = command(NAME, opts)
    rows = [
        Row(
            f"{name}: RSS before → peak → after the hostile run",
            f"{fmt(before[name].rss_mb)} → {fmt(peak.usage[name].rss_mb)} → {fmt(after[name].rss_mb)} MB",
            "bounded (no growth with the abuse)",
            cmd,
        )
        for name in before
    ]
    rows += [
        Row(
            f"{name}: open file descriptors before → peak → after",
            f"{before[name].fds} → {peak.usage[name].fds} → {after[name].fds}",
            "back to baseline",
            cmd,
        )
        for name in before
    ]
    rows.append(
        Row(
            f"Live calls: peak during {offers} abandoned offers → after the connect bound ({CONNECT_BOUND_S:g} s)",
            f"{peak.calls} → {calls} (the last freed {fmt(freed_after)} s after the last offer)",
            "0 after the bound",
            cmd,
        )
    )
    rows.append(
        Row(
            "Slowloris connections (headers never finished): all closed by the servers after",
            f"{fmt(loris_s)} s",
            "≈ the 10 s header deadline",
            cmd,
        )
    )
    return Report(rows)
