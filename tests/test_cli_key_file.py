"""The emulator's main key from a file or the environment, never on the command line (where ``ps`` shows it)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from tests.conftest import free_port

KEY = "sk-emulator-key-from-a-file"


def test_emulator_reads_its_main_key_from_a_file_that_ps_does_not_show(tmp_path: Path) -> None:
    key_file = tmp_path / "main-key"
    key_file.write_text(KEY + "\n")
    key_file.chmod(0o600)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "RTKIT_EMULATOR_API_KEY"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "rtkit", "emulator", "--port", str(port), "--api-key-file", str(key_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    try:
        banner = "".join(proc.stdout.readline() for _ in range(3))
        url = f"http://127.0.0.1:{port}/v1/realtime/client_secrets"
        accepted = httpx.post(url, headers={"Authorization": f"Bearer {KEY}"}, json={})
        default = httpx.post(url, headers={"Authorization": "Bearer sk-emulator"}, json={})
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(10)
    assert f"main key: --api-key-file {key_file}" in banner and KEY not in banner
    assert accepted.status_code == 200 and default.status_code == 401
    assert KEY.encode() not in cmdline


def test_an_unreadable_key_file_is_a_plain_error_naming_the_file_not_a_traceback(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    for command in ("emulator", "broker"):
        result = subprocess.run(
            [sys.executable, "-m", "rtkit", command, "--port", "0", "--api-key-file", str(missing)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 2, result.stderr
        assert f"Cannot read the API key file {missing}" in result.stderr
        assert "Traceback" not in result.stderr
