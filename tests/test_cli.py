"""The ``rtkit`` command, run as a user would: a real process on a loopback port."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator

import httpx
import psutil
import pytest

from tests.conftest import free_port


@pytest.fixture
def emulator_process() -> Iterator[tuple[subprocess.Popen[str], str, int]]:
    port = free_port()
    env = {**os.environ, "RTKIT_EMULATOR_API_KEY": "sk-from-environment"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rtkit",
            "emulator",
            "--port",
            str(port),
            "--fail-mints",
            "1",
            "--fail-status",
            "503",
            "--key-ttl",
            "42",
            "--single-use-keys",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    while not any("admin token" in line for line in lines) and len(lines) < 20:
        lines.append(proc.stdout.readline())
    banner = "".join(lines)
    try:
        yield proc, banner, port
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(10)


def test_emulator_command_serves_with_key_from_env_and_faults_from_flags(
    emulator_process: tuple[subprocess.Popen[str], str, int],
) -> None:
    _proc, banner, port = emulator_process
    assert f"http://127.0.0.1:{port}/v1" in banner
    assert "sk-from-environment" not in banner  # the key is named by its source, never printed
    assert "loopback only" in banner
    token = re.search(r"admin token for /_rtkit \(keep it to yourself\): (\S+)", banner)
    assert token
    url = f"http://127.0.0.1:{port}/v1/realtime/client_secrets"
    headers = {"Authorization": "Bearer sk-from-environment"}
    first = httpx.post(url, headers=headers, json={})
    second = httpx.post(url, headers=headers, json={})
    faults = httpx.get(f"http://127.0.0.1:{port}/_rtkit/faults", headers={"X-Rtkit-Admin-Token": token.group(1)})
    assert first.status_code == 503
    assert second.status_code == 200
    assert faults.json()["key_ttl_override"] == 42 and faults.json()["single_use_keys"] is True


def test_busy_port_is_a_plain_error_not_a_traceback() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "rtkit", "emulator", "--port", str(port)], capture_output=True, text=True, timeout=30
        )
    assert result.returncode == 2
    assert "cannot listen on 127.0.0.1" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_bad_latency_flag_is_a_usage_error() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "rtkit", "emulator", "--latency", "nowhere=1"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "ENDPOINT=SECONDS" in result.stderr


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--rate-limit-ip", "lots"], {"OPENAI_API_KEY": "sk-secret-value-1"}, "rate_limit_per_ip"),
        (["--app-token", "web=not-a-digest"], {"OPENAI_API_KEY": "sk-secret-value-1"}, "SHA-256"),
        ([], {}, "no main API key"),
        (["--key-policy", "once"], {"OPENAI_API_KEY": "sk-secret-value-1"}, "'reuse', 'single-use'"),
    ],
)
def test_broker_misconfiguration_is_a_plain_error(args: list[str], env: dict[str, str], message: str) -> None:
    clean = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "RTKIT_BROKER_API_KEY")}
    result = subprocess.run(
        [sys.executable, "-m", "rtkit", "broker", "--port", "0", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**clean, **env},
    )
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr and "sk-secret-value-1" not in result.stderr + result.stdout


def test_hash_token_prints_the_digest_the_broker_stores() -> None:
    import hashlib

    result = subprocess.run(
        [sys.executable, "-m", "rtkit", "hash-token"], input="s3cret\n", capture_output=True, text=True, timeout=30
    )
    assert result.stdout.strip() == hashlib.sha256(b"s3cret").hexdigest()


def test_version_names_the_installed_package() -> None:
    from importlib.metadata import version

    result = subprocess.run([sys.executable, "-m", "rtkit", "--version"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and result.stdout.strip() == f"rtkit {version('rtkit')}"


def test_importing_rtkit_does_not_start_the_servers_dependencies() -> None:
    """The package exports lazily: ``import rtkit`` must not load the broker, the emulator or aiortc."""
    code = (
        "import sys, rtkit; print(sorted(m for m in ('rtkit.broker', 'rtkit.emulator', 'aiortc') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr


def test_demo_runs_a_timed_spoken_turn_through_the_broker() -> None:
    result = subprocess.run([sys.executable, "-m", "rtkit", "demo"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "state: connected (webrtc)" in out
    assert re.search(r"key: ek_…\w{4} from the broker", out)
    assert "reply transcript: [echo of" in out
    assert re.search(r"end of speech → first audible reply audio +\| +[\d,.]+ ms", out)
    assert "Traceback" not in result.stderr


def _emulator_with_workers(port: int) -> tuple[subprocess.Popen[str], list[psutil.Process]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "rtkit", "emulator", "--port", str(port), "--workers", "2", "--log-level", "warning"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    for _ in range(20):
        if "admin token" in proc.stdout.readline():
            break
    workers = [p for p in psutil.Process(proc.pid).children(recursive=True) if "spawn_main" in " ".join(p.cmdline())]
    assert len(workers) == 2, [p.cmdline() for p in psutil.Process(proc.pid).children(recursive=True)]
    return proc, workers


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stopped_emulator_stops_its_worker_processes(sig: signal.Signals) -> None:
    """What a service manager or a container runtime sends: a clean stop, workers included, exit status 0."""
    proc, workers = _emulator_with_workers(free_port())
    proc.send_signal(sig)
    assert proc.wait(15) == 0
    _gone, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive, [p.pid for p in alive]


def test_workers_of_a_killed_emulator_do_not_outlive_it() -> None:
    """SIGKILL leaves no chance to clean up: each worker notices its parent is gone and exits by itself."""
    proc, workers = _emulator_with_workers(free_port())
    proc.kill()
    proc.wait(10)
    _gone, alive = psutil.wait_procs(workers, timeout=10)
    for orphan in alive:
        orphan.kill()
    assert not alive, "orphaned emulator workers"
