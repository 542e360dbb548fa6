"""``rtkit doctor`` run as a participant runs it: a real process, a real emulator and a real Redis on loopback.

Nothing here depends on this machine's sound devices, espeak-ng or Chromium: those lines may be ok or warn,
never FAIL unless asked for, and are only checked for being there."""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass

from rtkit.emulator import Emulator
from tests.conftest import TEST_KEY, free_port

ITEMS = ("rtkit", "PortAudio", "espeak-ng", "sox", "chromium", "redis-server", "lab extras", "OpenAI API")


@dataclass
class Report:
    code: int
    stdout: str
    stderr: str

    def line(self, item: str) -> str:
        """The one line about ``item``, split into mark and the rest."""
        found = [line for line in self.stdout.splitlines() if line[6:].split("  ")[0].strip() == item]
        assert len(found) == 1, f"expected one line for {item!r} in:\n{self.stdout}"
        return found[0]

    def mark(self, item: str) -> str:
        return self.line(item).split()[0]


async def doctor(*args: str, api_key: str | None = None) -> Report:
    """``python -m rtkit doctor`` with a controlled environment: no key or Redis URL unless given here."""
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "RTKIT_BROKER_REDIS_URL")}
    if api_key is not None:
        env["OPENAI_API_KEY"] = api_key
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "rtkit",
        "doctor",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    report = Report(proc.returncode, out.decode(), err.decode())
    assert "Traceback" not in report.stdout + report.stderr, report.stderr
    return report


async def test_a_key_the_emulator_accepts_is_ok_and_never_printed(emulator: Emulator) -> None:
    report = await doctor("--base-url", emulator.base_url, api_key=TEST_KEY)
    assert report.mark("OpenAI API") == "ok", report.stdout
    assert "minted ek_…" in report.line("OpenAI API")
    assert report.code == 0
    assert TEST_KEY not in report.stdout + report.stderr


async def test_a_refused_key_fails_with_the_hint_and_is_never_printed(emulator: Emulator) -> None:
    wrong = "sk-not-the-emulators-key-0000"
    report = await doctor("--base-url", emulator.base_url, api_key=wrong)
    line = report.line("OpenAI API")
    assert line.startswith("FAIL") and "refused the main API key" in line
    assert "— check OPENAI_API_KEY" in line
    assert report.code == 1
    assert wrong not in report.stdout + report.stderr


async def test_required_redis_that_does_not_answer_fails_without_showing_its_password() -> None:
    report = await doctor(
        "--need", "redis", "--redis-url", f"redis://:s3cret@127.0.0.1:{free_port()}/0", "--timeout", "1"
    )
    line = report.line("Redis")
    assert line.startswith("FAIL") and "no answer to PING" in line and ":***@" in line
    assert "s3cret" not in report.stdout + report.stderr
    assert report.code == 1


async def test_a_redis_that_answers_is_ok(redis_url: str) -> None:
    report = await doctor("--need", "redis", "--redis-url", redis_url)
    assert report.mark("Redis") == "ok"
    assert report.mark("redis-server") == "ok"  # the redis_url fixture found it on PATH
    assert report.code == 0


async def test_every_item_has_exactly_one_line_and_nothing_else_is_printed() -> None:
    report = await doctor()
    lines = report.stdout.splitlines()
    assert len(lines) == len(ITEMS)
    for item in ITEMS:
        assert report.mark(item) in ("ok", "warn"), report.line(item)
    assert report.line("OpenAI API").startswith("warn") and "not set" in report.line("OpenAI API")
    assert report.code == 0


async def test_a_need_turns_a_missing_item_into_a_failure() -> None:
    report = await doctor("--need", "api")
    assert report.line("OpenAI API").startswith("FAIL")
    assert report.code == 1


def test_an_ipykernel_too_old_for_a_browser_call_is_named_with_the_upgrade() -> None:
    """Before 7.4 a BrowserCall's page is not heard while a cell awaits it: the call would hang, so say so first."""
    from rtkit.doctor import check_lab

    old = check_lab(ipykernel="7.3.0")
    assert old.status == "warn" and "7.3.0" in old.detail and old.hint and "ipykernel>=7.4" in old.hint
    assert check_lab(required=True, ipykernel="6.29.5").status == "FAIL"
    assert "ipykernel 7.4.0" in check_lab(ipykernel="7.4.0").detail
