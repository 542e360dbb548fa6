"""What a broker leaves in Redis is useless to whoever reads it: no usable key, no caller, no client address;
and only brokers holding the same main key can read each other's cached entries."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from rtkit.broker import Broker, hash_token
from rtkit.emulator import Emulator
from tests.broker.conftest import APP_TOKEN, auth, settings
from tests.broker.test_multi_instance import wait_healthy
from tests.conftest import TEST_KEY, broker_argv, free_port

SESSION_ID = "tab-of-alice-7f3a"
Launched = tuple[str, "subprocess.Popen[bytes]"]
INSTRUCTIONS = "Speak like a pirate named Bartholomew."


async def flushed(redis_url: str) -> None:
    import redis.asyncio as redis

    client = redis.from_url(redis_url)
    await client.flushdb()
    await client.aclose()


async def everything_in(redis_url: str) -> list[bytes]:
    """Every key name and every value in the database, whatever the type."""
    import redis.asyncio as redis

    client = redis.from_url(redis_url)
    seen: list[bytes] = []
    try:
        async for name in client.scan_iter():
            seen.append(name)
            kind = (await client.type(name)).decode()
            if kind == "string":
                seen.append(await client.get(name))
            elif kind == "hash":
                seen.extend(b"%s=%s" % item for item in (await client.hgetall(name)).items())
            elif kind == "zset":
                seen.extend(member for member, _ in await client.zrange(name, 0, -1, withscores=True))
            elif kind == "list":
                seen.extend(await client.lrange(name, 0, -1))
            elif kind == "set":
                seen.extend(await client.smembers(name))
    finally:
        await client.aclose()
    return seen


async def monitored(redis_url: str, during: Callable[[], Any]) -> list[str]:
    """Every command Redis received while ``during()`` ran, as ``MONITOR`` shows them to an operator."""
    import redis.asyncio as redis

    client = redis.from_url(redis_url)
    commands: list[str] = []
    ready = asyncio.Event()

    async def listen() -> None:
        async with client.monitor() as monitor:
            ready.set()
            async for command in monitor.listen():
                commands.append(str(command["command"]))

    task = asyncio.create_task(listen())
    await ready.wait()
    await asyncio.sleep(0.1)
    try:
        await during()
        await asyncio.sleep(0.2)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.aclose()
    return commands


async def test_redis_shows_neither_keys_nor_who_asked(
    emulator: Emulator, redis_url: str, http: httpx.AsyncClient
) -> None:
    await flushed(redis_url)
    body = {"sessionId": SESSION_ID, "session": {"instructions": INSTRUCTIONS}}
    served: list[str] = []

    async def mint_twice() -> None:
        for _ in range(2):  # a miss, then a hit
            r = await http.post(f"{broker.url}/api/client-secret", json=body, headers=auth())
            assert r.status_code == 200, r.text
            served.append(r.json()["ephemeralKey"])

    async with Broker(settings(emulator, redis_url=redis_url)) as broker:
        commands = await monitored(redis_url, mint_twice)
    stored = await everything_in(redis_url)
    assert served[0] == served[1] and emulator.keys.issued == 1
    assert len(stored) >= 2 and any(c.startswith("GET") for c in commands) and any("SET" in c for c in commands)
    secrets = [served[0], "ek_", "workshop", SESSION_ID, INSTRUCTIONS, "127.0.0.1", "pirate"]
    for secret in secrets:
        assert not [s for s in stored if secret.encode() in s], f"{secret!r} is readable in Redis"
        assert not [c for c in commands if secret in c], f"{secret!r} is readable in MONITOR"


@pytest.fixture
def broker_process(emulator: Emulator, redis_url: str, tmp_path: Path) -> Iterator[Callable[[str], Launched]]:
    """Starts ``rtkit broker`` processes sharing ``redis_url``, each with the main key it is given."""
    procs: list[subprocess.Popen[bytes]] = []
    clean = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "RTKIT_BROKER_API_KEY")}

    def start(main_key: str) -> Launched:
        key_file = tmp_path / f"main-key-{len(procs)}"
        key_file.write_text(main_key + "\n")
        key_file.chmod(0o600)
        port = free_port()
        procs.append(
            subprocess.Popen(
                broker_argv(
                    port,
                    emulator.base_url,
                    "--redis-url",
                    redis_url,
                    "--api-key-file",
                    str(key_file),
                    "--app-token",
                    f"workshop={hash_token(APP_TOKEN)}",
                ),
                env=clean,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
        )
        return f"http://127.0.0.1:{port}", procs[-1]

    yield start
    for proc in procs:
        proc.terminate()
    for proc in procs:
        out, _ = proc.communicate(timeout=10)
        assert TEST_KEY.encode() not in out


async def test_only_brokers_holding_the_same_main_key_read_each_others_entries(
    emulator: Emulator, redis_url: str, broker_process: Callable[[str], Launched], http: httpx.AsyncClient
) -> None:
    await flushed(redis_url)
    launched = [broker_process(TEST_KEY), broker_process(TEST_KEY), broker_process("sk-some-other-account")]
    for url, proc in launched:
        await wait_healthy(url, proc)
    answers = [
        await http.post(f"{url}/api/client-secret", json={"sessionId": SESSION_ID}, headers=auth())
        for url, _ in launched
    ]
    first, same_key, other_key = answers
    assert first.status_code == same_key.status_code == 200
    assert same_key.json()["ephemeralKey"] == first.json()["ephemeralKey"]  # a hit: one upstream mint
    assert emulator.keys.issued == 1
    # Another main key derives another secret: it cannot even find the entry, so it tries to mint (and the
    # emulator, which knows only TEST_KEY, refuses it) rather than serve a key of another account.
    assert other_key.status_code == 502 and other_key.json()["code"] == "upstream_auth_failed"


async def test_the_main_key_from_a_file_shows_in_neither_command_line_nor_environment(
    broker_process: Callable[[str], Launched], http: httpx.AsyncClient
) -> None:
    url, proc = broker_process(TEST_KEY)
    await wait_healthy(url, proc)
    minted = await http.post(f"{url}/api/client-secret", json={"sessionId": SESSION_ID}, headers=auth())
    assert minted.status_code == 200  # the key was read: the emulator accepts only TEST_KEY
    shown = psutil.Process(proc.pid)  # what ps and /proc/PID/{cmdline,environ} show anyone on the machine
    assert "--api-key-file" in shown.cmdline() and not [arg for arg in shown.cmdline() if TEST_KEY in arg]
    assert not [value for value in shown.environ().values() if TEST_KEY in value]
