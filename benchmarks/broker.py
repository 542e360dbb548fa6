"""Broker throughput and added latency: ``POST /api/client-secret`` served by ``rtkit broker``.

Everything runs on loopback in separate processes, pinned so that "one core" means one core:

* the broker (``python -m rtkit broker --dev``, rate limits raised to 1000000/minute so they never
  trigger, audit log on and written to a file, as in production) alone on CPU 0;
* the emulator (``python -m rtkit emulator``, its upstream) and the load generator on CPU 1:
  ``wrk`` (one thread) when it is installed, else ``benchmarks._broker_load`` (a raw asyncio
  HTTP/1.1 keep-alive client; httpx costs more CPU per request than the broker does). The
  emulator idles during the cache-hit runs and the mint runs are sequential, so they do not
  compete for CPU 1.

Measured:

1. Cache hits (the same ``sessionId`` every time): the most requests/s with N keep-alive
   connections over the window, and p50/p99 at a fixed moderate rate (open loop, latency counted
   from each request's scheduled time).
2. Cache misses (a new ``sessionId`` each time, so every request mints from the emulator):
   sequential mints alternating between the emulator directly (a) and the broker (b);
   p99(b) − p99(a) is the latency the broker adds.
3. The audit log's cost: the cache-hit maximum again on a fresh broker with stdout to /dev/null,
   and with ``AuditRecord.emit`` replaced by a no-op (no JSON line built at all).

The broker's CPU is read with psutil over each window; the load generator's from the kernel's
accounting of the finished child (``RUSAGE_CHILDREN``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import resource
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import IO, Any

import httpx
import numpy as np
import psutil

from benchmarks._common import MAIN_KEY, Options, Report, Row, command, fmt, markdown_table
from benchmarks._servers import ServerProcess, emulator_command, free_port, spawn, stopped_on_error
from rtkit.broker.config import BrokerSettings
from rtkit.broker.policy import ClientSecretRequest, session_for

NAME = "broker"
HIT_BODY = json.dumps({"sessionId": "bench", "capabilities": ["audio"]})
LIMIT = "1000000/minute"
CONNS = 16
SCAN_CONNS = (1, 4, 64)
FIXED_RATE = 500.0
FIXED_CONNS = 4
TARGET_RPS = 2000.0
TARGET_ADDED_MS = 5.0
BROKER_CPUS = {0}
LOAD_CPUS = {1}
START_TIMEOUT_S = 30.0
#: Replaces the audit line with nothing, for the "audit off" run; everything else is the CLI.
_NO_AUDIT = (
    "import sys, rtkit.broker.audit as a; a.AuditRecord.emit = lambda self: None; "
    "from rtkit.cli import main; sys.exit(main(sys.argv[1:]))"
)


def _pinning() -> bool:
    return hasattr(os, "sched_setaffinity") and (psutil.cpu_count() or 1) >= 2


def _pin(cpus: set[int]) -> Any:
    """A ``preexec_fn`` pinning the child (and every thread it starts) to ``cpus``."""
    if not _pinning():
        return None
    return lambda: os.sched_setaffinity(0, cpus)


@dataclass
class Child(ServerProcess):
    """A server started by this benchmark: where it answers, and where its stdout goes (None: /dev/null)."""

    url: str = ""
    stdout: IO[bytes] | None = None


async def _wait_http(child: Child, url: str, timeout: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2.0) as http:
        while time.monotonic() < deadline:
            if child.proc.returncode is not None:
                break
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(url)).status_code < 500:
                    return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not come up: {child.stderr_tail() or 'no output'}")


async def start_emulator() -> Child:
    port = free_port()
    proc, stderr = await spawn(emulator_command(port), preexec_fn=_pin(LOAD_CPUS))
    child = Child(proc, stderr, f"http://127.0.0.1:{port}/v1")
    async with stopped_on_error(child):
        await _wait_http(child, f"http://127.0.0.1:{port}/v1/models")
    return child


async def start_broker(upstream: str, stdout: IO[bytes] | None, *, audit: bool = True) -> Child:
    """``rtkit broker`` with its stdout (the audit log) to ``stdout``, or /dev/null when None."""
    port = free_port()
    args = ["broker", "--port", str(port), "--upstream", upstream, "--dev"]
    args += ["--rate-limit-ip", LIMIT, "--rate-limit-caller", LIMIT]
    prefix = ["-m", "rtkit"] if audit else ["-c", _NO_AUDIT]
    proc, stderr = await spawn(
        [sys.executable, *prefix, *args],
        stdout=stdout if stdout is not None else asyncio.subprocess.DEVNULL,
        env={**os.environ, "OPENAI_API_KEY": MAIN_KEY},
        preexec_fn=_pin(BROKER_CPUS),
    )
    child = Child(proc, stderr, f"http://127.0.0.1:{port}", stdout)
    async with stopped_on_error(child):
        await _wait_http(child, f"{child.url}/healthz")
        async with httpx.AsyncClient(timeout=10.0) as http:  # unmeasured: mints the cached key
            response = await http.post(f"{child.url}/api/client-secret", content=HIT_BODY, headers=_JSON)
        if response.status_code != 200:
            raise RuntimeError(f"the broker answered {response.status_code}: {response.text[:200]}")
    return child


_JSON = {"Content-Type": "application/json"}


@dataclass
class Load:
    """One load run: what the client saw, and what each side spent."""

    tool: str
    conns: int
    count: int = 0
    elapsed: float = 0.0
    errors: int = 0
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")
    broker_cpu: float = 0.0
    load_cpu: float = 0.0
    per_core: list[float] = field(default_factory=list)
    emulator_cpu: float = 0.0
    other_cpu: float = 0.0
    #: Fixed rate only: from the moment each request was written (p50/p99 are from its scheduled time).
    service_p50_ms: float = float("nan")
    service_p99_ms: float = float("nan")

    @property
    def rps(self) -> float:
        return self.count / self.elapsed if self.elapsed else 0.0

    @property
    def cpu_us_per_request(self) -> float:
        """The broker's CPU per request: unlike req/s, not lowered by other processes taking its core."""
        return self.broker_cpu / 100 * 1e6 / self.rps if self.rps else float("nan")


class Meter:
    """CPU over a window: the broker and emulator (psutil), the load generator (finished children's
    rusage), this process, each core, and so whatever else the machine ran (other processes)."""

    def __init__(self, broker: Child, emulator: Child | None = None) -> None:
        self.broker = broker.ps
        self.emulator = emulator.ps if emulator is not None else None
        self.me = psutil.Process()

    @staticmethod
    def _cpu(p: psutil.Process | None) -> float:
        if p is None:
            return 0.0
        t = p.cpu_times()
        return float(t.user + t.system)

    def __enter__(self) -> Meter:
        self._b0, self._e0, self._m0 = self._cpu(self.broker), self._cpu(self.emulator), self._cpu(self.me)
        self._c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        psutil.cpu_percent(None, percpu=True)
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        wall = max(1e-9, time.perf_counter() - self._t0)
        self.per_core = psutil.cpu_percent(None, percpu=True)
        c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.broker_cpu = 100 * (self._cpu(self.broker) - self._b0) / wall
        self.emulator_cpu = 100 * (self._cpu(self.emulator) - self._e0) / wall
        me = 100 * (self._cpu(self.me) - self._m0) / wall
        self.load_cpu = 100 * ((c1.ru_utime + c1.ru_stime) - (self._c0.ru_utime + self._c0.ru_stime)) / wall
        ours = self.broker_cpu + self.emulator_cpu + self.load_cpu + me
        self.other_cpu = max(0.0, sum(self.per_core) - ours)

    def into(self, load: Load) -> Load:
        load.broker_cpu, load.load_cpu, load.per_core = self.broker_cpu, self.load_cpu, self.per_core
        load.emulator_cpu, load.other_cpu = self.emulator_cpu, self.other_cpu
        return load


async def _child_json(args: list[str], timeout: float, cpus: set[int]) -> tuple[str, str]:
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, preexec_fn=_pin(cpus)
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        raise RuntimeError(f"{args[0]} did not finish within {timeout:.0f} s") from None
    finally:
        if proc.returncode is None:  # timed out, or this run was cancelled
            proc.kill()
            await proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"{os.path.basename(args[0])} failed: {err.decode(errors='replace')[-300:]}")
    return out.decode(), err.decode()


async def load_process(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    args = [sys.executable, "-m", "benchmarks._broker_load", json.dumps(spec)]
    out, _ = await _child_json(args, timeout, LOAD_CPUS)
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


_WRK_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def _wrk_ms(text: str, label: str) -> float:
    match = re.search(rf"^\s*{re.escape(label)}\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
    return float(match.group(1)) * _WRK_UNITS[match.group(2)] if match else float("nan")


async def max_throughput(broker: Child, conns: int, duration: float, emulator: Child | None = None) -> Load:
    url = f"{broker.url}/api/client-secret"
    wrk = shutil.which("wrk")
    with Meter(broker, emulator) as meter:
        if wrk:
            with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
                script.write(
                    'wrk.method = "POST"\n'
                    f"wrk.body = '{HIT_BODY}'\n"
                    'wrk.headers["Content-Type"] = "application/json"\n'
                )
            try:
                args = [wrk, "-t1", f"-c{conns}", f"-d{duration:g}s", "--latency", "--timeout", "5s"]
                out, _ = await _child_json([*args, "-s", script.name, url], duration + 20, LOAD_CPUS)
            finally:
                os.unlink(script.name)
            load = Load("wrk", conns)
            total = re.search(r"(\d+) requests in ([\d.]+)(ms|s)", out)
            if total:
                load.count = int(total.group(1))
                load.elapsed = float(total.group(2)) / (1000.0 if total.group(3) == "ms" else 1.0)
            non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
            sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
            load.errors = (int(non2xx.group(1)) if non2xx else 0) + (sum(map(int, sock.groups())) if sock else 0)
            load.p50_ms, load.p99_ms = _wrk_ms(out, "50%"), _wrk_ms(out, "99%")
        else:
            spec = {"mode": "max", "url": url, "body": HIT_BODY, "duration": duration, "conns": conns}
            result = await load_process(spec, duration + 30)
            load = Load("python client", conns, count=result["count"], elapsed=result["elapsed"])
            load.errors = result["errors"]
            lat = np.asarray(result["latency_us"]) / 1000.0
            if lat.size:
                load.p50_ms, load.p99_ms = float(np.percentile(lat, 50)), float(np.percentile(lat, 99))
    return meter.into(load)


async def fixed_rate(broker: Child, duration: float, emulator: Child | None = None) -> tuple[Load, np.ndarray]:
    spec = {
        "mode": "rate",
        "url": f"{broker.url}/api/client-secret",
        "body": HIT_BODY,
        "rate": FIXED_RATE,
        "duration": duration,
        "conns": FIXED_CONNS,
    }
    with Meter(broker, emulator) as meter:
        result = await load_process(spec, duration + 30)
    lat = np.asarray(result["latency_us"]) / 1000.0
    service = np.asarray(result["service_us"]) / 1000.0
    load = Load("python client, open loop", FIXED_CONNS, count=lat.size, elapsed=result["elapsed"])
    load.service_p50_ms, load.service_p99_ms = _p(service, 50), _p(service, 99)
    load.errors = result["errors"]
    if lat.size:
        load.p50_ms, load.p99_ms = float(np.percentile(lat, 50)), float(np.percentile(lat, 99))
    return meter.into(load), lat


def upstream_body() -> str:
    """What the broker sends upstream for ``{"capabilities": ["audio"]}``, so (a) and (b) mint the same thing."""
    values: dict[str, Any] = {"api_key": "unused", "dev_mode": True}
    settings = BrokerSettings(**values)
    session = session_for(ClientSecretRequest(sessionId="x", capabilities=["audio"]), settings)
    expires = {"anchor": "created_at", "seconds": settings.key_ttl_seconds}
    return json.dumps({"session": session, "expires_after": expires})


def _p(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if values.size else float("nan")


def audit_stats(path: str, tag: str) -> dict[str, Any]:
    """Count the audit lines, and split the broker's time on the mint requests: its upstream call as
    it timed it (``upstreamMs``) and the rest of its handler (``durationMs − upstreamMs``)."""
    lines = size = 0
    by_status: dict[int, int] = {}
    upstream: list[float] = []
    duration: list[float] = []
    with open(path, "rb") as f:
        for raw in f:
            if b'"broker.request"' not in raw:
                continue
            lines += 1
            size += len(raw)
            rec = json.loads(raw)
            by_status[rec["status"]] = by_status.get(rec["status"], 0) + 1
            sid = rec.get("sessionId") or ""
            if sid.startswith(tag) and rec.get("cacheHit") is False and rec.get("upstreamMs") is not None:
                upstream.append(rec["upstreamMs"])
                duration.append(rec["durationMs"])
    return {
        "lines": lines,
        "bytes_per_line": size / lines if lines else 0.0,
        "by_status": dict(sorted(by_status.items())),
        "upstream_ms": np.asarray(upstream),
        "duration_ms": np.asarray(duration),
    }


def _met(ok: bool) -> str:
    return "met" if ok else "**missed**"


def _diagnose(load: Load) -> str:
    broker_core = load.per_core[min(BROKER_CPUS)] if _pinning() and load.per_core else load.broker_cpu
    if load.broker_cpu >= 90:
        return "broker-bound (its core is saturated)"
    if broker_core >= 95:
        return f"broker's core saturated, {broker_core - load.broker_cpu:.0f}% of it taken by other processes"
    if load.load_cpu >= 90:
        return "load-generator-bound: this figure is a floor for the broker"
    return "neither side saturated: latency-bound (try more connections)"


async def run(opts: Options) -> Report:
    window = min(10.0, max(2.0, opts.window))
    rate_s = 3.0 if opts.quick else 5.0
    mint_count, mint_warmup = (150, 10) if opts.quick else (400, 20)
    tag = f"mint-{os.getpid()}-{int(time.time())}"
    cmd = command(NAME, opts)

    audit_file = tempfile.NamedTemporaryFile(prefix="rtkit-broker-audit-", suffix=".jsonl", delete=False)
    emulator = broker = None
    variants: dict[str, Load] = {}
    try:
        emulator = await start_emulator()
        broker = await start_broker(emulator.url, audit_file)
        rss = [broker.ps.memory_info().rss]
        main = await max_throughput(broker, CONNS, window, emulator)
        scan = [] if opts.quick else [await max_throughput(broker, c, 2.0, emulator) for c in SCAN_CONNS]
        fixed, fixed_lat = await fixed_rate(broker, rate_s, emulator)
        rss.append(broker.ps.memory_info().rss)
        spec = {
            "mode": "mint",
            "emulator_url": f"{emulator.url}/realtime/client_secrets",
            "main_key": MAIN_KEY,
            "upstream_body": upstream_body(),
            "broker_url": f"{broker.url}/api/client-secret",
            "count": mint_count,
            "warmup": mint_warmup,
            "tag": tag,
        }
        with Meter(broker, emulator) as mint_meter:
            mint = await load_process(spec, 60)
        await broker.stop()
        broker = None
        audit_file.flush()
        audit = audit_stats(audit_file.name, tag)

        # Same run as ``main`` on a fresh broker each: stdout to /dev/null, then no audit line at all.
        for label, out, on in (("stdout → /dev/null", None, True), ("audit line off", audit_file, False)):
            broker = await start_broker(emulator.url, out, audit=on)
            variants[label] = await max_throughput(broker, CONNS, window, emulator)
            await broker.stop()
            broker = None
    finally:
        for child in (broker, emulator):
            if child is not None:
                await child.stop()
        audit_file.close()
        with contextlib.suppress(OSError):
            os.unlink(audit_file.name)

    a = np.asarray(mint["direct_us"]) / 1000.0
    b = np.asarray(mint["broker_us"]) / 1000.0
    added_p99, added_p50 = _p(b, 99) - _p(a, 99), _p(b, 50) - _p(a, 50)
    mint_errors = mint["errors"]["direct"] + mint["errors"]["broker"]

    def err(n: int) -> str:
        return f"; {n} errors" if n else ""

    rows = [
        Row(
            f"Broker cache hit, max throughput ({main.tool}, {CONNS} keep-alive conns, {window:g} s)",
            f"{main.rps:,.0f} req/s ({_met(main.rps >= TARGET_RPS)}); p50 {fmt(main.p50_ms)} / p99 "
            f"{fmt(main.p99_ms)} ms; broker CPU {main.broker_cpu:.0f}%{err(main.errors)}",
            f"≥ {TARGET_RPS:,.0f} req/s on one core",
            cmd,
        ),
        Row(
            f"Broker cache hit at a fixed {FIXED_RATE:g} req/s ({FIXED_CONNS} conns, {rate_s:g} s, open loop)",
            f"p50 {fmt(fixed.p50_ms)} / p99 {fmt(fixed.p99_ms)} ms from schedule, {fmt(fixed.service_p50_ms)} / "
            f"{fmt(fixed.service_p99_ms)} ms send→reply (n={fixed.count}); broker CPU {fixed.broker_cpu:.0f}%"
            f"{err(fixed.errors)}",
            "—",
            cmd,
        ),
        Row(
            f"Mint (a): direct to the emulator, sequential (n={a.size})",
            f"p50 {fmt(_p(a, 50))} / p99 {fmt(_p(a, 99))} ms",
            "—",
            cmd,
        ),
        Row(
            f"Mint (b): through the broker, new sessionId each, sequential (n={b.size})",
            f"p50 {fmt(_p(b, 50))} / p99 {fmt(_p(b, 99))} ms{err(mint_errors)}",
            "—",
            cmd,
        ),
        Row(
            "Broker's added mint latency, p99(b) − p99(a)",
            f"{added_p99:+.2f} ms ({_met(added_p99 <= TARGET_ADDED_MS)}); p50 {added_p50:+.2f} ms",
            f"≤ {TARGET_ADDED_MS:g} ms p99",
            cmd,
        ),
    ]
    off, null = variants.get("audit line off"), variants.get("stdout → /dev/null")
    if off and null:
        cost = main.cpu_us_per_request - off.cpu_us_per_request
        rows.append(
            Row(
                f"Audit log cost (cache-hit max, fresh broker each, {window:g} s)",
                f"to file {main.rps:,.0f} / to /dev/null {null.rps:,.0f} / line off {off.rps:,.0f} req/s; "
                f"{cost:.0f} µs of broker CPU per request ({main.cpu_us_per_request:.0f} vs "
                f"{off.cpu_us_per_request:.0f})",
                "—",
                cmd,
            )
        )

    split = (
        f"broker alone on CPU {min(BROKER_CPUS)}; emulator and load generator on CPU {min(LOAD_CPUS)}"
        if _pinning()
        else "no CPU pinning (fewer than 2 CPUs or no sched_setaffinity): all processes share the machine"
    )
    details = [
        f"Broker detail ({psutil.cpu_count()} CPUs; {split}; process CPU % is of one core; "
        f"rate limits {LIMIT} per IP and per caller; audit log on, stdout to a file unless noted; "
        "'others' is CPU the machine spent outside this benchmark's processes):",
        "",
    ]
    runs = [
        (f"max, {main.conns} conns", main),
        *((f"max, {s.conns} conns (2 s)", s) for s in scan),
        (f"fixed {FIXED_RATE:g} req/s", fixed),
        *((f"max, {CONNS} conns, {k}", v) for k, v in variants.items()),
    ]
    table = [
        [
            label,
            load.tool,
            f"{load.rps:,.0f}",
            f"{fmt(load.p50_ms)} / {fmt(load.p99_ms)}",
            f"{load.broker_cpu:.0f}",
            f"{load.cpu_us_per_request:.0f}",
            f"{load.load_cpu:.0f}",
            f"{load.other_cpu:.0f}",
            " / ".join(f"{c:.0f}" for c in load.per_core),
            str(load.errors),
            _diagnose(load) if label.startswith("max") else "—",
        ]
        for label, load in runs
    ]
    details += markdown_table(
        [
            "run",
            "client",
            "req/s",
            "p50 / p99 ms",
            "broker CPU %",
            "broker µs/req",
            "load CPU %",
            "others %",
            "per-core %",
            "errors",
            "limit",
        ],
        table,
    )
    up, dur = audit["upstream_ms"], audit["duration_ms"]
    fixed_max = float(fixed_lat.max()) if fixed_lat.size else float("nan")
    details += [
        "",
        f'- Fixed-rate latency "from schedule" counts from each request\'s scheduled send time, so a stall '
        "cannot hide by delaying the next send (it also includes up to ~1 ms of the generator's own timer "
        f"lateness); p99.9 {fmt(_p(fixed_lat, 99.9))} ms, max {fmt(fixed_max)} ms. "
        f"At this rate the broker spends {fixed.cpu_us_per_request:.0f} µs of CPU per request against "
        f"{main.cpu_us_per_request:.0f} µs when saturated: an idle-then-woken core does the same work slower, "
        "and busy loops amortise their wake-ups.",
        f"- Mint through the broker, where the time goes (p50): direct mint {fmt(_p(a, 50))} ms; the broker's "
        f"own upstream call (httpx, as its audit line times it) {fmt(_p(up, 50))} ms; the rest of its handler "
        f"{fmt(_p(dur - up, 50))} ms; HTTP parsing, ASGI layers and loopback outside the handler "
        f"{fmt(_p(b, 50) - _p(dur, 50))} ms. Broker CPU during the mint phase {mint_meter.broker_cpu:.0f}%, "
        f"emulator {mint_meter.emulator_cpu:.0f}%, others {mint_meter.other_cpu:.0f}%.",
        f"- Broker RSS {rss[0] / 2**20:.0f} MB at start, {rss[-1] / 2**20:.0f} MB after the cache-hit runs "
        f"(of {audit['lines']:,} requests in all; the in-memory moving-window rate limiter keeps an object per request "
        "per limit for the whole window).",
        f"- Audit log (production run): {audit['lines']:,} lines, {audit['bytes_per_line']:.0f} bytes each; "
        f"statuses {audit['by_status']}. A 500 is a request cut off when wrk stops at the end of a run (the "
        "client hangs up mid-request and the broker counts it as internal_error).",
    ]
    return Report(rows, details)
