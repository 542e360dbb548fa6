"""A real broker in front of the real emulator, with an audit log the tests can read."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from rtkit.broker import Broker, BrokerSettings, hash_token
from rtkit.emulator import Emulator
from tests.conftest import TEST_KEY

APP_TOKEN = "app-token-for-tests-0123456789"
ORIGIN = "http://127.0.0.1:5173"


class LogCapture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def logs() -> Iterator[LogCapture]:
    capture = LogCapture()
    root = logging.getLogger()
    previous = root.level
    root.addHandler(capture)
    root.setLevel(logging.DEBUG)
    yield capture
    root.removeHandler(capture)
    root.setLevel(previous)


def settings(emu: Emulator, **overrides: Any) -> BrokerSettings:
    values: dict[str, Any] = {
        "upstream_url": emu.base_url,
        "api_key": TEST_KEY,
        "app_tokens": {"workshop": hash_token(APP_TOKEN)},
        "allowed_origins": [ORIGIN],
        "upstream_attempts": 2,
        "upstream_timeout": 2.0,
    }
    values.update(overrides)
    return BrokerSettings(**values)


@pytest.fixture
async def broker(emulator: Emulator, logs: LogCapture) -> AsyncIterator[Broker]:
    async with Broker(settings(emulator)) as b:
        yield b


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


def auth(token: str = APP_TOKEN, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **extra}
