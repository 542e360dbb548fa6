"""A call's report, made from a real call against the emulator: the numbers, the HTML, the saved JSON."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from rtkit.audio.pcm import PCM, REALTIME_RATE
from rtkit.audio.sinks import RecorderSink
from rtkit.audio.sources import PcmSource
from rtkit.cost import PRICES, PriceTable, Rates
from rtkit.emulator import Emulator
from rtkit.keys import IssuerKeys
from rtkit.report import SessionReport
from rtkit.session import RealtimeSession
from rtkit.tokens import TokenIssuer
from tests.conftest import TEST_KEY, assert_valid_server_events


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    async with Emulator(api_key=TEST_KEY) as emu:
        yield emu
    assert_valid_server_events(list(emu.server_events))


async def test_a_report_holds_the_connection_the_timed_reply_the_error_and_the_cost(
    emulator: Emulator, speech: PCM, tmp_path: Path
) -> None:
    async with TokenIssuer(TEST_KEY, base_url=emulator.base_url) as issuer:
        session = RealtimeSession(
            IssuerKeys(issuer),
            base_url=emulator.base_url,
            source=PcmSource(speech, REALTIME_RATE, lead_seconds=0.5),
            sink=RecorderSink(REALTIME_RATE),
            transport="websocket",
        )
        async with session:
            await session.wait_for("response.done", timeout=30)
            await asyncio.sleep(0.2)
            session.send({"type": "conversation.item.retrieve", "item_id": "item_nowhere"})
            await session.wait_for("error", timeout=10)
            report = session.report()

    head = report.headline()
    assert head["transport"] == "websocket" and head["connections"] == 1 and head["failed_connections"] == 0
    assert head["connect_ms"] is not None and head["connect_ms"] > 0
    (turn,) = session.metrics.turns
    assert head["replies_timed"] == 1 and head["reply_latency_ms_median"] == round(turn.first_audio_ms or 0, 1)
    assert head["turns"] == len(session.conversation.turns) == 2  # the user's speech and the reply
    assert [e["code"] for e in report.errors] == ["item_not_found"]
    assert report.usage == session.conversation.usage and head["output_tokens"] > 0
    assert report.cost.total > 0
    assert report.cost.total == pytest.approx(PRICES.cost(report.usage, "gpt-realtime").total)

    page = report._repr_html_()
    assert "Call report" in page and "item_not_found" in page and f"prices of {PRICES.read_on}" in page
    assert "end of speech → first reply audio" in str(report)

    saved = json.loads(report.save(tmp_path / "call").read_text())
    assert (tmp_path / "call.json").exists()
    assert saved["headline"] == json.loads(json.dumps(head)) and saved["errors"][0]["code"] == "item_not_found"
    assert saved["conversation"][1]["role"] == "assistant" and saved["sessions"][0]["model"] == "gpt-realtime"


async def test_a_model_the_price_table_does_not_know_is_reported_unpriced(emulator: Emulator) -> None:
    async with TokenIssuer(TEST_KEY, base_url=emulator.base_url) as issuer:
        session = RealtimeSession(
            IssuerKeys(issuer), {"output_modalities": ["text"]}, base_url=emulator.base_url, transport="websocket"
        )
        async with session:
            session.send_text("hello")
            await session.wait_for("response.done", timeout=20)
    nothing = PriceTable({"gpt-realtime-mini": Rates(1, 1, 1, 1, 1, 1)}, PRICES.read_on, "a partial table")
    report = SessionReport.of(session, nothing)
    assert report.cost.total == 0 and "No price for model 'gpt-realtime'" in report.prices["error"]
    assert "not priced: No price for model" in str(report)
